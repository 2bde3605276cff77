"""TorchTrainer on real shards: metrics, checkpoint -> export -> reload, fault tolerance."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from raytasks.cli import main
from raytasks.core.metrics import METRIC_NAMES
from raytasks.data import FEATURES, RR_FEATURES
from raytasks.data.stream import load_split, split_files
from raytasks.models import saved
from raytasks.nets import create_model
from raytasks.training import train
from raytasks.training.settings import FIELDS, TrainConfigError, TrainSettings


def tiny(processed, **over):
    return {
        "arch": "cnn1d",
        "model": {"channels": [8, 16]},
        "data": str(processed / "intra"),
        "epochs": 1,
        "batch_size": 128,
        "workers": 2,
        "cpus_per_worker": 0.5,
        **over,
    }


def keeping_last(keep: Path):
    """(reports, keep, report): a fit_local report hook that records every epoch's metrics
    and keeps the latest checkpoint folder at `keep`."""
    reports = []

    def report(metrics, state_dir):
        reports.append(metrics)
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(state_dir, keep)

    return reports, keep, report


def count_rows(folder: str):
    """A wrap_batches hook: each rank writes how many rows it trained on per epoch."""
    from pathlib import Path

    def wrap(batches, rank):
        def counted(epoch):
            rows = 0
            for batch in batches(epoch):
                rows += len(batch["y"])
                yield batch
            Path(folder, f"rank{rank}-epoch{epoch}").write_text(str(rows))

        return counted

    return wrap


def test_two_workers_report_and_checkpoint_reloads(ray_cluster, processed, tmp_path):
    seen = tmp_path / "seen"
    seen.mkdir()
    best, metrics, _ = train.fit(
        tiny(processed), "two-workers", tmp_path / "runs", wrap_batches=count_rows(str(seen))
    )
    # two workers trained, each on its equal share of the epoch's resampled stream
    shares = {p.name: int(p.read_text()) for p in seen.iterdir()}
    assert sorted(shares) == ["rank0-epoch0", "rank1-epoch0"], shares
    _, train_y = load_split(split_files(processed / "intra", "train"))
    assert shares["rank0-epoch0"] == shares["rank1-epoch0"]  # DDP ranks take equal steps
    assert 0.8 * len(train_y) < sum(shares.values()) < 1.2 * len(train_y)
    for name in METRIC_NAMES + [f"TP_{c}" for c in range(3)]:
        assert 0.0 <= metrics[name] <= 1.0, name
    assert metrics["epoch"] == 0
    assert metrics["train_loss"] > 0
    out = train.export(best, metrics, tiny(processed), tmp_path / "models" / "tiny")
    info = json.loads((out / "model.json").read_text())
    assert info["arch"] == "cnn1d"
    assert info["data"]["scheme"] == "intra"
    assert info["valid_metrics"]["F2scoremacro"] == metrics["F2scoremacro"]
    # the exported weights predict exactly what the checkpoint predicts
    with best.as_directory() as d:
        state = torch.load(f"{d}/state.pt", weights_only=False)
    ref = create_model("cnn1d", channels=[8, 16])
    ref.load_state_dict(state["model"])
    loaded, _ = saved.load_model(out)
    x, y = load_split(split_files(processed / "intra", "valid"))
    a, b = saved.predict_logits(ref, x), saved.predict_logits(loaded, x)
    np.testing.assert_array_equal(a, b)
    # and reproduce the reported valid metrics
    assert (a.argmax(1) == y).mean() == pytest.approx(metrics["Accuracy"])


def kill_once(marker: str, snapshot: str, at: tuple):
    """A wrap_batches hook: rank at[2] dies (os._exit) at step at[1] of epoch at[0], once,
    after Ray Train's controller has registered the previous epoch's checkpoint (it records
    reports asynchronously: a worker killed right after reporting could die before, and the
    retry would then start from scratch)."""
    import os
    import time
    from pathlib import Path

    def wrap(batches, rank):
        def wrapped(epoch):
            for step, batch in enumerate(batches(epoch)):
                if (epoch, step, rank) == at and not Path(marker).exists():
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline and not (
                        Path(snapshot).exists()
                        and f"epoch_{epoch - 1:04d}" in Path(snapshot).read_text()
                    ):
                        time.sleep(0.2)
                    Path(marker).write_text(f"killed epoch {epoch} step {step}")
                    os._exit(1)
                yield batch

        return wrapped

    return wrap


def test_worker_killed_mid_epoch_resumes_from_checkpoint(ray_cluster, processed, tmp_path):
    marker = tmp_path / "killed"
    # rank 1 dies at step 3 of epoch 1, once Ray Train has registered epoch 0's checkpoint
    snapshot = tmp_path / "runs" / "fault" / "checkpoint_manager_snapshot.json"
    hook = kill_once(str(marker), str(snapshot), (1, 3, 1))
    _, _, result = train.fit(
        tiny(processed, epochs=3), "fault", tmp_path / "runs", wrap_batches=hook
    )
    assert marker.read_text() == "killed epoch 1 step 3", "the failure was never injected"
    last = result.metrics
    assert last["epoch"] == 2
    # the restarted attempt began at epoch 1 (after epoch 0's checkpoint), not from scratch
    assert last["start_epoch"] == 1


def test_rr_model_reads_rr_features_and_refuses_data_without_them(
    ray_cluster, processed, tmp_path, monkeypatch
):
    from ray.train import Checkpoint

    reports, keep, report = keeping_last(tmp_path / "ckpt")
    cfg = tiny(processed, rr=True, workers=1)
    train.fit_local(dict(cfg), report)
    out = train.export(
        Checkpoint.from_directory(keep), reports[-1], cfg, tmp_path / "models" / "rr-tiny"
    )
    model, info = saved.load_model(out)
    assert info["rr"] is True
    assert model.input_width == 187 + len(RR_FEATURES)
    x, y = load_split(split_files(processed / "intra", "valid"), rr=True)
    logits = saved.predict_logits(model, x)
    assert (logits.argmax(1) == y).mean() == pytest.approx(reports[-1]["Accuracy"])
    flat = x.copy()
    flat[:, 187:] = 1.0  # every beat on time: the predictions must change
    assert np.abs(saved.predict_logits(model, flat) - logits).max() > 1e-3
    # evaluation gives it the RR columns of built shards, and refuses files without them
    monkeypatch.setenv("RAYTASKS_PROCESSED", str(processed))
    results = tmp_path / "results"
    res = CliRunner().invoke(main, ["evaluate", "--model", str(out), "--out", str(results)])
    assert res.exit_code == 0, res.output
    assert pd.read_csv(results / "output.csv")["Accuracy"][0] == pytest.approx(
        reports[-1]["Accuracy"]
    )
    beats = pd.DataFrame(x[:, :187], columns=FEATURES).assign(target=y)
    beats.to_parquet(tmp_path / "heart_big_valid.parq")
    res = CliRunner().invoke(
        main,
        [
            "evaluate",
            "--model",
            str(out),
            "--file",
            str(tmp_path / "heart_big_valid.parq"),
            "--out",
            str(tmp_path / "external"),
        ],
    )
    assert res.exit_code == 1, res.output
    assert "reads RR-interval features" in res.output, res.output
    assert not (tmp_path / "external" / "output.csv").exists()


def test_bad_training_settings_refused():
    make = TrainSettings.from_dict
    with pytest.raises(TrainConfigError, match="unknown training setting"):
        make({"epoch": 3})
    with pytest.raises(TrainConfigError, match="unknown training setting"):
        make({"_checkpoint": None})  # no private keys ride along any more
    with pytest.raises(TrainConfigError, match="loss"):
        make({"loss": "hinge"})
    with pytest.raises(TrainConfigError, match="rr_beat_dropout"):
        make({"rr": True, "rr_beat_dropout": 1.0})
    with pytest.raises(TrainConfigError, match="unknown config field"):
        make({"arch": "gru", "model": {"hiden": 3}})
    with pytest.raises(TrainConfigError, match="model must be a table"):
        make({"model": [1]})
    # every setting but the two tables and the free-form path has choices or limits
    for f in FIELDS:
        meta = f.metadata
        assert meta["help"], f.name
        assert meta["choices"] or meta["limits"] or f.name in ("model", "data"), f.name
    for key, bad in (
        ("prefetch", 0),
        ("gpus_per_worker", 0.0),
        ("gpu", 1),
        ("metric", "F3"),
        ("placement", "pack"),
        ("aug_shift", 187),
        ("epochs", 2.0),
    ):
        with pytest.raises(TrainConfigError, match=key):
            make({key: bad})


def test_cli_train_exports_model(ray_cluster, processed, tmp_path, monkeypatch):
    monkeypatch.setenv("RAYTASKS_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("RAYTASKS_RUNS", str(tmp_path / "runs"))
    cfg_file = tmp_path / "train.toml"
    cfg_file.write_text('arch = "gru"\nepochs = 1\nbatch_size = 256\n[model]\nhidden = 8\n')
    # the old spellings (--data, --model KEY=VALUE, --rr false) still work, hidden in --help
    res = CliRunner().invoke(
        main,
        [
            "train",
            "--config",
            str(cfg_file),
            "--data",
            str(processed / "intra"),
            "--model",
            "bidirectional=false",
            "-m",
            "hidden=6",
            "--rr",
            "false",
            "--cpus-per-worker",
            "1",
            "--tag",
            "cli-gru",
        ],
    )
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "models" / "cli-gru" / "model.json").read_text())
    assert info["arch"] == "gru"
    assert info["model"]["hidden"] == 6
    assert info["model"]["bidirectional"] is False
    assert info["train"]["cpus_per_worker"] == 1.0
    assert "F2scoremacro" in res.output


def test_gpu_flag_without_a_gpu_fails_in_one_line(ray_cluster, processed, tmp_path, monkeypatch):
    if ray_cluster.cluster_resources().get("GPU", 0):
        pytest.skip("this cluster has a GPU")
    monkeypatch.setenv("RAYTASKS_RUNS", str(tmp_path / "runs"))
    res = CliRunner().invoke(
        main,
        [
            "train",
            "--arch",
            "cnn1d",
            "--scheme-dir",
            str(processed / "intra"),
            "--gpu",
            "--no-export",
        ],
    )
    assert res.exit_code == 1, res.exception
    assert isinstance(res.exception, SystemExit), res.exception
    assert "--gpu: no GPU available (the Ray cluster has 0" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # refused before anything started
    if not torch.cuda.is_available():  # a Tune trial's own process checks torch too
        with pytest.raises(TrainConfigError, match="no CUDA device"):
            train.fit_local(tiny(processed, workers=1, gpu=True), lambda *a: None)
