"""Bad input never deletes, never half-writes, never dumps a traceback (issue 11).

Each test gives a command what a careless or hurried teammate might, and checks the three
promises: exit status not 0, one line of error naming what to fix, and everything written
before byte-identical. None of these starts Ray: `init_ray` is made to fail, so a refusal
that came only after Ray started would show.
"""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from raytasks.cli import main
from raytasks.core import paths
from raytasks.data import FEATURES
from tests.conftest import copy_records, read_shards, snapshot


def invoke(args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def assert_refused(res, *needles):
    """Not 0, one line (the error), no traceback, and the line says what is wrong."""
    assert res.exit_code != 0, res.output
    assert isinstance(res.exception, SystemExit), repr(res.exception)  # not a traceback
    lines = res.output.strip().splitlines()
    assert len(lines) == 1, res.output
    assert lines[0].startswith("Error: "), res.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(autouse=True)
def no_ray(monkeypatch, tmp_path):
    """A refusal must come before any cluster: starting Ray here is a failure. Settings come
    from an empty config file, not the checkout's."""
    from raytasks.core import ray_connect

    def refuse():
        raise AssertionError("Ray was started")

    monkeypatch.setattr(ray_connect, "init_ray", refuse)
    (tmp_path / "config.toml").write_text("")
    monkeypatch.setenv("RAYTASKS_CONFIG", str(tmp_path / "config.toml"))
    for var in ("RAYTASKS_DEV", "RAYTASKS_PORT", "RAYTASKS_SCHEME", "RAYTASKS_PROCESSED"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def hack_file(processed, tmp_path) -> Path:
    frame = read_shards(sorted((processed / "intra" / "valid").glob("*.parquet")))
    out = frame[FEATURES].astype("float64")
    out["target"] = frame["target"].astype("float64")
    out.iloc[:600].to_parquet(tmp_path / "good.parq")
    return tmp_path / "good.parq"


# ---------------------------------------------------------------- 1, 2: names escape roots


@pytest.mark.parametrize("name", ["../victim", "ABS", "./intra", "intra/..", "--help", ".x"])
def test_import_name_cannot_escape_or_replace(tmp_path, hack_file, processed, name):
    out = tmp_path / "out"
    shutil.copytree(processed / "intra", out / "intra")
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "keep.txt").write_text("mine")
    name = str(tmp_path / "victim") if name == "ABS" else name
    before = snapshot(tmp_path)
    res = invoke(["data", "import", "--train", hack_file, "--name", name, "--out", out])
    assert_refused(res, "--name")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("tag", ["../victim", "ABS", "a/b", ".."])
def test_ensemble_tag_cannot_escape_models(tmp_path, monkeypatch, tag):
    models = tmp_path / "models"
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "keep.txt").write_text("mine")
    (models / "a").mkdir(parents=True)
    monkeypatch.setenv("RAYTASKS_MODELS", str(models))
    tag = str(tmp_path / "victim") if tag == "ABS" else tag
    before = snapshot(tmp_path)
    assert_refused(invoke(["ensemble", "a", "b", "--tag", tag]), "--tag")
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- 5: the dev tag


@pytest.mark.parametrize("dev", ["../../x", "/tmp/elsewhere", "--help", "a b", ""])
def test_train_refuses_a_dev_tag_that_is_not_a_name(tmp_path, monkeypatch, processed, dev):
    monkeypatch.setenv("RAYTASKS_RUNS", str(tmp_path / "runs"))
    (tmp_path / "config.toml").write_text(f"dev = {json.dumps(dev)}\n")
    res = invoke(["train", "--scheme-dir", processed / "intra", "--epochs", "1"])
    assert_refused(res, "dev tag", "config.toml")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("tag", ["../x", "/tmp/abs-model", "a/b"])
def test_train_tag_is_one_name(tmp_path, monkeypatch, processed, tag):
    monkeypatch.setenv("RAYTASKS_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("RAYTASKS_RUNS", str(tmp_path / "runs"))
    res = invoke(["train", "--scheme-dir", processed / "intra", "--epochs", "1", "--tag", tag])
    assert_refused(res, "--tag")
    assert not (tmp_path / "models").exists()
    assert not (tmp_path / "runs").exists()


def test_tune_experiment_cannot_reach_another_devs_runs(tmp_path, monkeypatch, processed):
    runs = tmp_path / "runs"
    (runs / "bob" / "bob-gru-1").mkdir(parents=True)
    monkeypatch.setenv("RAYTASKS_RUNS", str(runs))
    monkeypatch.setenv("RAYTASKS_PROCESSED", str(processed))
    monkeypatch.setenv("RAYTASKS_DEV", "alice")
    for flag in ("--export-only", "--resume"):
        res = invoke(["tune", "--space", "gru", flag, "--experiment", "../bob/bob-gru-1"])
        assert_refused(res, "--experiment")


# ---------------------------------------------------------------- 3, 4: damaged .atr


def atr_with_beat_past_end(data: bytes) -> bytes:
    """The record's annotations plus one N beat ten minutes past the end of its signal."""
    words = np.frombuffer(data, dtype="<u2")
    assert words[-1] == 0  # the end marker
    skip = 360 * 60 * 40
    extra = np.array([59 << 10, skip >> 16, skip & 0xFFFF, (1 << 10) | 1], dtype="<u2")
    return np.concatenate([words[:-1], extra, words[-1:]]).astype("<u2").tobytes()


@pytest.mark.parametrize("damage", ["truncated", "empty", "past_end"])
def test_damaged_atr_fails_naming_it_and_keeps_shards(tmp_path, mitdb, damage):
    recs = copy_records(tmp_path / "r", ["100", "101"])
    out = tmp_path / "out"
    assert invoke(["data", "build", "--records", recs, "--out", out]).exit_code == 0
    before = snapshot(out)
    atr = recs / "101.atr"
    data = atr.read_bytes()
    atr.write_bytes(
        {
            "truncated": data[: len(data) * 2 // 3],
            "empty": b"",
            "past_end": atr_with_beat_past_end(data),
        }[damage]
    )
    res = invoke(["data", "build", "--records", recs, "--out", out])  # no --force needed
    assert_refused(
        res, "101.atr", "outside the signal" if damage == "past_end" else "truncated or empty"
    )
    assert snapshot(out) == before
    # evaluate --records reads records the same way: same line, nothing written
    res = invoke(
        ["evaluate", "--records", recs, "--model", tmp_path / "m", "--out", tmp_path / "ev"]
    )
    assert_refused(res, "101.atr")
    assert not (tmp_path / "ev").exists()


# ---------------------------------------------------------------- 6: unwritable --out


def test_build_into_unwritable_out_is_one_line(tmp_path, slice_dir):
    (tmp_path / "file").write_text("not a folder")
    res = invoke(["data", "build", "--records", slice_dir, "--out", tmp_path / "file" / "p"])
    assert_refused(res, str(tmp_path / "file"))


# ---------------------------------------------------------------- 8: leftovers of killed runs


def test_next_build_removes_leftovers_of_killed_runs(tmp_path, processed, slice_dir):
    out = tmp_path / "out"
    shutil.copytree(processed, out)
    dead = subprocess.Popen(["true"])
    dead.wait()
    other_host = "0" * 8 if paths.HOST != "0" * 8 else "1" * 8
    leftovers = [
        out / (paths.stage_prefix("intra", pid=dead.pid) + "abc"),
        out / (paths.stage_prefix("inter", "old", dead.pid) + "xyz"),
        out / ".intra.tmp-k2j_3x",  # the old naming: removed once stale
        out / f".intra.tmp-{dead.pid}-{other_host}-q",
    ]  # another host's: once stale
    for d in leftovers:
        (d / "train").mkdir(parents=True)
        (d / "train" / "part-00000.parquet").write_bytes(b"x" * 1000)
    old = time.time() - paths.STALE_S - 60
    for d in leftovers[2:]:
        os.utime(d, (old, old))
    kept = [
        out / f".intra.tmp-{dead.pid}-{other_host}-fresh",  # may still be running there
        out / (paths.stage_prefix("intra", pid=os.getppid()) + "run"),
    ]  # running here
    for d in kept:
        d.mkdir()
    before = snapshot(out / "intra")
    res = invoke(
        [
            "data",
            "build",
            "--records",
            slice_dir,
            "--out",
            out,
            "--shard-rows",
            800,
            "--scheme",
            "all",
        ]
    )
    assert res.exit_code == 0, res.output
    staging = sorted(p.name for p in out.iterdir() if ".tmp-" in p.name or ".old-" in p.name)
    assert staging == sorted(d.name for d in kept)
    assert (out / "intra" / "build.json").exists()
    assert (out / "inter" / "build.json").exists()
    assert snapshot(out / "intra") == before  # current shards: not rebuilt


def test_staged_dir_failure_leaves_target_and_no_leftover(tmp_path):
    root = tmp_path / "root"
    dest = root / "d"
    dest.mkdir(parents=True)
    (dest / "f").write_text("old")

    def killed_halfway():
        with paths.staged_dir(dest) as tmp:
            (tmp / "f").write_text("new")
            raise RuntimeError("killed halfway")

    with pytest.raises(RuntimeError, match="killed halfway"):
        killed_halfway()
    assert snapshot(root) == {"d/f": b"old"}
    with paths.staged_dir(dest) as tmp:
        (tmp / "g").write_text("new")
    assert snapshot(root) == {"d/g": b"new"}


# ---------------------------------------------------------------- 9: search spaces

GRU = """arch = "gru"
[fixed]
schedule = "onecycle"
[space]
lr = { dist = "loguniform", low = 5e-4, high = 1e-2 }
loss = { dist = "choice", values = ["ce", "focal"] }
[space.model]
hidden = { dist = "qrandint", low = 32, high = 96, q = 16 }
pooling = { dist = "choice", values = ["attention", "mean"] }
dropout = { dist = "uniform", low = 0.0, high = 0.4 }
[[points_to_evaluate]]
lr = 3e-3
model = { hidden = 64, pooling = "attention" }
"""

SPACE_HOLES = {  # what a teammate writes -> (line at fault, words of the error)
    "q0": (("q = 16", "q = 0"), 8, "q >= 1"),
    "q_string": (("q = 16", 'q = "16"'), 8, "q >= 1"),
    "low_true": (("low = 5e-4", "low = true"), 5, "numbers"),
    "point_outside": (('pooling = "attention" }', 'pooling = "last" }'), 13, "can draw"),
    "loss_hinge": (('["ce", "focal"]', '["ce", "hinge"]'), 6, "hinge"),
    "pooling_maxx": (('"attention", "mean"]', '"attention", "maxx"]'), 9, "maxx"),
    "lr_fast": (
        (
            'lr = { dist = "loguniform", low = 5e-4, high = 1e-2 }',
            'lr = { dist = "choice", values = ["fast"] }',
        ),
        5,
        "lr must be a number",
    ),
    "epochs_negative": (('schedule = "onecycle"', "epochs = -3"), 3, "epochs"),
    "hidden_negative": (("low = 32", "low = -16"), 8, "hidden"),
    "dropout_1.9": (("high = 0.4", "high = 1.9"), 10, "dropout"),
    # the point's `lr` is the second key of that name: its own line, not the first's
    "point_lr_out_of_range": (("lr = 3e-3", "lr = 0.5"), 12, "can draw"),
}


@pytest.mark.parametrize("case", sorted(SPACE_HOLES))
def test_space_hole_refused_at_its_line_before_ray(tmp_path, monkeypatch, processed, case):
    (old, new), line, needle = SPACE_HOLES[case]
    assert old in GRU
    path = tmp_path / f"{case}.toml"
    path.write_text(GRU.replace(old, new, 1))
    monkeypatch.setenv("RAYTASKS_DEV", "tester")
    monkeypatch.setenv("RAYTASKS_PROCESSED", str(processed))
    assert_refused(invoke(["tune", "--space", path]), f"{path}:{line}:", needle)


@pytest.mark.parametrize(
    ("archs", "needle"), [('"gru"', "must be a list"), ('["gru", "vgg"]', "vgg")]
)
def test_conditional_space_archs_checked_naming_the_file(tmp_path, monkeypatch, archs, needle):
    path = tmp_path / "mine.toml"
    path.write_text(f"# every family\narchs = {archs}\n")
    monkeypatch.setenv("RAYTASKS_DEV", "tester")
    assert_refused(invoke(["tune", "--space", path]), f"{path}:2:", needle)


def test_train_settings_checked_by_type_and_range(tmp_path, processed):
    cfg = tmp_path / "t.toml"
    for text, needle in (
        ("epochs = -3\n", "epochs"),
        ('lr = "fast"\n', "lr"),
        ("[model]\nhidden = -16\n", "hidden"),
        ("epochs = [\n", "TOML"),
    ):
        cfg.write_text('arch = "gru"\n' + text)
        res = invoke(["train", "--config", cfg, "--scheme-dir", processed / "intra"])
        assert_refused(res, str(cfg), needle)


# ---------------------------------------------------------------- 10: the smaller ones


@pytest.mark.parametrize("value", [np.inf, 1e30, -3.0])
def test_import_and_evaluate_refuse_values_outside_a_normalised_beat(tmp_path, hack_file, value):
    frame = pd.read_parquet(hack_file)
    frame.iloc[17, 40] = value
    frame.to_parquet(tmp_path / "bad.parq")
    res = invoke(["data", "import", "--train", tmp_path / "bad.parq", "--out", tmp_path / "o"])
    assert_refused(res, "bad.parq", "row 17")
    res = invoke(
        [
            "evaluate",
            "--file",
            tmp_path / "bad.parq",
            "--model",
            tmp_path / "m",
            "--out",
            tmp_path / "ev",
        ]
    )
    assert_refused(res, "bad.parq", "row 17")
    assert not (tmp_path / "o").exists()
    assert not (tmp_path / "ev").exists()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("port = true\n", "'port'"),
        ("port = 80\n", "'port'"),
        ("port = 99999\n", "'port'"),
        ("port = 8265.5\n", "'port'"),
        ("processed = 5\n", "'processed'"),
        ('dev = "--help"\n', "dev tag"),
        ("records = []\n", "'records'"),
    ],
)
def test_bad_settings_file_is_one_line(tmp_path, processed, text, needle):
    (tmp_path / "config.toml").write_text(text)
    res = invoke(["data", "describe", "--processed", processed, "--out", tmp_path / "plots"])
    assert_refused(res, needle)
    assert not (tmp_path / "plots").exists()


def test_missing_raytasks_config_is_an_error(tmp_path, processed):
    res = invoke(
        ["data", "describe", "--processed", processed, "--out", tmp_path / "plots"],
        env={"RAYTASKS_CONFIG": str(tmp_path / "typo.toml")},
    )
    assert_refused(res, "RAYTASKS_CONFIG", "typo.toml")


def test_changed_sha256sums_noticed_without_force(tmp_path, mitdb):
    recs = copy_records(tmp_path / "r", ["100"])
    shutil.copy(mitdb / "SHA256SUMS.txt", recs / "SHA256SUMS.txt")
    out = tmp_path / "out"
    assert invoke(["data", "build", "--records", recs, "--out", out]).exit_code == 0
    before = snapshot(out)
    sums = (recs / "SHA256SUMS.txt").read_text().splitlines()
    sums = [("0" * 64 + " 100.dat") if ln.endswith(" 100.dat") else ln for ln in sums]
    (recs / "SHA256SUMS.txt").write_text("\n".join(sums) + "\n")
    assert_refused(invoke(["data", "build", "--records", recs, "--out", out]), "100.dat", "SHA256")
    assert snapshot(out) == before


def test_fewer_records_do_not_silently_replace_a_fuller_build(tmp_path, processed, mitdb):
    out = tmp_path / "out"
    shutil.copytree(processed / "intra", out / "intra")
    before = snapshot(out)
    recs = copy_records(tmp_path / "r", ["100"])  # 1 V beat: valid/test get none
    res = invoke(["data", "build", "--records", recs, "--out", out])
    assert_refused(res, "3 records", "208", "--force")
    assert snapshot(out) == before
    # --force replaces it, and says which classes the small build's splits lack
    res = invoke(["data", "build", "--records", recs, "--out", out, "--force"])
    assert res.exit_code == 0, res.output
    assert "warning: intra/" in res.output
    assert "has no" in res.output
    meta = json.loads((out / "intra" / "build.json").read_text())
    assert meta["records"] == ["100"]
    assert set(read_shards(sorted((out / "intra" / "train").glob("*.parquet")))["record"]) == {
        "100"
    }


def test_debug_flag_shows_the_traceback(tmp_path, hack_file):
    res = invoke(
        [
            "--debug",
            "data",
            "import",
            "--train",
            hack_file,
            "--name",
            "../x",
            "--out",
            tmp_path / "o",
        ]
    )
    assert res.exit_code != 0
    assert isinstance(res.exception, paths.PathError)
