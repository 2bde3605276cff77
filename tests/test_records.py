"""Record features, trees as a torch model, record-level CV/export, and the field's report."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from raytasks.cli import main
from raytasks.core.metrics import confusion, field_metrics, record_bootstrap
from raytasks.data import FEATURES, DataError
from raytasks.data.features import EARLY, GROUPS, record_features, rr_seconds
from raytasks.training import boost

ALL = {"step": 3, "groups": list(GROUPS)}
TINY = boost.HGB | {"max_iter": 8, "max_leaf_nodes": 7}


@pytest.fixture(scope="module")
def inter(processed):
    return boost.load(processed, "inter", ("train", "valid"))


def test_features_follow_each_record_in_time_whatever_the_row_order(inter):
    x, _, ctx = inter
    feats = record_features(x, ctx, ALL)
    assert feats.shape[0] == len(x)
    assert np.isfinite(feats).all()
    perm = np.random.default_rng(0).permutation(len(x))
    shuffled = record_features(x[perm], ctx.iloc[perm].reset_index(drop=True), ALL)
    np.testing.assert_array_equal(shuffled, feats[perm])
    # the built RR columns give back each record's R-peak intervals
    for rec in ctx["record"].unique():
        rows = np.flatnonzero(ctx["record"].to_numpy() == rec)
        rows = rows[np.argsort(ctx["sample"].to_numpy()[rows])]
        pre, _ = rr_seconds(x[rows, 187:].astype(np.float64))
        np.testing.assert_allclose(
            pre[1:], np.diff(ctx["sample"].to_numpy()[rows]) / 360, rtol=1e-4
        )


def test_template_is_the_records_own_median_beat(inter):
    x, _, ctx = inter
    params = {"step": 1, "groups": ["template"]}
    diff = record_features(x, ctx, params)[:, :187]
    for rec in ctx["record"].unique():
        mask = ctx["record"].to_numpy() == rec
        np.testing.assert_allclose(
            diff[mask] + np.median(x[mask, :187], axis=0), x[mask, :187], atol=1e-5
        )
    with pytest.raises(DataError, match="unknown record feature groups"):
        record_features(x, ctx, {"step": 3, "groups": ["beat", "bogus"]})


def test_rhythm_tells_an_early_beat_in_a_steady_rhythm_from_an_irregular_rhythm(inter):
    x, y, ctx = inter
    rhythm = {"step": 3, "groups": ["rhythm"]}
    ratio, irregular, early = record_features(x, ctx, rhythm).T
    y, in_118 = np.asarray(y), ctx["record"].to_numpy() == "118"
    s, n = in_118 & (y == 1), in_118 & (y == 0)
    assert s.sum() > 50  # 118's APCs: lone early beats in a steady rhythm
    # each comes early against a local median that one early beat does not move ...
    assert np.mean(ratio[s] < EARLY) > 0.8
    assert np.mean(ratio[n] < EARLY) < 0.05
    # ... in a rhythm that stays steady around it: few early beats, small RR jumps
    assert np.median(early[s]) < 0.2
    assert np.median(irregular[s]) < 0.1
    # the same beats out of time order (their samples shuffled in each record): irregular
    shuffled = ctx.copy()
    rng = np.random.default_rng(0)
    for rec in ctx["record"].unique():
        rows = np.flatnonzero(ctx["record"].to_numpy() == rec)
        shuffled.loc[rows, "sample"] = rng.permutation(ctx["sample"].to_numpy()[rows])
    _, irregular_shuffled, _ = record_features(x, shuffled, rhythm).T
    assert np.median(irregular_shuffled[in_118]) > 3 * np.median(irregular[in_118])
    # the window is a setting the model keeps (model.json's record_features)
    wide = boost.BoostSettings.from_dict({"groups": "rhythm", "rhythm_beats": 129}).params
    assert wide == {"step": 3, "groups": ["rhythm"], "rhythm_beats": 129}
    assert "rhythm_beats" not in boost.BoostSettings().params
    assert not np.allclose(record_features(x, ctx, wide)[:, 1], irregular)


@pytest.mark.slow
def test_trees_module_equals_sklearn(inter):
    from raytasks.nets.trees import from_sklearn

    x, y, ctx = inter
    feats = record_features(x, ctx, ALL)
    est = boost.fit(feats, y, TINY)
    model = from_sklearn(est)
    got = model(torch.from_numpy(feats)).numpy()
    assert got.shape == (len(x), 5)
    np.testing.assert_allclose(got, boost.raw_logits(est, feats), atol=1e-4)
    assert (got.argmax(1) == est.predict(feats)).all()


def test_record_bootstrap_intervals_cover_the_point_and_widen_with_spread():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 4000)
    records = np.repeat(np.arange(20), 200)
    good = np.where(rng.random(4000) < 0.9, y, 0)
    # the same beat-level accuracy, but concentrated: half the records all wrong
    bad_rec = np.where(records < 10, y, (y + 1) % 3)
    tight = record_bootstrap(y, good, records, n_boot=300)
    wide = record_bootstrap(y, bad_rec, records, n_boot=300)
    for r in (tight, wide):
        for v, lo, hi in r.values():
            assert lo <= v + 1e-9
            assert v <= hi + 1e-9
    width = {k: r["accuracy"][2] - r["accuracy"][1] for k, r in (("t", tight), ("w", wide))}
    assert width["w"] > 3 * width["t"]
    assert tight["accuracy"][0] == pytest.approx(field_metrics(confusion(y, good))["accuracy"])


@pytest.mark.slow
def test_boost_exports_a_model_evaluate_reads_and_files_skip(processed, tmp_path, monkeypatch):
    models = tmp_path / "models"
    monkeypatch.setenv("RAYTASKS_MODELS", str(models))
    monkeypatch.setenv("RAYTASKS_PROCESSED", str(processed))
    monkeypatch.setenv("RAYTASKS_RESULTS", str(tmp_path / "results"))
    res = CliRunner().invoke(
        main,
        [
            "boost",
            "--folds",
            "2",
            "--max-iter",
            "8",
            "--groups",
            ",".join(GROUPS),
            "--tag",
            "boost-tiny",
        ],
    )
    assert res.exit_code == 0, res.exception or res.output
    info = json.loads((models / "boost-tiny" / "model.json").read_text())
    assert info["arch"] == "trees"
    assert info["record_features"]["groups"] == list(GROUPS)
    assert "leave-records-out" in res.output
    res = CliRunner().invoke(main, ["evaluate", "--scheme", "inter", "--split", "test"])
    assert res.exit_code == 0, res.exception or res.output
    rows = pd.read_csv(tmp_path / "results" / "test" / "output.csv").set_index("modeltag")
    # evaluate's figures are the exported trees' own on DS2 features
    x, y, ctx = boost.load(processed, "inter", ("test",))
    from raytasks.models.saved import load_model, predict_logits

    model, _ = load_model(models / "boost-tiny")
    pred = predict_logits(model, record_features(x, ctx, info["record_features"])).argmax(1)
    assert rows.loc["boost-tiny", "Accuracy"] == pytest.approx((pred == y).mean())
    report = (tmp_path / "results" / "test" / "boost-tiny" / "report.md").read_text()
    assert "bootstrapping its 1 records" in report
    assert "S +P" in report
    # a hackathon file identifies no recording: the model is skipped, saying why
    frame = pd.DataFrame(x[:, :187], columns=FEATURES).assign(target=y.astype(float))
    frame.to_parquet(tmp_path / "heart_big_valid.parq")
    res = CliRunner().invoke(main, ["evaluate", "--file", str(tmp_path / "heart_big_valid.parq")])
    assert res.exit_code == 1, res.output
    assert "skipped boost-tiny" in res.output, res.output
