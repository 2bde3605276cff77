"""Patient-adaptive gradient boosting: record features (raytasks.records) into a
HistGradientBoostingClassifier, chosen by leave-records-out cross-validation, shipped as a
`trees` model (raytasks.nets.trees) that evaluates like any other.

    raytasks boost --groups beat,rr,pace,rr_record,template,shape --tag boost-inter

Trained on train + valid of the scheme (for `inter`: all of DS1); the test split (DS2) is
never read. Cross-validation folds hold out whole records, so every figure it gives is a
patient-level one; its out-of-fold logits also fit the recall-first offsets.
"""

import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from raytasks import saved
from raytasks.data import NUM_CLASSES, scheme_path
from raytasks.metrics import compute_metrics, confusion, field_metrics, fit_offsets

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


def load(processed: Path, scheme: str, splits=("train", "valid")):
    """(x beat + RR, y, context with record/sample) of the given splits of a built scheme."""
    from raytasks.data.stream import read_split, split_files

    files = [f for s in splits for f in split_files(scheme_path(processed, scheme), s)]
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


def cross_validate(features, y, records, settings: dict, folds: int = 5, seed: int = 0):
    """Out-of-fold logits with whole records held out (GroupKFold, stratified by class)."""
    from sklearn.model_selection import StratifiedGroupKFold

    oof = np.zeros((len(y), NUM_CLASSES))
    split = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train_idx, test_idx in split.split(features, y, groups=records):
        est = fit(features[train_idx], y[train_idx], settings, seed, records[train_idx])
        oof[test_idx] = raw_logits(est, features[test_idx])
    return oof


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


def train_and_export(
    processed: Path,
    scheme: str,
    params: dict,
    settings: dict,
    out_dir: Path,
    folds: int = 5,
    seed: int = 0,
    log=print,
) -> dict:
    """Cross-validate by records, fit on all of train + valid, export to out_dir."""
    from raytasks.records import record_features

    t0 = time.perf_counter()
    x, y, ctx = load(processed, scheme)
    features = record_features(x, ctx, params)
    records = ctx["record"].to_numpy()
    log(
        f"{scheme} train+valid: {len(y)} beats, {len(set(records))} records, "
        f"{features.shape[1]} features"
    )
    oof = None
    if folds > 1:  # 0: no CV (no offsets, no CV figures): only the fit
        oof = cross_validate(features, y, records, settings, folds, seed)
        cv = field_metrics(confusion(y, oof.argmax(axis=1)))
        log(
            f"{folds}-fold leave-records-out CV: "
            + ", ".join(
                f"{k} {cv[k]:.3f}"
                for k in ("accuracy", "S F1", "V F1", "F F1", "macro F1 (N,S,V,F)")
            )
        )
    est = fit(features, y, settings, seed, records)
    source = (
        f"raytasks boost on {scheme_path(processed, scheme)} (train+valid), "
        f"{time.perf_counter() - t0:.0f} s"
    )
    return export(est, params, settings, out_dir, oof, y, scheme, source)
