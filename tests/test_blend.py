"""An ensemble whose members read different inputs: a patient-adaptive network (beat, RR,
deviation from its record's template) and boosted trees (features of the beat's whole
record), weighted; built, evaluated and run on a recording like any model."""

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from raytasks.cli import main
from raytasks.data import FEATURES, RR_FEATURES
from raytasks.data.features import GROUPS, record_features
from raytasks.data.stream import load_split, split_files
from raytasks.models import saved
from raytasks.recordings.predict import default_model
from raytasks.training import boost
from tests.conftest import train_tiny, use_models
from tests.test_predict import write_slice

TREES = {"step": 3, "groups": list(GROUPS)}


@pytest.fixture(scope="module")
def members(ray_cluster, processed, tmp_path_factory):
    """models/net (a 1-epoch template cnn1d) and models/trees (8 boosting rounds), inter."""
    root = tmp_path_factory.mktemp("blend_models")
    cfg = {
        "arch": "cnn1d",
        "model": {"channels": [8, 16]},
        "data": str(processed / "inter"),
        "epochs": 1,
        "batch_size": 128,
        "rr": True,
        "template": True,
    }
    train_tiny(cfg, root / "net")
    x, y, ctx = boost.load(processed, "inter", ("train", "valid"))
    settings = boost.HGB | {"max_iter": 8, "max_leaf_nodes": 7}
    est = boost.fit(record_features(x, ctx, TREES), y, settings)
    boost.export(est, TREES, settings, root / "trees", None, y, "inter", "test")
    return root


@pytest.fixture
def env(monkeypatch, processed, members, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(members, models)
    use_models(monkeypatch, models, processed, tmp_path / "results")
    return models


def blend(*extra):
    return CliRunner().invoke(main, ["ensemble", "net", "trees", "--tag", "blend", *extra])


def by_hand(models, x, ctx, w_net):
    """The weighted average each member's own input gives: what the blend must equal."""
    net, _ = saved.load_model(models / "net")
    trees, info = saved.load_model(models / "trees")
    p_net = saved.predict_logits(net, x[:, : net.input_width])
    beat_rr = x[:, : 187 + len(RR_FEATURES)]
    p_trees = saved.predict_logits(trees, record_features(beat_rr, ctx, info["record_features"]))
    probs = w_net * torch.from_numpy(p_net).softmax(-1)
    probs += (1 - w_net) * torch.from_numpy(p_trees).softmax(-1)
    return probs.log().numpy()


def test_blend_weights_each_members_own_inputs_and_evaluates(env, processed, tmp_path):
    res = blend("--weights", "0.75,0.25")
    assert res.exit_code == 0, (res.output, res.exception)
    model, info = saved.load_model(env / "blend")
    assert info["weights"] == [0.75, 0.25]
    # the trees were fitted on the valid split: its figures are in-sample, and say so
    assert saved.valid_in_sample(info)
    assert "trees" in info["valid_is"]
    files = split_files(processed / "inter", "test")
    x, y = load_split(files, rr=True, template=True)
    ctx = pq.ParquetDataset(files).read(columns=["record", "sample"]).to_pandas()
    want = by_hand(env, x, ctx, 0.75)
    got = saved.predict_logits(model, saved.model_inputs(model, x, ctx))
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert not np.allclose(want, by_hand(env, x, ctx, 0.5), atol=1e-3)  # weights matter
    res = CliRunner().invoke(main, ["evaluate", "--scheme", "inter", "--split", "test"])
    assert res.exit_code == 0, (res.output, res.exception)
    rows = pd.read_csv(tmp_path / "results" / "test" / "output.csv").set_index("modeltag")
    assert rows.loc["blend", "Accuracy"] == pytest.approx((want.argmax(1) == y).mean())
    # a hackathon file has neither RR intervals nor records: skipped, saying why
    frame = pd.DataFrame(x[:, :187], columns=FEATURES).assign(target=y.astype(float))
    frame.to_parquet(tmp_path / "heart_big_valid.parq")
    res = CliRunner().invoke(main, ["evaluate", "--file", str(tmp_path / "heart_big_valid.parq")])
    assert "skipped blend" in res.output, res.output


def test_predict_runs_the_blend_on_a_recording(env, mitdb, tmp_path):
    """At the reference peaks, predict classifies a recording as evaluate does its beats:
    the trees' record features come from the whole recording, read without labels."""
    assert blend("--weights", "0.75,0.25").exit_code == 0
    write_slice(mitdb, "232", tmp_path / "rec", minutes=2)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        main,
        [
            *("predict", "--records", str(tmp_path / "rec"), "--model", str(env / "blend")),
            *("--out", str(out), "--peaks", "atr", "--workers", "1"),
        ],
    )
    assert res.exit_code == 0, (res.output, res.exception)
    beats = pd.read_csv(out / "232" / "beats.csv")
    res = CliRunner().invoke(
        main,
        ["evaluate", "--records", str(tmp_path / "rec"), "--model", str(env / "blend")],
    )
    assert res.exit_code == 0, (res.output, res.exception)
    from raytasks.data.beats import record_beats

    frame = record_beats(tmp_path / "rec", "232")
    x = frame[FEATURES + RR_FEATURES].to_numpy(np.float32)
    assert len(beats) == len(frame)
    want = (by_hand(env, *with_template(x, frame), 0.75) + offsets(env)).argmax(1)
    assert (beats["class"].to_numpy() == want).mean() > 0.99


def with_template(x, frame):
    from raytasks.data.features import with_deviations

    ctx = frame[["record", "sample"]].reset_index(drop=True)
    return with_deviations(x, ctx["record"].to_numpy(), ctx["sample"].to_numpy()), ctx


def offsets(models):
    return saved.offsets_of(saved.read_info(models / "blend"))


def test_in_sample_blend_is_never_the_default_and_bad_weights_are_refused(env):
    assert blend("--weights", "0.75,0.25").exit_code == 0
    info = saved.read_info(env / "blend")
    info["valid_metrics"]["F2scoremacro"] = 1.0  # flattered: still not chosen
    saved.write_info(env / "blend", info)
    assert default_model(env) != env / "blend"
    before = json.loads((env / "blend" / "model.json").read_text())
    for weights, says in (("0.5", "one weight"), ("1,-1", "one weight"), ("a,b", "numbers")):
        res = blend("--weights", weights)
        assert res.exit_code != 0, res.output
        assert says in res.output, res.output
    assert json.loads((env / "blend" / "model.json").read_text()) == before
