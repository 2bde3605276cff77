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
  beat is followed by a long pause; a run of ectopic beats differs from one);
- `rhythm`: the rhythm around the beat (`rhythm_beats` beats): the previous RR over their
  median RR, how irregular they are (median successive RR jump over median RR) and the
  share of them that come early. A premature beat in a steady rhythm is likely ectopic
  (S or V); an early beat in atrial fibrillation, where most beats come early or late and
  the label is N, is not.

`record_features(x, context, params)` maps x (beat then RR_FEATURES, as evaluation loads
it) and context (each row's `record` and `sample`) to a float32 feature matrix; `params`
names the groups, the subsampling step and (with `rhythm`) its window, `rhythm_beats`, and
is stored in the model's model.json.

For the networks (`template` training setting): `templates_of` gives each record's
template, the median of up to TEMPLATE_BEATS of its beats, chosen by their row keys' hash
so that the choice does not depend on the order or the blocks the rows arrive in, and the
memory it takes is bounded per record; `deviations` is each beat minus its template.
"""

import numpy as np
import pandas as pd

from raytasks.data import BEAT_LEN, RHYTHM_BEATS, RR_FEATURES, DataError

GROUPS = (
    "beat",
    "rr",
    "pace",
    "rr_record",
    "template",
    "shape",
    "amplitude",
    "neighbours",
    "rhythm",
)
# the HistGradientBoosting floor, its two feature rows (bench/inter_floor.py)
FLOOR_ROWS = {
    "beat + RR": {"step": 3, "groups": ["beat", "rr"]},
    "+ record template": {"step": 3, "groups": ["beat", "rr", "template", "pace"]},
}


TEMPLATE_BEATS = 512  # a median of 512 beats is steady; memory per record stays ~380 KB
EARLY = 0.85  # an RR under 85% of the local median counts as early


def templates_of(chunks) -> dict:
    """record -> its template (float32, BEAT_LEN) from chunks of (beats, records, row keys):
    the median of the TEMPLATE_BEATS beats of each record with the smallest key hashes."""
    from raytasks.data.stream import key_uniforms

    kept: dict = {}  # record -> (hashes, beats)
    for beats, records, keys in chunks:
        h = key_uniforms(np.asarray(keys).view(np.uint64), seed=0, epoch=0)
        for rec in np.unique(records):
            rows = np.flatnonzero(records == rec)
            old_h, old_b = kept.get(rec, (np.zeros(0), np.zeros((0, beats.shape[1]))))
            both_h = np.concatenate([old_h, h[rows]])
            both_b = np.concatenate([old_b, beats[rows]])
            keep = np.argsort(both_h, kind="stable")[:TEMPLATE_BEATS]
            kept[rec] = (both_h[keep], both_b[keep])
    return {rec: np.median(b, axis=0).astype(np.float32) for rec, (_, b) in kept.items()}


def split_templates(files: list[str]) -> dict:
    """The templates of a split's records, read shard by shard (never the split whole)."""
    import pyarrow.parquet as pq

    from raytasks.data import BEAT
    from raytasks.data.stream import row_keys

    def chunks():
        for f in files:
            t = pq.read_table(f, columns=[BEAT, "record", "sample"])
            beat = t.column(BEAT).combine_chunks()
            records = t.column("record").combine_chunks()
            keys = row_keys(records, t.column("sample").to_numpy())
            beats = beat.flatten().to_numpy().reshape(len(t), BEAT_LEN)
            yield beats, records.to_numpy(zero_copy_only=False), keys

    return templates_of(chunks())


def with_deviations(x: np.ndarray, records, samples) -> np.ndarray:
    """x (beat + RR_FEATURES) with each beat's deviation from its record's template appended,
    the templates taken from these beats (what a template model reads, raytasks.nets)."""
    from raytasks.data.stream import row_keys

    records = np.asarray(records).astype(str)
    beats = x[:, :BEAT_LEN]
    found = templates_of([(beats, records, row_keys(records, np.asarray(samples)))])
    return np.concatenate([x, deviations(beats, records, found)], axis=1)


def deviations(beats: np.ndarray, records: np.ndarray, templates: dict) -> np.ndarray:
    """Each beat minus its record's template (float32); a record without one is refused."""
    names = np.unique(records)
    missing = [str(r) for r in names if r not in templates]
    if missing:
        raise DataError(f"no template for record(s) {missing[:5]}")
    out = np.empty(beats.shape, dtype=np.float32)
    for rec in names:
        rows = records == rec
        out[rows] = beats[rows] - templates[rec]
    return out


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
    if "rhythm" in params["groups"]:
        out["rhythm"] = rhythm(pre, params.get("rhythm_beats", RHYTHM_BEATS))
    return out


def rhythm(pre: np.ndarray, beats: int) -> np.ndarray:
    """(n, 3): previous RR over the local median RR, local irregularity, share of early beats
    (each over the `beats` beats centred on the beat; pre in time order)."""

    def local(values: np.ndarray, how: str) -> np.ndarray:
        window = pd.Series(values).rolling(beats, center=True, min_periods=1)
        return getattr(window, how)().to_numpy()

    median = np.maximum(local(pre, "median"), 1e-3)
    jumps = np.abs(np.diff(pre, prepend=pre[:1]))
    early = (pre < EARLY * median).astype(np.float64)
    return np.column_stack([pre / median, local(jumps, "median") / median, local(early, "mean")])


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
