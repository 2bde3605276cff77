"""Team storage on a local folder, a pyarrow SubTreeFileSystem and an S3 server (moto's):
per-dev layout, rows of searches finishing at once, the merged leaderboard, pull; and the
cluster's process record and settings hygiene (no Ray needed)."""

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest

from raytasks.core import config
from raytasks.core.paths import PathError
from raytasks.core.storage import (
    FOLDERS,
    Storage,
    for_job,
    local_runs,
    merge_rows,
    run_dev,
    team_rows,
    write_results,
)
from raytasks.team import cluster as rc
from raytasks.tune.leaderboard import COLUMNS as LEADERBOARD_COLUMNS
from raytasks.tune.leaderboard import sync as sync_leaderboard


def make_store(kind: str, tmp_path: Path, request) -> Storage:
    if kind == "local":
        return Storage.from_setting(str(tmp_path / "team"))
    if kind == "s3":  # moto's S3 server, a prefix of the team bucket per test
        s3 = request.getfixturevalue("s3_env")
        return Storage.from_setting(f"s3://{s3.bucket}/{tmp_path.name}")
    (tmp_path / "base").mkdir()
    return Storage(pafs.SubTreeFileSystem(str(tmp_path / "base"), pafs.LocalFileSystem()), "team")


def rows_for(dev: str, experiment: str, n: int, f1: float = 0.5) -> pd.DataFrame:
    rows = [
        {c: 0.0 for c in LEADERBOARD_COLUMNS}
        | {
            "dev": dev,
            "experiment": experiment,
            "trial_id": f"t{i}",
            "arch": "cnn1d",
            "epochs": 1,
            "best_epoch": 1,
            "F1scoremacro": f1 + i / 100,
            "config": "{}",
        }
        for i in range(n)
    ]
    return pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS)


@pytest.mark.parametrize("kind", ["local", "subtree", "s3"])
def test_searches_finishing_at_once_lose_no_row(kind, tmp_path, request):
    store = make_store(kind, tmp_path, request)
    results = tmp_path / "results"
    start = threading.Barrier(8)

    def finish(dev, i):
        start.wait()
        exp = f"{dev}-cnn1d-{i}"
        write_results(
            store.dev(dev),
            exp,
            rows_for(dev, exp, 3),
            None,
            {"dev": dev, "experiment": exp, "models": [], "trials": 3},
        )
        sync_leaderboard(team_rows(store), results)

    threads = [
        threading.Thread(target=finish, args=(dev, i)) for dev in ("alice", "bob") for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.listdir() == ["alice", "bob"]
    assert len(store.listdir("bob", "results")) == 4
    team = team_rows(store)
    assert len(team) == 24
    assert sorted(team["dev"].unique()) == ["alice", "bob"]
    board = pd.read_csv(results / "leaderboard.csv")
    assert len(board) == 24  # every search's rows, whichever finished last
    assert all(e.startswith(f"{d}-") for d, e in zip(board["dev"], board["experiment"]))
    assert (results / "leaderboard.png").stat().st_size > 10_000
    # merging again adds nothing; earlier local rows (not in storage) stay
    old = rows_for("ship", "ship-all-1", 2)
    assert len(merge_rows(old, merge_rows(board, team))) == 26
    assert not [
        p
        for p in store.fs.get_file_info(pafs.FileSelector(store.root, recursive=True))
        if ".tmp-" in p.path
    ]


@pytest.mark.parametrize("kind", ["local", "subtree", "s3"])
def test_folders_round_trip(kind, tmp_path, request):
    store = make_store(kind, tmp_path, request)
    src = tmp_path / "model"
    src.mkdir()
    (src / "model.json").write_text('{"tag": "alice-gru"}')
    (src / "sub").mkdir()
    (src / "sub" / "w.pt").write_bytes(b"\0" * 1000)
    store.dev("alice").put_dir(src, "models", "alice-gru")
    (src / "model.json").write_text('{"tag": "alice-gru", "v": 2}')
    store.dev("alice").put_dir(src, "models", "alice-gru")  # replaces
    dest = tmp_path / "models" / "alice-gru"
    dest.mkdir(parents=True)
    (dest / "stale.txt").write_text("old")
    store.dev("alice").get_dir(dest, "models", "alice-gru")
    assert json.loads((dest / "model.json").read_text())["v"] == 2
    assert (dest / "sub" / "w.pt").stat().st_size == 1000
    assert not (dest / "stale.txt").exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["alice-gru"]  # no staging left


@pytest.mark.parametrize("kind", ["local", "subtree"])
def test_the_dev_tag_becomes_a_storage_path_in_one_place(kind, tmp_path, request):
    store = make_store(kind, tmp_path, request)
    area = store.dev("alice")
    assert FOLDERS == ("runs", "models", "results")
    assert area.runs("alice-all-1") == f"{store.root}/alice/runs/alice-all-1"
    assert area.models("alice-all") == f"{store.root}/alice/models/alice-all"
    assert area.results("e", "job.json") == f"{store.root}/alice/results/e/job.json"
    area.write_bytes(b"{}", "runs", "alice-all-1", "search.json")
    on_disk = tmp_path / ("team" if kind == "local" else "base/team")
    assert (on_disk / "alice" / "runs" / "alice-all-1" / "search.json").read_bytes() == b"{}"
    assert area.listdir("runs") == ["alice-all-1"]
    assert area.exists("runs", "alice-all-1")
    assert not store.dev("bob").exists("runs", "alice-all-1")
    assert (area.local_path() is None) == (kind == "subtree")
    for bad in ("../bob", "a/b", ".snapshot", "-x", ""):
        with pytest.raises(PathError, match="dev tag"):
            store.dev(bad)
    with pytest.raises(ValueError, match="no folder 'wandb'"):
        area.path("wandb")
    (on_disk / ".snapshot" / "results").mkdir(parents=True)  # an NFS folder is no dev's
    assert [a.dev for a in store.devs()] == ["alice"]


def test_whose_run_it_is_placeholder_rule(tmp_path, monkeypatch):
    monkeypatch.delenv("RAYTASKS_DEV", raising=False)
    (tmp_path / "empty.toml").write_text("")  # defaults: the placeholder dev tag
    monkeypatch.setenv("RAYTASKS_CONFIG", str(tmp_path / "empty.toml"))
    untagged = config.load(runs=str(tmp_path / "runs"))
    assert untagged["dev"] == config.PLACEHOLDER_DEV
    with pytest.raises(config.ConfigError, match="set your dev tag"):
        run_dev(untagged)  # a search or a job needs an owner
    assert run_dev(untagged, local=True) == "local"  # a local `raytasks train` does not
    assert local_runs(untagged) == tmp_path / "runs" / "local"
    alice = config.load(dev="alice", runs=str(tmp_path / "runs"))
    assert run_dev(alice) == run_dev(alice, local=True) == "alice"
    assert local_runs(alice) == tmp_path / "runs" / "alice"
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # in a job: says which config
    with pytest.raises(config.ConfigError, match=r"set your dev tag.*checkout you submit from"):
        run_dev(untagged)


def test_only_storage_py_spells_a_dev_s_storage_path():
    """tune/cluster/cli reach <storage>/<dev>/... through `store.dev(dev)` (DevArea), never
    by handing a dev tag to the storage's raw-parts methods themselves."""
    raw = re.compile(
        r"\bstore\.(path|exists|listdir|read_bytes|write_bytes|put_dir|get_dir|"
        r"local_path)\("
    )
    package = Path(rc.__file__).parent
    found = [
        f"{f.name}:{i}: {line.strip()}"
        for f in sorted(package.rglob("*.py"))
        if f.name != "storage.py"
        for i, line in enumerate(f.read_text().splitlines(), 1)
        if raw.search(line)
    ]
    assert found == []


def test_pull_a_finished_search_by_experiment(tmp_path, monkeypatch):
    store = Storage.from_setting(str(tmp_path / "team"))
    exp = "alice-cnn1d-20261129T000000Z"
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.json").write_text("{}")
    store.dev("alice").put_dir(model, "models", "alice-cnn1d")
    write_results(
        store.dev("alice"),
        exp,
        rows_for("alice", exp, 2),
        None,
        {"dev": "alice", "experiment": exp, "models": ["alice-cnn1d"], "trials": 2},
    )
    store.dev("bob").write_bytes(b"{}", "runs", "bob-gru-1", "search.json")  # still running
    cfg = config.load(
        dev="alice",
        storage=str(tmp_path / "team"),
        models=str(tmp_path / "models"),
        results=str(tmp_path / "results"),
    )
    _, models, local = rc.pull(cfg, exp)
    assert models == [tmp_path / "models" / "alice-cnn1d"]
    assert (models[0] / "model.json").exists()
    assert (local / "leaderboard.csv").exists()
    assert (local / "job.json").exists()
    assert len(pd.read_csv(tmp_path / "results" / "leaderboard.csv")) == 2
    with pytest.raises(config.ConfigError, match="bob's search bob-gru-1 has not finished"):
        rc.pull(cfg, "bob-gru-1")


def test_a_job_takes_the_clusters_folders_only_for_relative_settings(monkeypatch):
    cfg = {"processed": "data/processed", "storage": "s3://team/x", "dev": "alice"}
    monkeypatch.setenv("RAYTASKS_CLUSTER_PROCESSED", "/srv/shards")
    monkeypatch.setenv("RAYTASKS_CLUSTER_STORAGE", "/srv/team")
    assert for_job(cfg) == cfg  # not in a job: own settings
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    assert for_job(cfg) == {**cfg, "processed": "/srv/shards"}
    assert for_job({**cfg, "storage": "team"})["storage"] == "/srv/team"


def test_head_env_and_bindings(monkeypatch):
    for var in ("RAYTASKS_DEV", "WANDB_API_KEY", "RAYTASKS_STORAGE"):
        monkeypatch.setenv(var, "head-owner")
    cfg = config.load(storage="/srv/team", processed="/srv/shards")
    env = rc.head_env(cfg)
    assert not {"RAYTASKS_DEV", "WANDB_API_KEY", "RAYTASKS_STORAGE"} & set(env)
    assert env["RAYTASKS_CLUSTER_STORAGE"] == "/srv/team"
    assert rc.node_ip("127.0.0.1") == "127.0.0.1"
    assert rc.node_ip("0.0.0.0") is None
    assert rc.exposure_warning({"host": "127.0.0.1", "port": 8265}) is None
    warning = rc.exposure_warning({"host": "0.0.0.0", "port": 8265})
    assert "18265" in warning
    assert "run any code" in warning
    assert "\n" not in warning


def test_down_stops_only_the_recorded_processes(tmp_path, monkeypatch):
    port = 30000 + os.getpid() % 2000
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    ours = subprocess.Popen([*sleeper, rc.temp_dir(port)], start_new_session=True)
    child_code = (
        "import subprocess,sys,time; subprocess.Popen([sys.executable,'-c',"
        "'import time; time.sleep(120)']); time.sleep(120)"
    )
    ours_tree = subprocess.Popen([sys.executable, "-c", child_code], start_new_session=True)
    bystander = subprocess.Popen([*sleeper, rc.temp_dir(port), f"--port={port}"])
    try:
        time.sleep(1)
        record = {
            "port": port,
            "nodes": 1,
            "storage": "/x",
            "processes": rc.session_members(ours.pid) + rc.session_members(ours_tree.pid),
        }
        rc.save_record(record)
        assert rc.load_record(port)["processes"]
        assert "RAYTASKS_STORAGE=/x" in rc.shell_env({"port": port, "host": "127.0.0.1"})
        stopped, killed = rc.down({"port": port, "host": "127.0.0.1"})
        assert stopped == 3  # two sessions + the grandchild, on SIGTERM
        assert killed == []
        ours.wait(5), ours_tree.wait(5)  # (psutil reaped them: no exit status left here)
        assert bystander.poll() is None
        assert not Path(rc.temp_dir(port)).exists()
        assert rc.down({"port": port, "host": "127.0.0.1"}) == (0, [])
    finally:
        for p in (ours, ours_tree, bystander):
            if p.poll() is None:
                p.terminate()
                p.wait()
