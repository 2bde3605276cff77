"""Search spaces: searchspaces/<name>.toml -> Ray Tune distributions / a HyperOpt space.

A space file names one architecture, or several (`archs`, for a conditional space where the
architecture is itself a choice and each keeps its own sub-space, read from its own file;
its own [fixed] and [space] hold for every arch):

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

`arch = "boost"` is the boosted trees of raytasks.training.boost: its settings are `BoostSettings`
fields and its `model` fields HistGradientBoosting's (boost.HGB_FIELDS); it is a space of
its own, not one of a conditional space's `archs`.
"""

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from raytasks.core.config import ROOT
from raytasks.core.errors import RaytasksError
from raytasks.nets import check_field, check_model, config_fields, list_models
from raytasks.training import boost
from raytasks.training.settings import NAMES as TRAIN_SETTINGS
from raytasks.training.settings import check_setting

SPACES_DIR = ROOT / "searchspaces"
DISTS = {
    "uniform": ("low", "high"),
    "loguniform": ("low", "high"),
    "randint": ("low", "high"),
    "qrandint": ("low", "high", "q"),
    "choice": ("values",),
}
NOT_SEARCHABLE = {
    "arch",
    "model",
    "data",
    "epochs",
    "workers",
    "cpus_per_worker",
    "threads",
    "placement",
    "metric",
    "keep",
    "max_failures",
}


class SpaceError(RaytasksError):
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

    @property
    def boost(self) -> bool:  # boosted trees, scored by CV folds (raytasks.training.boost)
        return boost.ARCH in self.archs

    def may_set(self, key: str) -> bool:
        """Whether some trial may run with boolean setting `key` on (fixed or searched)."""
        return any(
            a.fixed.get(key) is True or True in a.space.get(key, {}).get("values", [])
            for a in self.archs.values()
        )


def setting_names(arch: str) -> tuple:
    return boost.BOOST_NAMES if arch == boost.ARCH else TRAIN_SETTINGS


def setting_problem(arch: str, key: str, value) -> str | None:
    if arch == boost.ARCH:
        return boost.check_boost_setting(key, value)
    return check_setting(key, value)


def space_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" and p.exists():
        return p
    p = SPACES_DIR / f"{name_or_path}.toml"
    if not p.exists():
        known = sorted(q.stem for q in SPACES_DIR.glob("*.toml"))
        raise SpaceError(f"unknown search space {name_or_path!r}; known: {known}")
    return p


def key_lines(text: str) -> dict[tuple, int]:
    """Line of every key by its place in the file: ("space", "lr"), ("space", "model",
    "hidden"), ("points_to_evaluate", 0, "model", "hidden"), ... (keys of inline tables too),
    so an error points at the key at fault, not at the first key of that name."""
    where, section, arrays = {}, (), {}
    for n, line in enumerate(text.splitlines(), 1):
        s = line.split("#")[0].strip()
        if m := re.fullmatch(r"\[\[\s*([\w.-]+)\s*\]\]", s):
            arrays[m.group(1)] = arrays.get(m.group(1), -1) + 1
            section = (m.group(1), arrays[m.group(1)])
        elif m := re.fullmatch(r"\[\s*([\w.-]+)\s*\]", s):
            head, *rest = m.group(1).split(".")
            section = (head, arrays[head], *rest) if head in arrays else (head, *rest)
        elif m := re.match(r"([\w-]+)\s*=\s*(.*)", s):
            where.setdefault((*section, m.group(1)), n)
            for inner in re.findall(r"([\w-]+)\s*=", m.group(2)):
                where.setdefault((*section, m.group(1), inner), n)
    return where


@dataclass
class Where:
    """A space file and its key lines: `at(*place)` is "file:line" for an error."""

    path: Path
    lines: dict

    def at(self, *place) -> str:
        line = self.lines.get(tuple(place))
        if line is None:  # fall back on the first key of that name anywhere
            line = min((n for k, n in self.lines.items() if k[-1:] == place[-1:]), default=0)
        return f"{self.path}:{line}"


def _is_num(v, kind=float) -> bool:
    return (
        isinstance(v, int if kind is int else (int, float))
        and not isinstance(v, bool)
        and math.isfinite(v)
    )


def _check_spec(w: Where, place: tuple, spec) -> None:
    """The distribution itself: its name, arguments, their types and order."""
    key = place[-1]
    where = w.at(*place)
    if not isinstance(spec, dict) or "dist" not in spec:
        raise SpaceError(
            f"{where}: '{key}' must be a table with 'dist' (one of {sorted(DISTS)}); got {spec!r}"
        )
    dist = spec["dist"]
    if not isinstance(dist, str) or dist not in DISTS:
        raise SpaceError(
            f"{where}: '{key}' has unknown distribution {dist!r}; known: {sorted(DISTS)}"
        )
    missing = [a for a in DISTS[dist] if a not in spec]
    extra = sorted(set(spec) - set(DISTS[dist]) - {"dist"})
    if missing or extra:
        raise SpaceError(
            f"{where}: '{key}' ({dist}) needs exactly {list(DISTS[dist])}; "
            f"missing {missing}, unexpected {extra}"
        )
    if dist == "choice":
        if not isinstance(spec["values"], list) or not spec["values"]:
            raise SpaceError(f"{where}: '{key}' choice needs a non-empty list of values")
        return
    kind = int if dist in ("randint", "qrandint") else float
    low, high = spec["low"], spec["high"]
    if not (_is_num(low, kind) and _is_num(high, kind)):
        raise SpaceError(
            f"{where}: '{key}' low/high must be "
            f"{'integers' if kind is int else 'numbers'}; got {low!r}, {high!r}"
        )
    if low > high or (low == high and dist in ("randint",)):
        raise SpaceError(f"{where}: '{key}' has low {low} > high {high}")
    if dist == "loguniform" and low <= 0:
        raise SpaceError(f"{where}: '{key}' loguniform needs low > 0")
    if dist == "qrandint" and not (_is_num(spec["q"], int) and spec["q"] >= 1):
        raise SpaceError(f"{where}: '{key}' qrandint needs an integer q >= 1, got {spec['q']!r}")


def spec_values(spec: dict) -> list:
    """The values that decide whether a distribution fits a setting: every choice, or the
    extremes it can draw (qrandint rounds to multiples of q)."""
    d = spec["dist"]
    if d == "choice":
        return list(spec["values"])
    if d == "randint":
        return [spec["low"], spec["high"] - 1]
    if d == "qrandint":
        q = spec["q"]
        return [round(spec["low"] / q) * q, round(spec["high"] / q) * q]
    return [float(spec["low"]), float(spec["high"])]


def _value_problem(arch: str, key: str, value, is_model: bool, fixed_model: dict):
    if not is_model:
        return setting_problem(arch, key, value)
    if arch == boost.ARCH:
        return boost.check_hgb_field(key, value)
    problem = check_field(arch, key, value)
    if problem is None:
        try:
            check_model(arch, {**fixed_model, key: value})
        except (ValueError, TypeError) as e:
            problem = str(e)
    return problem


def _check_values(
    w: Where, place: tuple, arch: str, values: list, is_model: bool, fixed_model: dict
) -> None:
    for value in values:
        problem = _value_problem(arch, place[-1], value, is_model, fixed_model)
        if problem:
            raise SpaceError(f"{w.at(*place)}: {problem}")


def _table(w: Where, data: dict, key: str, place: tuple = ()) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise SpaceError(f"{w.at(*place, key)}: '{key}' must be a table, got {value!r}")
    return dict(value)


def _check_point(w: Where, i: int, point, a: ArchSpace) -> None:
    """A known-good config: only searched keys, each value one the space can draw."""
    if not isinstance(point, dict) or not isinstance(point.get("model", {}), dict):
        raise SpaceError(f"{w.at('points_to_evaluate')}: each point must be a table")
    pm = point.get("model", {})
    bad = sorted((set(point) - set(a.space) - {"model"}) | (set(pm) - set(a.model)))
    if bad:
        place = (
            ("points_to_evaluate", i, "model", bad[0])
            if bad[0] in pm
            else ("points_to_evaluate", i, bad[0])
        )
        raise SpaceError(
            f"{w.at(*place)}: points_to_evaluate sets {bad}, which the space does not search"
        )
    items = [
        (k, v, a.space[k], ("points_to_evaluate", i, k)) for k, v in point.items() if k != "model"
    ]
    items += [(k, v, a.model[k], ("points_to_evaluate", i, "model", k)) for k, v in pm.items()]
    for key, value, spec, place in items:
        if spec["dist"] == "choice":
            ok = value in spec["values"] and type(value) in {type(c) for c in spec["values"]}
        else:
            ok = (
                _is_num(value, int if spec["dist"] in ("randint", "qrandint") else float)
                and spec["low"] <= value <= spec["high"]
            )
        if not ok:
            drawn = (
                spec["values"] if spec["dist"] == "choice" else (f"[{spec['low']}, {spec['high']}]")
            )
            raise SpaceError(
                f"{w.at(*place)}: points_to_evaluate {key} = {value!r} is not "
                f"one the space can draw ({drawn})"
            )


def _check_keys(
    w: Where, arch: str, fixed: dict, space: dict, model: dict, fixed_model: dict
) -> None:
    """Every key a training setting (searchable where searched) or a field of the arch."""
    fields = boost.HGB_FIELDS if arch == boost.ARCH else config_fields(arch)
    for section, keys in (("fixed", fixed), ("space", space)):
        for key in keys:
            if key not in setting_names(arch) or (section == "space" and key in NOT_SEARCHABLE):
                raise SpaceError(
                    f"{w.at(section, key)}: unknown or unsearchable training field '{key}'"
                )
    for section, keys in (("space", model), ("fixed", fixed_model)):
        for key in keys:
            if key not in fields:
                raise SpaceError(
                    f"{w.at(section, 'model', key)}: unknown field '{key}' for "
                    f"architecture {arch}; known: {sorted(fields)}"
                )


def _check_arch(path: Path, text: str, arch: str, data: dict) -> ArchSpace:
    w = Where(path, key_lines(text))
    if not isinstance(arch, str) or arch not in [*list_models(), boost.ARCH]:
        raise SpaceError(
            f"{w.at('arch')}: unknown architecture {arch!r}; known: {[*list_models(), boost.ARCH]}"
        )
    unknown_top = sorted(set(data) - {"arch", "archs", "fixed", "space", "points_to_evaluate"})
    if unknown_top:
        raise SpaceError(f"{w.at(unknown_top[0])}: unknown key(s) {unknown_top}")
    fixed, space = _table(w, data, "fixed"), _table(w, data, "space")
    model, fixed_model = (
        _table(w, space, "model", ("space",)),
        _table(w, fixed, "model", ("fixed",)),
    )
    space.pop("model", None)
    fixed.pop("model", None)
    _check_keys(w, arch, fixed, space, model, fixed_model)
    for key, value in fixed.items():
        _check_values(w, ("fixed", key), arch, [value], False, {})
    for key, value in fixed_model.items():
        _check_values(w, ("fixed", "model", key), arch, [value], True, {})
    for key, spec in space.items():
        _check_spec(w, ("space", key), spec)
        _check_values(w, ("space", key), arch, spec_values(spec), False, {})
    for key, spec in model.items():
        _check_spec(w, ("space", "model", key), spec)
        _check_values(w, ("space", "model", key), arch, spec_values(spec), True, fixed_model)
    a = ArchSpace(arch, fixed, space, model, [])
    points = data.get("points_to_evaluate", [])
    if not isinstance(points, list):
        raise SpaceError(
            f"{w.at('points_to_evaluate')}: points_to_evaluate must be "
            f"[[points_to_evaluate]] tables"
        )
    for i, point in enumerate(points):
        _check_point(w, i, point, a)
        a.points.append(point)
    a.fixed["model"] = fixed_model
    return a


def _check_archs(path: Path, text: str, data: dict, only_archs) -> list[str]:
    """`archs` of a conditional space: a list of known space names (each arch's file)."""
    w = Where(path, key_lines(text))
    archs = data["archs"]
    if not isinstance(archs, list) or not archs or not all(isinstance(a, str) for a in archs):
        raise SpaceError(
            f"{w.at('archs')}: archs must be a list of architecture names, "
            f'e.g. ["gru", "cnn1d"]; got {archs!r}'
        )
    if boost.ARCH in archs:
        raise SpaceError(
            f"{w.at('archs')}: boost is searched by a space of its own (--space boost), "
            f"scored by CV folds, not as one of a conditional space's archs"
        )
    unknown = [a for a in archs if a not in list_models()]
    if unknown:
        raise SpaceError(
            f"{w.at('archs')}: unknown architecture(s) {unknown}; known: {list_models()}"
        )
    shared = _table(w, data, "fixed")
    for key, value in shared.items():
        problem = (
            f"unknown or unsearchable training field '{key}'"
            if key not in TRAIN_SETTINGS or key == "model"
            else check_setting(key, value)
        )
        if problem:
            raise SpaceError(f"{w.at('fixed', key)}: {problem}")
    for key, spec in _table(w, data, "space").items():  # searched alike for every arch
        if key not in TRAIN_SETTINGS or key in NOT_SEARCHABLE or key == "model":
            raise SpaceError(f"{w.at('space', key)}: unknown or unsearchable training field")
        _check_spec(w, ("space", key), spec)
        for arch in archs:
            _check_values(w, ("space", key), arch, spec_values(spec), False, {})
    if only_archs:
        missing = sorted(set(only_archs) - set(archs))
        if missing:
            raise SpaceError(f"{path}: --archs {missing} not in this space's {archs}")
        archs = [a for a in archs if a in only_archs]
    return archs


def load_space(name_or_path: str, only_archs: list[str] | None = None) -> Space:
    """Read and check a space file (and, for a conditional space, each architecture's)."""
    path = space_path(name_or_path)
    text = path.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpaceError(f"{path}: not valid TOML ({e})") from None
    if "archs" in data:
        shared_fixed = _table(Where(path, {}), data, "fixed")
        shared_space = _table(Where(path, {}), data, "space")
        result = {}
        for arch in _check_archs(path, text, data, only_archs):
            sub = load_space(arch)
            a = sub.archs[arch]
            a.fixed = {**shared_fixed, **a.fixed, "model": a.fixed.get("model", {})}
            a.space = {**a.space, **shared_space}
            for key in shared_space:  # the shared search wins over a fixed value
                a.fixed.pop(key, None)
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
    return {
        "arch": a.arch,
        **{k: tune_domain(s) for k, s in a.space.items()},
        "model": {k: tune_domain(s) for k, s in a.model.items()},
    }


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
    """A sampled trial config (flat, from either searcher) -> raytasks.training.train settings."""
    sampled = dict(sampled.get("trial", sampled))
    arch = sampled.pop("arch")
    a = space.archs[arch]
    settings = {k: v for k, v in a.fixed.items() if k != "model"}
    model = dict(a.fixed.get("model", {}))
    model.update(sampled.pop("model", {}) or {})
    for k, v in sampled.items():
        if k.startswith("model."):
            model[k[len("model.") :]] = v
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
