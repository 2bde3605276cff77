"""Model zoo. `create_model("resnet1d", **cfg)` builds any registered architecture.

Every model maps a (batch, 187) beat to (batch, 5) logits. Each family's file registers its
architectures with a config dataclass whose defaults train well on a CPU.
"""

import dataclasses

import torch.nn as nn

REGISTRY: dict[str, tuple[type, type]] = {}


def register(name: str, config_cls: type):
    def wrap(model_cls):
        REGISTRY[name] = (model_cls, config_cls)
        return model_cls
    return wrap


def model_config(name: str, **cfg):
    """The config dataclass of `name` with `cfg` applied; unknown fields are refused."""
    if name not in REGISTRY:
        raise ValueError(f"unknown architecture {name!r}; known: {sorted(REGISTRY)}")
    config_cls = REGISTRY[name][1]
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"{name}: unknown config field(s) {unknown}; known: {sorted(known)}")
    return config_cls(**cfg)


def config_fields(name: str) -> dict:
    """Field name -> default, for `name`'s config."""
    return dataclasses.asdict(model_config(name))


def create_model(name: str, **cfg) -> nn.Module:
    cfg = model_config(name, **cfg)
    return REGISTRY[name][0](cfg)


def list_models() -> list[str]:
    return sorted(REGISTRY)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# importing the families fills the registry
from raytasks.nets import (  # noqa: E402,F401
    cnn1d,
    cnn2d,
    inception1d,
    recurrent,
    resnet1d,
    transformer,
)
