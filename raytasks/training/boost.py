"""Patient-adaptive gradient boosting: record features (raytasks.data.features) into a
HistGradientBoostingClassifier, chosen by leave-records-out cross-validation, shipped as a
`trees` model (raytasks.nets.trees) that evaluates like any other.

    raytasks boost --groups beat,rr,pace,template,rhythm --rhythm-beats 33 --max-iter 200 \
        --learning-rate 0.05 --l2 1.0 --min-leaf 50 --tag cv-rhythm33   # boost-inter's settings

Trained on train + valid of the scheme (for `inter`: all of DS1); the test split (DS2) is
never read. Cross-validation folds hold out whole records, so every figure it gives is a
patient-level one; its out-of-fold logits also fit the recall-first offsets.

The same trees are searched by Ray Tune (searchspaces/boost.toml, `raytasks tune --space
boost`): a trial is a `BoostSettings`, and `search_trial` reports its leave-records-out CV one
fold per Tune iteration, so ASHA drops a weak config after its first folds as it drops a
network after its first epochs.
"""

import dataclasses
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from raytasks.core.metrics import OBJECTIVE, compute_metrics, confusion, field_metrics, fit_offsets
from raytasks.data import NUM_CLASSES, RHYTHM_BEATS, scheme_path
from raytasks.models import saved
from raytasks.training.settings import TrainConfigError, setting

# the floor: 300 iterations, class weights ~ count^-0.5
HGB = {
    "max_iter": 300,
    "learning_rate": 0.1,
    "max_leaf_nodes": 31,
    "l2_regularization": 0.0,
    "early_stopping": False,
    "weight_power": 0.5,
    "record_power": 0.0,
}


ARCH = "boost"  # a search space's `arch` for these trees (the saved model's arch is `trees`)
# a searchable HistGradientBoosting field: (type, lo, hi)
HGB_FIELDS = {
    "max_iter": (int, 1, 5000),
    "learning_rate": (float, 1e-3, 1.0),
    "max_leaf_nodes": (int, 4, 255),
    "l2_regularization": (float, 0.0, 100.0),
    "min_samples_leaf": (int, 1, 5000),
    "max_features": (float, 0.05, 1.0),
}


@dataclass(frozen=True)
class BoostSettings:
    """One boosted-trees fit: the record features, the class/record weights, the trees (in
    `model`, HGB_FIELDS over HGB's defaults) and the CV that scores it."""

    arch: str = setting(ARCH, "the search space's name for these trees", choices=(ARCH,))
    model: dict = setting({}, "HistGradientBoosting fields (HGB_FIELDS)")  # noqa: RUF009 (a field(default_factory=dict))
    data: str = setting("data/processed/inter", "a built scheme: <processed>/<scheme>")
    groups: str = setting(
        "beat,rr,pace,template",
        "record feature groups (raytasks.data.features.GROUPS), comma-separated",
    )
    step: int = setting(3, "every STEP-th sample of the beat", limits=(int, 1, 20))
    rhythm_beats: int = setting(
        RHYTHM_BEATS, "beats the `rhythm` group looks across (odd: centred)", limits=(int, 3, 255)
    )
    folds: int = setting(
        5, "leave-records-out CV folds (0: none; a search needs 2 or more)", limits=(int, 0, 10)
    )
    early_stopping: bool = setting(
        False,
        "scikit-learn's: stop when 10% of the beats held out stop improving",
        limits=(bool, None, None),
    )
    weight_power: float = setting(0.5, "class weights ~ count^-power", limits=(float, 0.0, 1.0))
    record_power: float = setting(
        0.0, "record weights ~ (record's beats)^-power", limits=(float, 0.0, 1.0)
    )
    seed: int = setting(0, "seed of the folds and the trees", limits=(int, None, None))
    metric: str = setting(OBJECTIVE, "the CV metric reported to Tune", choices="metric")

    @classmethod
    def from_dict(cls, values: dict) -> "BoostSettings":
        unknown = sorted(set(values) - set(BOOST_NAMES))
        if unknown:
            raise TrainConfigError(f"unknown boost setting(s) {unknown}")
        settings = cls(**{**values, "model": dict(values.get("model") or {})})
        for key in BOOST_NAMES:
            problem = check_boost_setting(key, getattr(settings, key))
            if problem:
                raise TrainConfigError(problem)
        return settings

    @property
    def params(self) -> dict:
        """The record-feature parameters (model.json `record_features`)."""
        groups = [g.strip() for g in self.groups.split(",")]
        window = {"rhythm_beats": self.rhythm_beats} if "rhythm" in groups else {}
        return {"step": self.step, "groups": groups} | window

    @property
    def hgb(self) -> dict:
        """What `fit` takes: HGB's settings and the two weight powers."""
        return (
            HGB
            | self.model
            | {
                "weight_power": self.weight_power,
                "record_power": self.record_power,
            }
        )


BOOST_NAMES = tuple(f.name for f in dataclasses.fields(BoostSettings))


def check_boost_setting(key: str, value) -> str | None:
    """What is wrong with `value` for boost setting `key` (None: nothing)."""
    from raytasks.data.features import GROUPS
    from raytasks.nets import check_value
    from raytasks.training.settings import check_setting

    if key == "model":
        if not isinstance(value, dict):
            return f"model must be a table of {sorted(HGB_FIELDS)}, got {value!r}"
        for k, v in value.items():
            problem = check_hgb_field(k, v)
            if problem:
                return problem
        return None
    if key == "groups":
        names = [g.strip() for g in value.split(",")] if isinstance(value, str) else None
        if not names or not set(names) <= set(GROUPS):
            return f"groups must be comma-separated names of {list(GROUPS)}, got {value!r}"
        return None
    meta = {f.name: f.metadata for f in dataclasses.fields(BoostSettings)}[key]
    if key in ("metric", "data"):
        return check_setting(key, value)
    if meta["choices"]:
        return None if value in meta["choices"] else f"{key} must be one of {meta['choices']}"
    return check_value(key, value, *meta["limits"]) if meta["limits"] else None


def check_hgb_field(key: str, value) -> str | None:
    from raytasks.nets import check_value

    if key not in HGB_FIELDS:
        return f"unknown field '{key}' for boost; known: {sorted(HGB_FIELDS)}"
    return check_value(f"boost.{key}", value, *HGB_FIELDS[key])


def load(processed: Path, scheme: str, splits=("train", "valid")):
    """(x beat + RR, y, context with record/sample) of the given splits of a built scheme."""
    return load_dir(scheme_path(processed, scheme), splits)


def load_dir(data_dir: Path, splits=("train", "valid")):
    from raytasks.data.stream import read_split, split_files

    files = [f for s in splits for f in split_files(Path(data_dir), s)]
    arrays = read_split(files, rr=True)
    # same files, same order: row i of context is beat i of x
    context = pq.ParquetDataset(files).read(columns=["record", "sample"]).to_pandas()
    return np.array(arrays["x"]), arrays["y"], context


def fit(features: np.ndarray, y: np.ndarray, settings: dict, seed: int = 0, records=None):
    """HGB with class weights ~ count^-weight_power and, with `record_power`, record weights
    ~ (record's beats)^-record_power: a long, regular recording then weighs less against the
    other patients (a group-balanced loss over records)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    opts = {k: v for k, v in settings.items() if k not in ("weight_power", "record_power")}
    counts = np.bincount(y, minlength=NUM_CLASSES).astype(np.float64)
    weight = np.maximum(counts, 1)[y] ** -settings["weight_power"]
    if settings.get("record_power") and records is not None:
        _, inverse, per_record = np.unique(records, return_inverse=True, return_counts=True)
        weight = weight * per_record[inverse].astype(np.float64) ** -settings["record_power"]
    est = HistGradientBoostingClassifier(random_state=seed, **opts)
    return est.fit(features, y, sample_weight=weight / weight.mean())


def raw_logits(est, features: np.ndarray) -> np.ndarray:
    """(n, 5) raw scores; a class the fold never saw gets a score it never wins."""
    from raytasks.nets.trees import ABSENT

    out = np.full((len(features), NUM_CLASSES), ABSENT)
    out[:, est.classes_] = est._raw_predict(features).reshape(len(features), -1)
    return out


def fold_logits(features, y, records, settings: dict, folds: int = 5, seed: int = 0):
    """(held-out rows, their logits) per fold, whole records held out (GroupKFold,
    stratified by class)."""
    from sklearn.model_selection import StratifiedGroupKFold

    split = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train_idx, test_idx in split.split(features, y, groups=records):
        est = fit(features[train_idx], y[train_idx], settings, seed, records[train_idx])
        yield test_idx, raw_logits(est, features[test_idx])


def cross_validate(features, y, records, settings: dict, folds: int = 5, seed: int = 0):
    """Out-of-fold logits with whole records held out."""
    oof = np.zeros((len(y), NUM_CLASSES))
    for test_idx, logits in fold_logits(features, y, records, settings, folds, seed):
        oof[test_idx] = logits
    return oof


def features_of(s: BoostSettings):
    """(features, y, records) of the settings' train + valid splits."""
    from raytasks.data.features import record_features

    x, y, ctx = load_dir(Path(s.data))
    return record_features(x, ctx, s.params), y, ctx["record"].to_numpy()


def search_trial(s: BoostSettings, report) -> None:
    """A Tune trial: the CV one fold per report(metrics, checkpoint dir or None), each with
    the metrics of every beat held out so far; the last carries the out-of-fold logits (the
    export fits the offsets on them), so only a trial that ran every fold can be exported."""
    features, y, records = features_of(s)
    oof = np.zeros((len(y), NUM_CLASSES))
    seen = np.zeros(len(y), dtype=bool)
    folds = fold_logits(features, y, records, s.hgb, s.folds, s.seed)
    for fold, (test_idx, logits) in enumerate(folds, start=1):
        oof[test_idx], seen[test_idx] = logits, True
        metrics = compute_metrics(y[seen], oof[seen].argmax(axis=1)) | {
            "epoch": fold,
            "cv_beats": int(seen.sum()),
        }
        if fold < s.folds:
            report(metrics, None)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            np.save(Path(tmp) / "oof.npy", oof)
            (Path(tmp) / "settings.json").write_text(json.dumps(dataclasses.asdict(s)))
            report(metrics, tmp)


def export_trial(oof_dir: Path, s: BoostSettings, out_dir: Path, source: str) -> dict:
    """A searched trial's config fitted on all of train + valid, exported like `raytasks
    boost` does, its offsets fitted on the trial's own out-of-fold logits."""
    features, y, records = features_of(s)
    oof = np.load(Path(oof_dir) / "oof.npy")
    est = fit(features, y, s.hgb, s.seed, records)
    return export(est, s.params, s.hgb, out_dir, oof, y, Path(s.data).name, source)


def export(
    est,
    params: dict,
    settings: dict,
    out_dir: Path,
    oof: np.ndarray,
    y: np.ndarray,
    scheme: str,
    source: str,
) -> dict:
    """model.pt (the trees as tensors) + model.json, offsets fitted on the out-of-fold logits."""
    from raytasks.nets.trees import from_sklearn

    model = from_sklearn(est)
    offsets = fit_offsets(oof, y) if oof is not None else np.zeros(NUM_CLASSES)
    pred = None if oof is None else oof.argmax(axis=1)  # no CV: no figures, no offsets
    info = saved.trees_info(
        Path(out_dir).name,
        model,
        params,
        settings,
        scheme,
        {} if pred is None else compute_metrics(y, pred),
        {} if pred is None else field_metrics(confusion(y, pred)),
        offsets,
        source,
    )
    saved.save(out_dir, info, model.state_dict())
    return info


def train_and_export(s: BoostSettings, out_dir: Path, log=print) -> dict:
    """Cross-validate by records (s.folds; 0: no CV, so no CV figures and no offsets), fit
    on all of train + valid, export to out_dir."""
    t0 = time.perf_counter()
    features, y, records = features_of(s)
    scheme = Path(s.data).name
    log(
        f"{scheme} train+valid: {len(y)} beats, {len(set(records))} records, "
        f"{features.shape[1]} features"
    )
    oof = None
    if s.folds > 1:
        oof = cross_validate(features, y, records, s.hgb, s.folds, s.seed)
        cv = field_metrics(confusion(y, oof.argmax(axis=1)))
        log(
            f"{s.folds}-fold leave-records-out CV: "
            + ", ".join(
                f"{k} {cv[k]:.3f}"
                for k in ("accuracy", "S F1", "V F1", "F F1", "macro F1 (N,S,V,F)")
            )
        )
    est = fit(features, y, s.hgb, s.seed, records)
    source = f"raytasks boost on {s.data} (train+valid), {time.perf_counter() - t0:.0f} s"
    return export(est, s.params, s.hgb, out_dir, oof, y, scheme, source)
