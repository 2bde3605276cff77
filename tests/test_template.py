"""Patient-adaptive inputs for the networks: each beat's deviation from its record's
template (the median beat of its recording), the same on every path that feeds a model:
the Ray Data stream, evaluation's arrays, and a recording in `predict`."""

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from raytasks.cli import main
from raytasks.data import BEAT_LEN, RR_FEATURES, DataError
from raytasks.data.features import (
    TEMPLATE_BEATS,
    deviations,
    split_templates,
    templates_of,
    with_deviations,
)
from raytasks.data.stream import load_split, read_split, row_keys, split_files
from raytasks.models import saved
from raytasks.nets import create_model, input_width, list_models
from raytasks.training import train
from tests.test_train import keeping_last, tiny

WIDTH = 2 * BEAT_LEN + len(RR_FEATURES)


def test_a_template_is_the_median_of_a_key_chosen_sample_whatever_the_order(processed):
    files = split_files(processed / "intra", "train")
    found = split_templates(files)
    arrays = read_split(files, keys=True)
    records = pd.concat(pd.read_parquet(f, columns=["record"]) for f in files)["record"].to_numpy()
    beats = np.asarray(arrays["x"])
    assert set(found) == set(np.unique(records))
    # the same rows in another order and other chunks give the same templates
    perm = np.random.default_rng(0).permutation(len(beats))
    chunks = [
        (beats[perm][i : i + 999], records[perm][i : i + 999], arrays["key"][perm][i : i + 999])
        for i in range(0, len(perm), 999)
    ]
    again = templates_of(chunks)
    for rec, t in found.items():
        np.testing.assert_array_equal(again[rec], t)
        rows = records == rec
        # a template is a beat-shaped median: close to the full median, not the mean of all
        full = np.median(beats[rows], axis=0)
        assert np.abs(t - full).mean() < 0.02, rec
        assert rows.sum() > TEMPLATE_BEATS  # the sample is a sample, not every beat


def test_deviations_follow_their_record_and_refuse_an_unknown_one():
    rng = np.random.default_rng(1)
    beats = rng.random((6, BEAT_LEN)).astype(np.float32)
    records = np.array(["a", "b", "a", "b", "a", "b"])
    t = {"a": np.zeros(BEAT_LEN, np.float32), "b": np.ones(BEAT_LEN, np.float32)}
    dev = deviations(beats, records, t)
    np.testing.assert_allclose(dev[0], beats[0])
    np.testing.assert_allclose(dev[1], beats[1] - 1)
    with pytest.raises(DataError, match=r"no template for record\(s\) \['c'\]"):
        deviations(beats, np.array(["a", "c", "a", "b", "a", "b"]), t)


@pytest.mark.parametrize("rr", [False, True])
def test_every_family_reads_the_deviation_as_a_second_channel(rr):
    for arch in list_models():
        model = create_model(arch, rr=rr, template=True).eval()
        x = torch.rand(4, WIDTH)
        out = model(x)
        assert out.shape == (4, 5), arch
        moved = x.clone()
        moved[:, BEAT_LEN + len(RR_FEATURES) :] += 0.5  # only the deviation channel changes
        assert (model(moved) - out).abs().max() > 1e-5, arch
        if not rr:  # the RR columns sit in x but a model without rr ignores them
            moved = x.clone()
            moved[:, BEAT_LEN : BEAT_LEN + len(RR_FEATURES)] += 5
            torch.testing.assert_close(model(moved), out)
    assert input_width(False, True) == input_width(True, True) == WIDTH


def test_a_template_model_trains_on_ray_data_and_reads_the_same_inputs_everywhere(
    ray_cluster, processed, tmp_path, monkeypatch
):
    from ray.train import Checkpoint

    reports, keep, report = keeping_last(tmp_path / "ckpt")
    cfg = tiny(processed, rr=True, workers=1) | {"template": True}
    train.fit_local(dict(cfg), report)
    out = train.export(Checkpoint.from_directory(keep), reports[-1], cfg, tmp_path / "tmpl")
    model, info = saved.load_model(out)
    assert info["template"] is True
    assert model.input_width == WIDTH
    # the valid arrays evaluation builds give the accuracy the training stream reported
    x, y = load_split(split_files(processed / "intra", "valid"), rr=True, template=True)
    assert x.shape[1] == WIDTH
    logits = saved.predict_logits(model, x)
    assert (logits.argmax(1) == y).mean() == pytest.approx(reports[-1]["Accuracy"])
    # the deviations matter to it
    flat = x.copy()
    flat[:, BEAT_LEN + len(RR_FEATURES) :] = 0
    assert np.abs(saved.predict_logits(model, flat) - logits).max() > 1e-3
    monkeypatch.setenv("RAYTASKS_PROCESSED", str(processed))
    res = CliRunner().invoke(main, ["evaluate", "--model", str(out), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert pd.read_csv(tmp_path / "r" / "output.csv")["Accuracy"][0] == pytest.approx(
        reports[-1]["Accuracy"]
    )


def test_with_deviations_is_per_record_and_order_free():
    rng = np.random.default_rng(2)
    x = rng.random((40, BEAT_LEN + len(RR_FEATURES))).astype(np.float32)
    records = np.array(["100", "232"] * 20)
    samples = np.arange(40) * 300
    out = with_deviations(x, records, samples)
    perm = rng.permutation(40)
    np.testing.assert_allclose(with_deviations(x[perm], records[perm], samples[perm]), out[perm])
    t = templates_of([(x[:, :BEAT_LEN], records, row_keys(records, samples))])
    np.testing.assert_allclose(
        out[records == "232", -BEAT_LEN:], x[records == "232", :BEAT_LEN] - t["232"]
    )


def test_the_adaptive_space_opens_its_datasets_with_deviations():
    from raytasks.tune.search import run_settings
    from raytasks.tune.spaces import load_space

    space = load_space("adaptive")
    assert space.may_set("template")
    assert not load_space("all-rr").may_set("template")
    point = {"arch": "gru", "lr": 3e-3}
    settings = run_settings(space, {**space.archs["gru"].points[0], **point}, {})
    assert settings.template
    assert settings.rr
