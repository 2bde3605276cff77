"""Beat-by-beat scoring of detected, classified beats against reference annotations, the way
arrhythmia detectors are certified (ANSI/AAMI EC57, as PhysioNet's `bxb` does it).

    raytasks score --records DIR --predictions results/predict/

A detected beat matches a reference beat within 150 ms (one-to-one, closest pairs first).
Unmatched reference beats are missed (FN), unmatched detections are extra (FP): QRS
sensitivity Se = TP / (TP + FN) and positive predictivity +P = TP / (TP + FP). For matched
beats the classes are compared: a 5 x 5 confusion matrix (rows reference, columns predicted)
and per-class Se / +P / F1, per record and in total (gross: beats pooled over records).
As in EC57, ventricular flutter episodes (between '[' and ']' in the .atr: record 207) are
left out. Differences from `bxb`: every other beat of the record is scored (no 5-minute
learning period), and classes are the 5 AAMI groups. Times are in seconds on both sides
(the .atr at 360 Hz, the predictions' time_s).
"""

from pathlib import Path

import numpy as np
import pandas as pd

from raytasks.core.metrics import se_ppv
from raytasks.core.paths import write_text
from raytasks.data import CLASS_SHORT, NUM_CLASSES, DataError

TOLERANCE_S = 0.150


def match_beats(ref: np.ndarray, det: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matches (ref index, det index) of beat times within tol, closest first.

    Every (ref, det) pair closer than tol is a candidate; taking them in order of distance
    and skipping beats already used gives each beat its nearest free partner, so a stray
    detection between two beats cannot steal the match of the detection that sits on one.
    """
    ref, det = np.asarray(ref, dtype=np.float64), np.asarray(det, dtype=np.float64)
    if len(ref) == 0 or len(det) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    lo = np.searchsorted(det, ref - tol, side="left")
    hi = np.searchsorted(det, ref + tol, side="right")
    counts = hi - lo
    ri = np.repeat(np.arange(len(ref)), counts)
    di = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi)]) if counts.sum() else ri
    dist = np.abs(ref[ri] - det[di])
    keep = dist <= tol
    ri, di, dist = ri[keep], di[keep], dist[keep]
    used_r = np.zeros(len(ref), dtype=bool)
    used_d = np.zeros(len(det), dtype=bool)
    out_r, out_d = [], []
    for k in np.argsort(dist, kind="stable"):
        r, d = ri[k], di[k]
        if not used_r[r] and not used_d[d]:
            used_r[r] = used_d[d] = True
            out_r.append(r)
            out_d.append(d)
    order = np.argsort(out_r)
    return np.asarray(out_r, dtype=np.int64)[order], np.asarray(out_d, dtype=np.int64)[order]


def score_record(ref_t, ref_y, det_t, det_y, tol: float = TOLERANCE_S, counted=None) -> dict:
    """Detection counts and the class confusion of matched beats for one record (of the
    reference beats flagged in `counted` only, when given: e.g. a held-out split's)."""
    ri, di = match_beats(ref_t, det_t, tol)
    tp = len(ri)
    if counted is not None:
        sel = np.asarray(counted)[ri]
        ri, di = ri[sel], di[sel]
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(cm, (np.asarray(ref_y)[ri], np.asarray(det_y)[di]), 1)
    return {"tp": tp, "fn": len(ref_t) - tp, "fp": len(det_t) - tp, "cm": cm}


def read_annotations(records_dir: Path, name: str, spans: bool = False):
    """(sample, AAMI class) of the reference beats in <name>.atr (non-beat labels dropped);
    with spans, also the (start, end) samples of its ventricular flutter episodes ('[' .. ']'),
    which EC57 leaves out of QRS detection scoring."""
    from raytasks.data.mitdb import beat_annotations, read_atr

    ann = read_atr(Path(records_dir) / name)
    beats = beat_annotations(ann)
    if not spans:
        return beats
    flutter, start = [], None
    for sample, symbol in zip(ann.sample, ann.symbol):
        if symbol == "[":
            start = int(sample)
        elif symbol == "]" and start is not None:
            flutter.append((start, int(sample)))
            start = None
    return *beats, flutter


def outside(t: np.ndarray, spans: list[tuple[float, float]]) -> np.ndarray:
    keep = np.ones(len(t), dtype=bool)
    for a, b in spans:
        keep &= ~((t >= a) & (t <= b))
    return keep


def ratio(a, b) -> float:
    return float(a / b) if b else float("nan")


def row(name: str, s: dict) -> dict:
    """One table row: detection Se/+P, then per-class Se/+P/F1 of matched beats."""
    cm = s["cm"]
    out = {
        "record": name,
        "ref_beats": s["tp"] + s["fn"],
        "detected": s["tp"] + s["fp"],
        "missed": s["fn"],
        "extra": s["fp"],
        "QRS_Se": ratio(s["tp"], s["tp"] + s["fn"]),
        "QRS_+P": ratio(s["tp"], s["tp"] + s["fp"]),
        "accuracy": ratio(np.trace(cm), cm.sum()),
    }
    se, pp = se_ppv(cm, undefined=np.nan)  # NaN: a record without such beats says nothing
    for c, short in enumerate(CLASS_SHORT):
        out |= {
            f"{short}_Se": float(se[c]),
            f"{short}_+P": float(pp[c]),
            f"{short}_F1": ratio(2 * cm[c, c], cm[c].sum() + cm[:, c].sum()),
        }
    return out


def score_all(
    records_dir: Path, predictions: Path, only: dict[str, np.ndarray] | None = None
) -> tuple[pd.DataFrame, np.ndarray]:
    """Per-record rows plus a 'total' row (pooled beats), and the total confusion matrix.

    `only` ({record: reference samples}) limits the scored records, and the classification
    part to those beats (detection still counts every beat of the record)."""
    import wfdb

    records_dir, predictions = Path(records_dir), Path(predictions)
    beats = sorted(predictions.glob("*/beats.csv"))
    if not beats:
        raise DataError(
            f"{predictions}: no predictions (<record>/beats.csv); run `raytasks predict` first"
        )
    rows, total = [], None
    for f in beats:
        name = f.parent.name
        if only is not None and name not in only:
            continue
        if not (records_dir / f"{name}.atr").exists():
            print(f"{records_dir / name}.atr: missing, record {name} not scored")
            continue
        ref_samples, ref_y, flutter = read_annotations(records_dir, name, spans=True)
        fs = float(wfdb.rdheader(str(records_dir / name)).fs)  # the .atr counts its samples
        ref_t, spans = ref_samples / fs, [(a / fs, b / fs) for a, b in flutter]
        pred = pd.read_csv(f)
        det_t, det_y = pred["time_s"].to_numpy(), pred["class"].to_numpy()
        r, d = outside(ref_t, spans), outside(det_t, spans)
        counted = None if only is None else np.isin(ref_samples[r], only[name])
        s = score_record(ref_t[r], ref_y[r], det_t[d], det_y[d], counted=counted)
        rows.append(row(name, s))
        total = s if total is None else {k: total[k] + s[k] for k in ("tp", "fn", "fp", "cm")}
    if total is None:
        raise DataError(f"{records_dir}: no .atr for any record in {predictions}")
    rows.append(row("total", total))
    return pd.DataFrame(rows), total["cm"]


def ec57_table(rows: pd.DataFrame, cm: np.ndarray) -> str:
    """The per-record and total table (percentages) and the total confusion matrix."""
    cols = [
        "record",
        "ref_beats",
        "missed",
        "extra",
        "QRS_Se",
        "QRS_+P",
        "N_Se",
        "N_+P",
        "S_Se",
        "S_+P",
        "V_Se",
        "V_+P",
        "F_Se",
        "F_+P",
        "Q_Se",
        "Q_+P",
    ]
    pct = rows[cols].copy()
    for c in cols[4:]:
        pct[c] = (100 * pct[c]).round(2)
    lines = [
        pct.to_string(index=False, na_rep="-"),
        "",
        "total confusion of matched beats (rows reference, columns predicted):",
        "      " + "".join(f"{c:>8}" for c in CLASS_SHORT),
    ]
    lines += [
        f"{CLASS_SHORT[i]:>6}" + "".join(f"{v:>8d}" for v in cm[i]) for i in range(NUM_CLASSES)
    ]
    return "\n".join(lines)


def write_scores(rows: pd.DataFrame, cm: np.ndarray, out: Path) -> None:
    """score.csv and score.txt, each replaced atomically (paths.write_text)."""
    for name, text in (
        ("score.csv", rows.to_csv(index=False)),
        ("score.txt", ec57_table(rows, cm) + "\n"),
    ):
        write_text(out / name, text)
