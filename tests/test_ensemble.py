"""Ensembles of two tiny models trained here on the slice: averaging, offsets, evaluation."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from raytasks.cli import main
from raytasks.core.metrics import compute_metrics, fbeta_macro
from raytasks.data.stream import load_split, split_files
from raytasks.models import saved
from tests.conftest import train_tiny, use_models


@pytest.fixture(scope="module")
def members(ray_cluster, processed, tmp_path_factory):
    """Two tiny cnn1d models (different seeds and widths), exported like `raytasks train`."""
    root = tmp_path_factory.mktemp("ens_models")
    for tag, seed, channels in (("a", 0, [8, 16]), ("b", 1, [16, 16])):
        cfg = {
            "arch": "cnn1d",
            "model": {"channels": channels},
            "seed": seed,
            "data": str(processed / "intra"),
            "epochs": 1,
            "batch_size": 128,
        }
        train_tiny(cfg, root / tag)
    return root


@pytest.fixture
def env(monkeypatch, processed, members, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(members, models)
    use_models(monkeypatch, models, processed, tmp_path / "results")
    return models


def test_ensemble_averages_probabilities_and_evaluates(env, processed, tmp_path):
    res = CliRunner().invoke(main, ["ensemble", "a", "b", "--tag", "ens"])
    assert res.exit_code == 0, res.output
    ens, info = saved.load_model(env / "ens")
    assert info["arch"] == "ensemble"
    assert info["members"] == ["a", "b"]
    x, y = load_split(split_files(processed / "intra", "valid"))
    probs = [
        torch.from_numpy(saved.predict_logits(saved.load_model(env / t)[0], x)).softmax(-1)
        for t in ("a", "b")
    ]
    expected = ((probs[0] + probs[1]) / 2).log().numpy()
    logits = saved.predict_logits(ens, x)
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    # stored valid metrics are the ensemble's own; offsets never lower F2 on valid
    assert info["valid_metrics"] == pytest.approx(
        compute_metrics(y, logits.argmax(1)), nan_ok=True
    )  # no Q beats in this slice
    offsets = np.asarray(info["offsets"])
    assert fbeta_macro(y, logits, offsets) >= fbeta_macro(y, logits, np.zeros(5))
    # the members travel inside the ensemble: it still loads with the originals gone
    shutil.rmtree(env / "a")
    res = CliRunner().invoke(main, ["evaluate", "--model", str(env / "ens")])
    assert res.exit_code == 0, res.output
    rows = pd.read_csv(tmp_path / "results" / "selected" / "output.csv")  # --model: selected/
    assert list(rows["modeltag"]) == ["ens", "ens@recall"]
    assert rows.loc[0, "Accuracy"] == pytest.approx((logits.argmax(1) == y).mean())
    report = (tmp_path / "results" / "selected" / "ens" / "report.md").read_text()
    size = sum(f.stat().st_size for f in (env / "ens").rglob("model.pt"))
    assert f"{size / 1e6:.2f} MB" in report


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a"], "at least two"),
        (["a", "nope"], "missing model.json"),
        (["a", "b", "--tag", "a"], "cannot replace one of its members"),
        (["a", "inter-b"], "different or unknown schemes"),
    ],
)
def test_bad_ensembles_refused_and_nothing_written(env, args, message):
    other = env / "inter-b"
    shutil.copytree(env / "b", other)
    info = json.loads((other / "model.json").read_text())
    info["data"]["scheme"] = "inter"
    (other / "model.json").write_text(json.dumps(info))
    if "--tag" not in args:
        args = [*args, "--tag", "ens"]
    res = CliRunner().invoke(main, ["ensemble", *args])
    assert res.exit_code in (1, 2), res.output  # no traceback
    assert message in res.output, res.output
    assert not (env / "ens").exists()
    assert not list(env.glob(".*tmp"))
    assert (env / "a" / "model.pt").exists()
