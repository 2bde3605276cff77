import numpy as np
from sklearn.metrics import accuracy_score, f1_score, fbeta_score, precision_score, recall_score

from raytasks.core.metrics import METRIC_NAMES, compute_metrics, confusion


def fixed_case():
    """A confusion case with a class never predicted and a class never present."""
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2, 3], [50, 10, 20, 5])
    pred = y.copy()
    flip = rng.choice(len(y), 25, replace=False)
    pred[flip] = rng.choice([0, 1, 2, 4], size=25)  # 3 never predicted, 4 never true
    return y, pred


def test_shipped_output_csv_columns_are_what_compute_metrics_names():
    """results/output.csv (written by evaluate) and a metrics dict agree on names and order:
    renaming a metric or reordering the table breaks one of them, and this says which."""
    import pandas as pd

    from tests.conftest import ROOT

    shipped = list(pd.read_csv(ROOT / "results" / "output.csv", nrows=0).columns)
    y, pred = fixed_case()
    assert shipped == ["modeltag", *compute_metrics(y, pred)]
    assert list(compute_metrics(y, pred))[: len(METRIC_NAMES)] == METRIC_NAMES


def test_values_match_scikit_learn():
    y, pred = fixed_case()
    m = compute_metrics(y, pred)
    kw = {"zero_division": 0}
    assert np.isclose(m["Accuracy"], accuracy_score(y, pred))
    assert np.isclose(m["F1scoremicro"], f1_score(y, pred, average="micro"))
    assert np.isclose(m["F1scoremacro"], f1_score(y, pred, average="macro", **kw))
    assert np.isclose(m["Precisionmacro"], precision_score(y, pred, average="macro", **kw))
    assert np.isclose(m["Recallmacro"], recall_score(y, pred, average="macro", **kw))
    assert np.isclose(m["F2scoremacro"], fbeta_score(y, pred, beta=2, average="macro", **kw))
    per_class = recall_score(y, pred, average=None, labels=[0, 1, 2, 3], **kw)
    np.testing.assert_allclose([m[f"TP_{c}"] for c in range(4)], per_class)
    assert np.isnan(m["TP_4"])  # no true class-4 rows: recall undefined
    assert confusion(y, pred).sum() == len(y)
