"""Search spaces: searchspaces/<name>.toml -> Ray Tune distributions / a HyperOpt space.

A space file names one architecture, or several (`archs`, for a conditional space where the
architecture is itself a choice and each keeps its own sub-space, read from its own file):

    arch = "gru"                       # or: archs = ["gru", "cnn1d", ...]
    [fixed]                            # training settings held constant
    loss = "focal"
    [space]                            # training settings searched
    lr = { dist = "loguniform", low = 1e-4, high = 1e-2 }
    [space.model]                      # architecture fields searched
    hidden = { dist = "qrandint", low = 32, high = 128, q = 16 }
    [[points_to_evaluate]]             # known-good configs tried first
    lr = 3e-3
    model = { hidden = 64 }

Distributions: uniform, loguniform (low, high), randint (low, high exclusive), qrandint
(low, high inclusive, q), choice (values). Everything is checked before Ray starts; an
error names the file and line.
"""

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from raytasks.config import ROOT
from raytasks.nets import config_fields, list_models
from raytasks.train import DEFAULTS as TRAIN_DEFAULTS

SPACES_DIR = ROOT / "searchspaces"
DISTS = {"uniform": ("low", "high"), "loguniform": ("low", "high"),
         "randint": ("low", "high"), "qrandint": ("low", "high", "q"), "choice": ("values",)}
NOT_SEARCHABLE = {"arch", "model", "data", "epochs", "workers", "cpus_per_worker", "threads",
                  "placement", "metric", "keep", "max_failures"}


class SpaceError(ValueError):
    pass


@dataclass
class ArchSpace:
    arch: str
    fixed: dict = field(default_factory=dict)
    space: dict = field(default_factory=dict)  # train setting -> spec
    model: dict = field(default_factory=dict)  # model field -> spec
    points: list = field(default_factory=list)


@dataclass
class Space:
    name: str
    archs: dict[str, ArchSpace]

    @property
    def conditional(self) -> bool:
        return len(self.archs) > 1


def space_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" and p.exists():
        return p
    p = SPACES_DIR / f"{name_or_path}.toml"
    if not p.exists():
        known = sorted(q.stem for q in SPACES_DIR.glob("*.toml"))
        raise SpaceError(f"unknown search space {name_or_path!r}; known: {known}")
    return p


def _line(text: str, key: str) -> int:
    """Best line number for a key in the TOML text (1-based; 0 if not found)."""
    for i, line in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*{re.escape(key)}\s*=", line):
            return i
    return 0


def _check_spec(path: Path, text: str, key: str, spec) -> None:
    where = f"{path}:{_line(text, key)}"
    if not isinstance(spec, dict) or "dist" not in spec:
        raise SpaceError(f"{where}: '{key}' must be a table with 'dist' "
                         f"(one of {sorted(DISTS)}); got {spec!r}")
    dist = spec["dist"]
    if dist not in DISTS:
        raise SpaceError(f"{where}: '{key}' has unknown distribution {dist!r}; "
                         f"known: {sorted(DISTS)}")
    missing = [a for a in DISTS[dist] if a not in spec]
    extra = sorted(set(spec) - set(DISTS[dist]) - {"dist"})
    if missing or extra:
        raise SpaceError(f"{where}: '{key}' ({dist}) needs exactly {list(DISTS[dist])}; "
                         f"missing {missing}, unexpected {extra}")
    if dist == "choice":
        if not isinstance(spec["values"], list) or not spec["values"]:
            raise SpaceError(f"{where}: '{key}' choice needs a non-empty list of values")
        return
    low, high = spec["low"], spec["high"]
    if not all(isinstance(v, (int, float)) for v in (low, high)):
        raise SpaceError(f"{where}: '{key}' low/high must be numbers")
    if low > high or (low == high and dist in ("randint",)):
        raise SpaceError(f"{where}: '{key}' has low {low} > high {high}")
    if dist == "loguniform" and low <= 0:
        raise SpaceError(f"{where}: '{key}' loguniform needs low > 0")


def _check_arch(path: Path, text: str, arch: str, data: dict) -> ArchSpace:
    if arch not in list_models():
        raise SpaceError(f"{path}:{_line(text, 'arch')}: unknown architecture {arch!r}; "
                         f"known: {list_models()}")
    fields = config_fields(arch)
    unknown_top = sorted(set(data) - {"arch", "archs", "fixed", "space", "points_to_evaluate"})
    if unknown_top:
        raise SpaceError(f"{path}:{_line(text, unknown_top[0])}: unknown key(s) {unknown_top}")
    fixed = dict(data.get("fixed", {}))
    space = dict(data.get("space", {}))
    model = space.pop("model", {})
    fixed_model = fixed.pop("model", {})
    for key in list(fixed) + list(space):
        if key not in TRAIN_DEFAULTS or (key in space and key in NOT_SEARCHABLE):
            raise SpaceError(f"{path}:{_line(text, key)}: unknown or unsearchable training "
                             f"field '{key}'")
    for key in list(model) + list(fixed_model):
        if key not in fields:
            raise SpaceError(f"{path}:{_line(text, key)}: unknown field '{key}' for "
                             f"architecture {arch}; known: {sorted(fields)}")
    for key, spec in space.items():
        _check_spec(path, text, key, spec)
    for key, spec in model.items():
        _check_spec(path, text, key, spec)
    points = []
    for point in data.get("points_to_evaluate", []):
        pm = point.get("model", {})
        bad = sorted((set(point) - set(space) - {"model"}) | (set(pm) - set(model)))
        if bad:
            raise SpaceError(f"{path}:{_line(text, bad[0])}: points_to_evaluate sets "
                             f"{bad}, which the space does not search")
        points.append(point)
    fixed["model"] = fixed_model
    return ArchSpace(arch, fixed, space, model, points)


def load_space(name_or_path: str, only_archs: list[str] | None = None) -> Space:
    """Read and check a space file (and, for a conditional space, each architecture's)."""
    path = space_path(name_or_path)
    text = path.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpaceError(f"{path}: not valid TOML ({e})") from None
    if "archs" in data:
        archs = data["archs"]
        if only_archs:
            missing = sorted(set(only_archs) - set(archs))
            if missing:
                raise SpaceError(f"{path}: --archs {missing} not in this space's {archs}")
            archs = [a for a in archs if a in only_archs]
        shared_fixed = data.get("fixed", {})
        result = {}
        for arch in archs:
            sub = load_space(arch)
            a = sub.archs[arch]
            a.fixed = {**shared_fixed, **a.fixed, "model": a.fixed.get("model", {})}
            result[arch] = a
        return Space(path.stem, result)
    if "arch" not in data:
        raise SpaceError(f"{path}: needs 'arch = \"...\"' or 'archs = [...]'")
    if only_archs and only_archs != [data["arch"]]:
        raise SpaceError(f"{path}: --archs only applies to a conditional space (archs = [...])")
    return Space(path.stem, {data["arch"]: _check_arch(path, text, data["arch"], data)})


# ---------------------------------------------------------------- to Ray Tune / HyperOpt

def tune_domain(spec: dict):
    from ray import tune

    d = spec["dist"]
    if d == "uniform":
        return tune.uniform(spec["low"], spec["high"])
    if d == "loguniform":
        return tune.loguniform(spec["low"], spec["high"])
    if d == "randint":
        return tune.randint(spec["low"], spec["high"])
    if d == "qrandint":
        return tune.qrandint(spec["low"], spec["high"], spec["q"])
    return tune.choice(spec["values"])


def to_tune(space: Space) -> dict:
    """A Ray Tune param space for a single-architecture space (random/grid searchers)."""
    if space.conditional:
        raise SpaceError(f"{space.name}: a conditional space needs HyperOpt (to_hyperopt)")
    a = next(iter(space.archs.values()))
    return {"arch": a.arch, **{k: tune_domain(s) for k, s in a.space.items()},
            "model": {k: tune_domain(s) for k, s in a.model.items()}}


def _hp(label: str, spec: dict):
    from hyperopt import hp

    d = spec["dist"]
    if d == "uniform":
        return hp.uniform(label, spec["low"], spec["high"])
    if d == "loguniform":
        return hp.loguniform(label, math.log(spec["low"]), math.log(spec["high"]))
    if d == "randint":
        return spec["low"] + hp.randint(label, spec["high"] - spec["low"])
    if d == "qrandint":
        return hp.quniform(label, spec["low"], spec["high"], spec["q"])
    return hp.choice(label, spec["values"])


def to_hyperopt(space: Space) -> dict:
    """A native HyperOpt space: {"trial": hp.choice("arch", [sub-space per arch])}.

    Labels are "<arch>/<field>" so each architecture keeps its own sub-space; HyperOpt only
    samples (and models) the sub-space of the architecture it picked.
    """
    from hyperopt import hp

    options = []
    for arch, a in space.archs.items():
        sub = {"arch": arch}
        sub.update({k: _hp(f"{arch}/{k}", s) for k, s in a.space.items()})
        sub.update({f"model.{k}": _hp(f"{arch}/model.{k}", s) for k, s in a.model.items()})
        options.append(sub)
    return {"trial": hp.choice("arch", options)}


def hyperopt_points(space: Space) -> list[dict]:
    """points_to_evaluate in HyperOpt's own label form (choice values as indices)."""
    names = list(space.archs)
    points = []
    for arch, a in space.archs.items():
        for p in a.points:
            point = {"arch": names.index(arch)}
            for k, v in p.items():
                if k == "model":
                    for mk, mv in v.items():
                        point[f"{arch}/model.{mk}"] = _point_value(a.model[mk], mv)
                else:
                    point[f"{arch}/{k}"] = _point_value(a.space[k], v)
            # HyperOpt needs every active label: unset ones take the middle of their range
            for k, s in a.space.items():
                point.setdefault(f"{arch}/{k}", _middle(s))
            for k, s in a.model.items():
                point.setdefault(f"{arch}/model.{k}", _middle(s))
            points.append(point)
    return points


def _point_value(spec: dict, value):
    if spec["dist"] == "choice":
        return spec["values"].index(value)
    if spec["dist"] == "randint":
        return value - spec["low"]
    return value


def _middle(spec: dict):
    if spec["dist"] == "choice":
        return 0
    if spec["dist"] == "loguniform":
        return math.sqrt(spec["low"] * spec["high"])
    if spec["dist"] == "randint":
        return (spec["high"] - spec["low"]) // 2
    if spec["dist"] == "qrandint":
        q = spec["q"]
        return round((spec["low"] + spec["high"]) / 2 / q) * q
    return (spec["low"] + spec["high"]) / 2


def trial_settings(space: Space, sampled: dict) -> dict:
    """A sampled trial config (flat, from either searcher) -> raytasks.train settings."""
    sampled = dict(sampled.get("trial", sampled))
    arch = sampled.pop("arch")
    a = space.archs[arch]
    settings = {k: v for k, v in a.fixed.items() if k != "model"}
    model = dict(a.fixed.get("model", {}))
    model.update(sampled.pop("model", {}) or {})
    for k, v in sampled.items():
        if k.startswith("model."):
            model[k[len("model."):]] = v
        else:
            settings[k] = v
    for k, s in {**a.space, **{f"model.{m}": sp for m, sp in a.model.items()}}.items():
        if s["dist"] in ("qrandint", "randint"):  # quniform returns floats
            if k.startswith("model."):
                model[k[6:]] = int(model[k[6:]])
            else:
                settings[k] = int(settings[k])
    settings["arch"], settings["model"] = arch, model
    return settings
