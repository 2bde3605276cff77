"""Model zoo. `create_model("resnet1d", **cfg)` builds any registered architecture.

Every model maps a (batch, 187) beat to (batch, 5) logits. Each family's file registers its
architectures with a config dataclass whose defaults train well on a CPU.

The columns of x a model reads: the beat; with `rr`, then its RR_FEATURES; with `template`,
then (after the RR columns, read or not) the beat minus its record's template
(raytasks.data.features.deviations), a second channel of the family's first convolution.
Every layout extends the one before, so one x serves models of all three kinds.
"""

import dataclasses
import math
import numbers

import torch
import torch.nn as nn

from raytasks.data import BEAT_LEN, NUM_CLASSES, RR_FEATURES
from raytasks.nets.registry import REGISTRY, register  # noqa: F401 (register: re-exported)


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


def check_value(key: str, value, kind: type, lo=None, hi=None) -> str | None:
    """What is wrong with `value` as a `kind` in [lo, hi] (None: nothing). Booleans are not
    numbers here, integers are floats, a float is not an integer, strings are not numbers."""
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    elif kind is str:
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        return f"{key} must be {_KIND[kind]}, got {value!r}"
    if kind in (int, float) and not (
        math.isfinite(value) and (lo is None or value >= lo) and (hi is None or value <= hi)
    ):
        return (
            f"{key} must be in [{'-inf' if lo is None else lo}, "
            f"{'inf' if hi is None else hi}], got {value!r}"
        )
    return None


_KIND = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
# architecture fields that are counts yet may be 0, and fields that are probabilities
ZERO_OK = {"stem_channels"}


def check_field(name: str, key: str, value) -> str | None:
    """What is wrong with `value` for architecture `name`'s config field `key`, by the
    field's declared type: counts >= 1, dropout in [0, 1), tuples of counts."""
    declared = {f.name: f.type for f in dataclasses.fields(REGISTRY[name][1])}
    kind = declared[key]
    kind = (
        {"int": int, "float": float, "bool": bool, "str": str, "tuple": tuple}.get(kind, kind)
        if isinstance(kind, str)
        else kind
    )
    where = f"{name}.{key}"
    if key == "in_channels":  # a consequence of `template`, not a choice of its own
        return None if value == 1 else f"{where} is set by the template setting, not by hand"
    if key == "num_classes":
        return None if value == NUM_CLASSES else f"{where} must be {NUM_CLASSES}"
    if kind is tuple:
        if not isinstance(value, (list, tuple)) or not value:
            return f"{where} must be a non-empty list of integers, got {value!r}"
        return next((p for v in value if (p := check_value(where, v, int, 1))), None)
    if key == "dropout":
        return check_value(where, value, float, 0.0, 0.99)
    return check_value(where, value, kind, 0 if key in ZERO_OK else 1)


def check_model(name: str, cfg: dict) -> None:
    """ValueError unless `name` can be built with config `cfg` (types, ranges, and the
    family's own constraints, found by building it: a few milliseconds)."""
    model_config(name, **cfg)
    for key, value in cfg.items():
        problem = check_field(name, key, value)
        if problem:
            raise ValueError(problem)
    try:
        create_model(name, **cfg)
    except Exception as e:
        raise ValueError(f"{name} cannot be built with {cfg}: {e}") from None


def config_fields(name: str) -> dict:
    """Field name -> default, for `name`'s config."""
    return dataclasses.asdict(model_config(name))


def beat_channels(x, template: bool):
    """The columns a family reads: the beat, and with `template` its deviation (x's last
    BEAT_LEN columns, after the RR features)."""
    if not template:
        return x[:, :BEAT_LEN]
    return torch.cat([x[:, :BEAT_LEN], x[:, BEAT_LEN + len(RR_FEATURES) :]], dim=1)


class WithRR(nn.Module):
    """A beat model plus the beat's RR features (x = beat then RR_FEATURES): a small MLP
    reads the log RR features and the beat model's logits and corrects those logits.

    `beat_dropout` (training only) hides the beat model's logits for that share of beats, so
    the RR path must classify on its own too: across patients the beat shape of the few
    training S beats is memorised, while their prematurity is what carries over.
    """

    def __init__(
        self, net: nn.Module, hidden: int = 32, beat_dropout: float = 0.0, template: bool = False
    ):
        super().__init__()
        self.net = net
        self.beat_dropout = beat_dropout
        self.template = template
        self.rr = nn.Sequential(
            nn.Linear(len(RR_FEATURES) + NUM_CLASSES, hidden),
            nn.ReLU(),
            nn.Linear(hidden, NUM_CLASSES),
        )

    def forward(self, x):
        logits = self.net(beat_channels(x, self.template))
        if self.training and self.beat_dropout > 0:
            keep = torch.rand(len(x), 1, device=x.device) >= self.beat_dropout
            logits = logits * keep
        rr = torch.log(x[:, BEAT_LEN : BEAT_LEN + len(RR_FEATURES)].clamp_min(1e-3))
        return logits + self.rr(torch.cat([rr, logits], dim=1))


class WithTemplate(nn.Module):
    """A beat model reading the beat and its deviation from the template (no RR path)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(beat_channels(x, True))


def create_model(
    name: str, rr: bool = False, rr_beat_dropout: float = 0.0, template: bool = False, **cfg
) -> nn.Module:
    """`name`'s model with config `cfg`; with rr, wrapped to also read the RR features; with
    template, its first convolution reads the deviation from the template as a 2nd channel."""
    cfg = model_config(name, **cfg)
    if template:
        cfg = dataclasses.replace(cfg, in_channels=2)
    model = REGISTRY[name][0](cfg)
    if rr:
        return WithRR(model, beat_dropout=rr_beat_dropout, template=template)
    return WithTemplate(model) if template else model


def input_width(rr: bool, template: bool = False) -> int:
    """The columns of x a model reads (see the module's docstring)."""
    if template:
        return 2 * BEAT_LEN + len(RR_FEATURES)
    return BEAT_LEN + (len(RR_FEATURES) if rr else 0)


def list_models() -> list[str]:
    """The architectures `raytasks train` and the search spaces can train (not `trees`,
    which is fitted by `raytasks boost` and only loads and predicts here)."""
    return sorted(n for n, (cls, _) in REGISTRY.items() if getattr(cls, "trainable", True))


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
    trees,
)
