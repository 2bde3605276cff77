"""Classification metrics, named by their `__repr__` (the column names of output.csv).

All are computed from the 5x5 confusion matrix so that they agree with scikit-learn:
macro averages run over the classes present in the labels or the predictions, and a
class with no predictions has precision 0 (scikit-learn's zero_division default).
`F2scoremacro` (F-beta with beta = 2) weighs recall 4x precision: the recall-first
objective for the rare, sick classes.
"""

from collections.abc import Callable

import numpy as np

from raytasks.core.constants import NUM_CLASSES


def confusion(y_true, y_pred, k: int = NUM_CLASSES) -> np.ndarray:
    """Counts: rows = true class, columns = predicted class."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)


def se_ppv(cm: np.ndarray, undefined: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Per class, from a confusion matrix whose rows are the truth: Se (recall, TP over the
    row) and +P (precision, TP over the column); `undefined` where the row or the column is
    empty. The one place these are computed: the metrics, the field's figures, the
    recordings' score and the recall plot all read them here."""
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    se = np.divide(tp, support, out=np.full_like(tp, undefined), where=support > 0)
    ppv = np.divide(tp, predicted, out=np.full_like(tp, undefined), where=predicted > 0)
    return se, ppv


def _per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, present) per class, zero where undefined."""
    recall, precision = se_ppv(cm)
    return precision, recall, (cm.sum(axis=1) + cm.sum(axis=0)) > 0


def _fbeta(p: np.ndarray, r: np.ndarray, beta: float) -> np.ndarray:
    b2 = beta * beta
    den = b2 * p + r
    return np.divide((1 + b2) * p * r, den, out=np.zeros_like(p), where=den > 0)


class Accuracy:
    def __repr__(self):
        return "Accuracy"

    def __call__(self, cm: np.ndarray) -> float:
        return float(np.trace(cm) / max(cm.sum(), 1))


class FBetaScore:
    """F-beta, 'micro' (= accuracy for single-label) or 'macro'."""

    def __init__(self, beta: float = 1.0, average: str = "macro"):
        self.beta, self.average = beta, average

    def __repr__(self):
        return f"F{self.beta:g}score{self.average}"

    def __call__(self, cm: np.ndarray) -> float:
        if self.average == "micro":
            return Accuracy()(cm)
        p, r, present = _per_class(cm)
        return float(_fbeta(p, r, self.beta)[present].mean())


class Precision:
    def __init__(self, average: str = "macro"):
        self.average = average

    def __repr__(self):
        return f"Precision{self.average}"

    def __call__(self, cm: np.ndarray) -> float:
        p, _, present = _per_class(cm)
        return float(p[present].mean())


class Recall:
    def __init__(self, average: str = "macro"):
        self.average = average

    def __repr__(self):
        return f"Recall{self.average}"

    def __call__(self, cm: np.ndarray) -> float:
        _, r, present = _per_class(cm)
        return float(r[present].mean())


# what every row of output.csv holds, by each metric's repr
METRICS: list[Callable[[np.ndarray], float]] = [
    Accuracy(),
    FBetaScore(1, "micro"),
    FBetaScore(1, "macro"),
    Precision("macro"),
    Recall("macro"),
    FBetaScore(2, "macro"),
]
METRIC_NAMES = [repr(m) for m in METRICS]
RECALL_NAMES = [f"TP_{c}" for c in range(NUM_CLASSES)]
OBJECTIVE = "F2scoremacro"


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    """Diagonal of the row-normalised confusion matrix; NaN for a class with no rows."""
    return se_ppv(cm, undefined=np.nan)[0]


def compute_metrics(y_true, y_pred) -> dict[str, float]:
    """Every metric by its repr, then TP_0..TP_4."""
    cm = confusion(y_true, y_pred)
    out = {repr(m): m(cm) for m in METRICS}
    out.update(zip(RECALL_NAMES, map(float, per_class_recall(cm))))
    return out


def fbeta_macro(y_true, logits: np.ndarray, offsets: np.ndarray, beta: float = 2.0) -> float:
    return FBetaScore(beta, "macro")(confusion(y_true, (logits + offsets).argmax(axis=1)))


def fit_offsets(
    logits: np.ndarray,
    y_true,
    beta: float = 2.0,
    target_recall: float | None = None,
    grid=None,
    rounds: int = 3,
) -> np.ndarray:
    """Per-class offsets added to the logits before argmax (class 0's stays 0).

    Default: maximise macro F-beta (beta = 2: recall first) by coordinate ascent from zero;
    only improvements are kept, so the result is never worse than plain argmax on the data
    it is fitted on. With `target_recall`, instead maximise macro precision subject to every
    sick class present (1-4) reaching that recall (a shortfall is penalised heavily).
    """
    y_true = np.asarray(y_true)
    grid = np.linspace(-4, 4, 81) if grid is None else grid
    sick = [c for c in range(1, NUM_CLASSES) if (y_true == c).any()]

    def score(off):
        cm = confusion(y_true, (logits + off).argmax(axis=1))
        if target_recall is None:
            return FBetaScore(beta, "macro")(cm)
        recall = per_class_recall(cm)
        shortfall = sum(max(0.0, target_recall - recall[c]) for c in sick)
        return Precision("macro")(cm) - 10.0 * shortfall

    offsets = np.zeros(NUM_CLASSES)
    best = score(offsets)
    for _ in range(rounds):
        improved = False
        for c in sick:
            for v in grid:
                trial = offsets.copy()
                trial[c] = v
                s = score(trial)
                if s > best + 1e-12:
                    best, offsets, improved = s, trial, True
        if not improved:
            break
    return offsets


# ---------------------------------------------------------------- the field's report (DS2)

FIELD_CLASSES = (1, 2, 3)  # S, V, F: Se, +P and F1 each


def field_metrics(cm: np.ndarray) -> dict[str, float]:
    """The patient-level literature's figures from one confusion matrix: accuracy, Se
    (recall), +P (precision) and F1 of S, V, F (and N), macro F1 over N, S, V, F and over
    all five classes (Q has almost no beats in DS1 or DS2, so it drags the 5-class mean)."""
    se, ppv = se_ppv(cm)
    f1 = _fbeta(ppv, se, 1.0)
    out = {"accuracy": float(np.trace(cm) / max(cm.sum(), 1))}
    for c, name in enumerate("NSVFQ"):
        out |= {f"{name} Se": se[c], f"{name} +P": ppv[c], f"{name} F1": f1[c]}
    out["macro F1 (N,S,V,F)"] = float(f1[:4].mean())
    out["macro F1 (5)"] = float(f1.mean())
    return {k: float(v) for k, v in out.items()}


def record_bootstrap(
    y_true, y_pred, records, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, tuple[float, float, float]]:
    """{figure: (value, low, high)}: each field figure with a bootstrap interval over
    *records* (patients), not beats: beats of one patient are not independent, and a
    patient-level claim must carry the spread between patients."""
    records = np.asarray(records)
    names, inverse = np.unique(records, return_inverse=True)
    k = NUM_CLASSES
    per_record = np.zeros((len(names), k * k), dtype=np.int64)
    np.add.at(per_record, (inverse, np.asarray(y_true) * k + np.asarray(y_pred)), 1)
    point = field_metrics(per_record.sum(axis=0).reshape(k, k))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(names), size=(n_boot, len(names)))
    boots = [field_metrics(per_record[d].sum(axis=0).reshape(k, k)) for d in draws]
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {
        m: (
            v,
            float(np.percentile([b[m] for b in boots], lo)),
            float(np.percentile([b[m] for b in boots], hi)),
        )
        for m, v in point.items()
    }


FIELD_COLUMNS = [
    "accuracy",
    "S Se",
    "S +P",
    "S F1",
    "V Se",
    "V +P",
    "V F1",
    "F F1",
    "macro F1 (N,S,V,F)",
    "macro F1 (5)",
]


def field_table(rows: dict[str, dict], columns=FIELD_COLUMNS) -> str:
    """A markdown table, a row per {name: record_bootstrap(...) or field_metrics(...)}."""

    def cell(v):
        return f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]" if isinstance(v, tuple) else f"{v:.3f}"

    lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [
        f"| {name} | " + " | ".join(cell(r[c]) for c in columns) + " |" for name, r in rows.items()
    ]
    return "\n".join(lines)
