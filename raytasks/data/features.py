"""Patient-adaptive features: each beat compared with the rest of its own recording.

Across patients a beat's shape and rate mean little on their own (one patient's normal beat
looks like another's ectopic one); against the same patient's usual beat and usual rhythm
they mean a lot. Everything here is computed without labels from the recording being
classified, so it is as available on a new patient as the beat itself:

- `beat`: the beat itself (every `step`-th sample); `rr`: the 4 built RR columns;
- `pace`: the local RR over the record's mean local RR (is the patient fast right now?);
- `rr_record`: the previous and next RR over the record's mean RR (the patient's own pace);
- `template`: the beat minus its record's median beat (the patient's template) and its L1/L2
  size; `shape`: its largest deviations (value, place) and its correlation with the template;
- `amplitude`: the beat rescaled by the template's own range and baseline (per-record
  amplitude normalisation on top of the build's per-window min-max);
- `neighbours`: the previous and next beats' RR ratios and template distances (a premature
  beat is followed by a long pause; a run of ectopic beats differs from one).

`record_features(x, context, params)` maps x (beat then RR_FEATURES, as evaluation loads
it) and context (each row's `record` and `sample`) to a float32 feature matrix; `params`
names the groups and the subsampling step, and is stored in the model's model.json.
"""

import numpy as np
import pandas as pd

from raytasks.data import BEAT_LEN, RR_FEATURES, DataError

GROUPS = ("beat", "rr", "pace", "rr_record", "template", "shape", "amplitude", "neighbours")
# the HistGradientBoosting floor, its two feature rows (bench/inter_floor.py)
FLOOR_ROWS = {
    "beat + RR": {"step": 3, "groups": ["beat", "rr"]},
    "+ record template": {"step": 3, "groups": ["beat", "rr", "template", "pace"]},
}


def record_slices(context: pd.DataFrame) -> list[np.ndarray]:
    """Row indices of each record, in time order (by sample)."""
    if not {"record", "sample"} <= set(context.columns):
        raise DataError("record features need each beat's `record` and `sample`")
    order = np.lexsort((context["sample"].to_numpy(), context["record"].to_numpy()))
    rec = context["record"].to_numpy()[order]
    cuts = np.flatnonzero(rec[1:] != rec[:-1]) + 1
    return np.split(order, cuts)


def rr_seconds(rr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Previous and next RR in seconds, from the built columns (ratios to the local mean)."""
    local = rr[:, RR_FEATURES.index("rr_local")]
    return rr[:, RR_FEATURES.index("rr_pre")] * local, rr[:, RR_FEATURES.index("rr_post")] * local


def one_record(beats: np.ndarray, rr: np.ndarray, params: dict) -> dict[str, np.ndarray]:
    """Feature groups of one record's beats (time order)."""
    step = params["step"]
    out = {"beat": beats[:, ::step]}
    pre, post = rr_seconds(rr)
    local = rr[:, RR_FEATURES.index("rr_local")]
    mean_rr = max(pre.mean(), 1e-3)
    out["rr"] = rr
    out["pace"] = (local / max(local.mean(), 1e-3))[:, None]
    out["rr_record"] = np.column_stack([pre / mean_rr, post / mean_rr])
    template = np.median(beats, axis=0)
    diff = beats - template
    size = np.column_stack([np.abs(diff).mean(axis=1), np.sqrt((diff**2).mean(axis=1))])
    out["template"] = np.column_stack([diff[:, ::step], size])
    centred = beats - beats.mean(axis=1, keepdims=True)
    t = template - template.mean()
    corr = centred @ t / np.maximum(np.linalg.norm(centred, axis=1) * np.linalg.norm(t), 1e-6)
    out["shape"] = np.column_stack(
        [corr, diff.max(axis=1), diff.min(axis=1), diff.argmax(axis=1), diff.argmin(axis=1)]
    )
    if "amplitude" in params["groups"]:
        span = max(float(np.ptp(template)), 1e-3)
        out["amplitude"] = ((beats - np.median(template)) / span)[:, ::step]
    if "neighbours" in params["groups"]:
        ratios = np.column_stack([pre / mean_rr, post / mean_rr, size[:, 1]])
        prev = np.vstack([ratios[:1], ratios[:-1]])
        nxt = np.vstack([ratios[1:], ratios[-1:]])
        out["neighbours"] = np.column_stack([prev, nxt])
    return out


def record_features(x: np.ndarray, context: pd.DataFrame, params: dict) -> np.ndarray:
    """(n, features) float32 for beats x (beat + RR_FEATURES) of the records in context."""
    if x.shape[1] < BEAT_LEN + len(RR_FEATURES):
        raise DataError("record features need the RR-interval columns of built shards")
    unknown = sorted(set(params["groups"]) - set(GROUPS))
    if unknown:
        raise DataError(f"unknown record feature groups {unknown}; known: {list(GROUPS)}")
    beats, rr = x[:, :BEAT_LEN].astype(np.float64), x[:, BEAT_LEN:].astype(np.float64)
    out = None
    for idx in record_slices(context.reset_index(drop=True)):
        groups = one_record(beats[idx], rr[idx], params)
        block = np.column_stack([groups[g] for g in params["groups"]])
        if out is None:
            out = np.zeros((len(x), block.shape[1]), dtype=np.float32)
        out[idx] = block
    return out
