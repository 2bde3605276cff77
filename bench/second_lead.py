"""The second lead's beats filling the first lead's gaps (`predict.add_second_lead`): its
gap ratio and size threshold chosen by leave-records-out CV on the 48 MIT-BIH records; QRS
Se / +P out of fold (150 ms matching, ventricular flutter left out).

    MITDB_DIR=../shared/data/mitdb .venv/bin/python bench/second_lead.py          # gaps
    MITDB_DIR=../shared/data/mitdb .venv/bin/python bench/second_lead.py --lone   # lone beats
    MITDB_DIR=../shared/data/mitdb .venv/bin/python bench/second_lead.py --both   # on both

Most beats the one-lead detector misses are premature ventricular beats (records 208, 203,
106, 210, 221) that XQRS passes over on MLII and finds on V1. An option adds the second
lead's XQRS beats that split a gap longer than `ratio` x the local RR and are at least
`size` x the first lead's median beat there. 4 folds of whole records: each fold takes the
option with the best Se + +P on the other 36 records and scores its own 12 with it.

--lone does the same for `predict.drop_lone_beats`, on the shipped two-lead peaks: drop a
beat with no second-lead beat within `near` s though one within `far` s, and under `size2`
/ `size1` x the median beat on the second / first lead (most extra beats are record 108's
tall P and T waves and noise, which V1 does not show).

--both does the same for `predict.add_beats_on_both`, on the shipped peaks with lone beats
dropped: add a second-lead beat at least `apart` s from every peak and at least `size2` /
`size1` x the median beat on the second / first lead.
"""

import itertools
import sys
import time

import numpy as np

from raytasks.core import config
from raytasks.data.mitdb import list_records, resolve_records
from raytasks.recordings.predict import (
    add_beats_on_both,
    add_second_lead,
    detect_peaks,
    drop_lone_beats,
    lone_features,
    refine_peaks,
    second_lead_beats,
)
from raytasks.recordings.score import match_beats, outside, read_annotations

FS = 360.0
GRID = [(r, a) for r in (1.2, 1.4, 1.6) for a in (0.0, 0.5, 0.7, 0.9, 1.1)]
OPTIONS = ["one lead", *(f"ratio {r} size {a}" for r, a in GRID)]
LONE = list(
    itertools.product(
        (0.05, 0.08), (0.3, 0.4, 0.6, 1.0, 99), (0.3, 0.4, 0.5, 0.7), (0.5, 0.6, 0.7, 0.8, 99)
    )
)  # near, far, size2, size1
LONE_OPTIONS = ["keep all", *(f"near {a} far {b} size2 {c} size1 {d}" for a, b, c, d in LONE)]


def candidates(x: np.ndarray, x2: np.ndarray) -> dict:
    """Each gap option's refined peaks."""
    base, other = detect_peaks(x, FS, refine=False), second_lead_beats(x2, FS)
    out = [base] + [add_second_lead(base, x2, FS, r, a, other=other) for r, a in GRID]
    return {k: refine_peaks(x, p, FS) for k, p in zip(OPTIONS, out)}


def lone_candidates(x: np.ndarray, x2: np.ndarray) -> dict:
    """Each lone-beat option's peaks, from the shipped two-lead refined peaks."""
    base, other = detect_peaks(x, FS, refine=False), second_lead_beats(x2, FS)
    peaks = refine_peaks(x, add_second_lead(base, x2, FS, other=other), FS)
    if len(other) == 0:
        return dict.fromkeys(LONE_OPTIONS, peaks)
    dist, s1, s2 = lone_features(peaks, x, x2, other, FS)
    out = [peaks] + [peaks[~((dist > a) & (dist < b) & (s2 < c) & (s1 < d))] for a, b, c, d in LONE]
    return dict(zip(LONE_OPTIONS, out))


def counts(ref: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    ri, di = match_beats(ref / FS, peaks / FS, 0.150)
    return np.array([len(ri), len(ref) - len(ri), len(peaks) - len(di)])


def se_p(c: np.ndarray) -> tuple[float, float]:
    tp, fn, fp = c
    return 100 * tp / (tp + fn), 100 * tp / (tp + fp)


BOTH = list(itertools.product((0.2, 0.3, 0.4), (0.2, 0.3, 0.5, 0.7), (0.25, 0.3, 0.35, 0.4, 0.45)))
BOTH_OPTIONS = ["add none", *(f"size1 {a} size2 {b} apart {c}" for a, b, c in BOTH)]


def both_candidates(x: np.ndarray, x2: np.ndarray) -> dict:
    """Each on-both option's peaks, from the shipped peaks before `add_beats_on_both`."""
    base, other = detect_peaks(x, FS, refine=False), second_lead_beats(x2, FS)
    peaks = refine_peaks(x, add_second_lead(base, x2, FS, other=other), FS)
    peaks = drop_lone_beats(peaks, x, x2, other, FS)
    out = [peaks] + [add_beats_on_both(peaks, x, x2, other, FS, a, b, c) for a, b, c in BOTH]
    return dict(zip(BOTH_OPTIONS, out))


MODES = {
    "": (OPTIONS, candidates),
    "--lone": (LONE_OPTIONS, lone_candidates),
    "--both": (BOTH_OPTIONS, both_candidates),
}


def main():
    import wfdb

    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    options, make = MODES[mode]
    cfg = config.load()
    src = resolve_records(cfg["records"], config.where(cfg, "raw_download"))
    names = list_records(src)
    table = {}  # record -> option -> (tp, fn, fp)
    t0 = time.perf_counter()
    for name in names:
        rec = wfdb.rdrecord(str(src / name))
        ml = rec.sig_name.index("MLII") if "MLII" in rec.sig_name else 0
        ref, _, flutter = read_annotations(src, name, spans=True)
        ref = ref[outside(ref, flutter)]
        peaks = make(rec.p_signal[:, ml], rec.p_signal[:, 1 - ml])
        table[name] = {k: counts(ref, p[outside(p, flutter)]) for k, p in peaks.items()}
    print(f"{len(names)} records in {time.perf_counter() - t0:.0f} s")
    ranked = sorted(options, key=lambda k: -sum(se_p(sum(table[n][k] for n in names))))
    for k in options if not mode else [options[0], *ranked[:8]]:
        total = sum(table[n][k] for n in names)
        se, p = se_p(total)
        print(f"all records, {k:<20} Se {se:.2f}  +P {p:.2f}  missed {total[1]} extra {total[2]}")
    folds = np.array_split(np.random.default_rng(0).permutation(names), 4)
    oof = np.zeros(3)
    for i, held in enumerate(folds):
        train = [n for n in names if n not in set(held)]
        best = max(options, key=lambda k: sum(se_p(sum(table[n][k] for n in train))))
        oof += sum(table[n][best] for n in held)
        print(f"fold {i + 1}: chose {best} on the other {len(train)} records")
    se, p = se_p(oof)
    print(f"out of fold: Se {se:.2f}  +P {p:.2f}  missed {oof[1]:.0f} extra {oof[2]:.0f}")


if __name__ == "__main__":
    main()
