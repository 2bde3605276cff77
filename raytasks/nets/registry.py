"""The architecture registry: each family's file registers its model class with its config
dataclass (`@register("resnet1d", ResNet1dConfig)`); raytasks.nets builds from it."""

REGISTRY: dict[str, tuple[type, type]] = {}


def register(name: str, config_cls: type):
    def wrap(model_cls):
        REGISTRY[name] = (model_cls, config_cls)
        return model_cls

    return wrap


def channels(x):
    """(batch, C x 187) -> (batch, C, 187): the beat, then (a template model's) its deviation
    from the record's template, as the channels of a family's first convolution."""
    return x.reshape(len(x), -1, 187)
