"""The architecture registry: each family's file registers its model class with its config
dataclass (`@register("resnet1d", ResNet1dConfig)`); raytasks.nets builds from it."""

REGISTRY: dict[str, tuple[type, type]] = {}


def register(name: str, config_cls: type):
    def wrap(model_cls):
        REGISTRY[name] = (model_cls, config_cls)
        return model_cls

    return wrap
