"""R-peak refinement (predict's `refine_peaks`) chosen by leave-records-out CV on the 48 MIT-BIH
records: how far detected beats sit from the annotated fiducial, per class, before and after.

    MITDB_DIR=../shared/data/mitdb .venv/bin/python bench/fiducial.py          # ~2 min

Each record is detected once (XQRS + sleepecg, unrefined). For every (window, fraction) of
the grid, each record counts its matched beats (150 ms) more than 25 ms from the mark, per
class. Folds hold out whole records (4, seeded); each fold picks the grid point with the
lowest class-balanced off-mark share (the mean over N, S, V, F, Q of each class's share) on
its other records, and is scored on its own. The out-of-fold table is what predict's
constants are judged by; the last line says which point each fold chose.
"""

import argparse
import itertools

import numpy as np

from raytasks.core import config
from raytasks.data import NUM_CLASSES
from raytasks.data.mitdb import list_records, resolve_records
from raytasks.recordings.predict import detect_peaks, refine_peaks
from raytasks.recordings.score import match_beats, read_annotations

HALF_S = (0.030, 0.040, 0.050, 0.065, 0.080)
FRAC = (0.5, 0.6, 0.7, 0.8, 1.0)
OFF_S = 0.025
FOLDS = 4


def record_counts(records, name: str) -> dict:
    """(off-mark, matched) beats per class for no refinement and every grid point."""
    import wfdb

    rec = wfdb.rdrecord(str(records / name))
    x = rec.p_signal[:, rec.sig_name.index("MLII") if "MLII" in rec.sig_name else 0]
    fs = float(rec.fs)
    ref, cls = read_annotations(records, name)
    raw = detect_peaks(x, fs, refine=False)
    out = {"none": off_mark(raw, ref, cls, fs)}
    for half, frac in itertools.product(HALF_S, FRAC):
        out[(half, frac)] = off_mark(refine_peaks(x, raw, fs, half, frac), ref, cls, fs)
    return out


def off_mark(peaks, ref, cls, fs) -> np.ndarray:
    """(2, classes): beats > OFF_S from their mark, and matched beats."""
    ri, di = match_beats(ref, peaks, 0.15 * fs)
    far = np.abs(peaks[di] - ref[ri]) > OFF_S * fs
    c = cls[ri]
    return np.stack(
        [np.bincount(c[far], minlength=NUM_CLASSES), np.bincount(c, minlength=NUM_CLASSES)]
    )


def balanced(counts: np.ndarray) -> float:
    """Mean over the classes present of each class's off-mark share."""
    present = counts[1] > 0
    return float((counts[0][present] / counts[1][present]).mean())


def cross_validate(per_record: dict, seed: int = 0) -> tuple[dict, list]:
    """Out-of-fold (off-mark, matched) per class of the fold-chosen points, and the choices."""
    names = sorted(per_record)
    order = np.random.default_rng(seed).permutation(len(names))
    folds = [[names[i] for i in order[k::FOLDS]] for k in range(FOLDS)]
    grid = [k for k in per_record[names[0]] if k != "none"]
    total = {"none": 0, "refined": 0}
    chosen = []
    for held in folds:
        rest = [n for n in names if n not in held]
        best = min(grid, key=lambda g: balanced(sum(per_record[n][g] for n in rest)))
        chosen.append(best)
        total["refined"] = total["refined"] + sum(per_record[n][best] for n in held)
        total["none"] = total["none"] + sum(per_record[n]["none"] for n in held)
    return total, chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("records", nargs="*", help="record names (default: all 48)")
    args = ap.parse_args()
    cfg = config.load()
    records = resolve_records(cfg["records"], config.where(cfg, "raw_download"))
    names = args.records or list_records(records)
    per_record = {}
    for i, name in enumerate(names, 1):
        per_record[name] = record_counts(records, name)
        print(f"\r{i}/{len(names)} records", end="", flush=True)
    print()
    total, chosen = cross_validate(per_record)
    print(f"beats > {OFF_S * 1000:.0f} ms from the annotated fiducial, out of fold (% of matched)")
    print(f"{'positions':<24}" + "".join(f"{c:>8}" for c in "NSVFQ") + "  balanced")
    for label, counts in (("detected", total["none"]), ("refined (CV)", total["refined"])):
        share = 100 * counts[0] / np.maximum(counts[1], 1)
        print(
            f"{label:<24}"
            + "".join(f"{v:8.2f}" for v in share)
            + f"  {100 * balanced(counts):8.2f}"
        )
    picks = ", ".join(f"+-{h * 1000:.0f} ms x{f:g}" for h, f in chosen)
    print(f"chosen per fold (half window, fraction of the top): {picks}")


if __name__ == "__main__":
    main()
