"""Shared-cluster workflow: cluster.yaml against Ray's schema, settings checks, and an
end-to-end run on a real 2-node cluster (two raylets on this machine) with two dev tags."""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from raytasks.cli import main
from tests.conftest import ROOT


def test_cluster_yaml_matches_ray_schema():
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    validate_config(prepare_config(config))
    assert config["provider"]["type"] == "local"
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "RAY_AUTH_MODE=token" in head
    broken = {**config, "provider": {**config["provider"], "type": 5}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def run_cli(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env)


def test_settings_checked_before_anything(monkeypatch, tmp_path):
    (tmp_path / "none.toml").write_text("")  # no settings file: defaults
    monkeypatch.setenv("RAYTASKS_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.delenv("RAYTASKS_DEV", raising=False)
    res = run_cli("submit", "--space", "gru")
    assert res.exit_code != 0 and "set your dev tag" in res.output
    res = run_cli("jobs", env={"RAYTASKS_PORT": "http"})
    assert res.exit_code != 0 and "'port' must be an integer" in res.output
    # nothing listens on this port: say how to get a cluster
    res = run_cli("submit", "--space", "gru", "--dev", "alice", env={"RAYTASKS_PORT": "1025"})
    assert res.exit_code != 0 and "make cluster-up" in res.output and "ssh -N -L" in res.output


def cli(env, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "raytasks.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_two_devs_on_a_two_node_cluster(processed, tmp_path):
    port = 20000 + os.getpid() % 2000
    env = {**os.environ, "RAYTASKS_PORT": str(port), "RAYTASKS_PROCESSED": str(processed),
           "RAYTASKS_RUNS": str(tmp_path / "runs"), "RAYTASKS_RESULTS": str(tmp_path / "res"),
           "RAYTASKS_MODELS": str(tmp_path / "models"), "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    up = cli(env, "cluster", "up", "--nodes", "2", "--cpus", "2")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        # the job API refuses requests without the token
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/jobs/", timeout=10)
        assert err.value.code in (401, 403)
        tiny = ["--samples", "2", "--max-epochs", "1", "--grace", "1", "--no-wandb"]
        a = cli(env, "submit", "--space", "cnn1d", "--dev", "alice", "--", *tiny)
        b = cli(env, "submit", "--space", "cnn1d", "--dev", "bob", "--", *tiny[:1], "1",
                *tiny[2:], "--workers", "2", "--placement", "SPREAD")
        assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
        ids = {dev: out.stdout.split()[1] for dev, out in (("alice", a), ("bob", b))}
        assert ids["alice"].startswith("alice-cnn1d-") and ids["bob"].startswith("bob-cnn1d-")
        deadline = time.time() + 480
        while time.time() < deadline:
            table = cli(env, "jobs", "--dev", "alice").stdout + cli(env, "jobs", "--dev",
                                                                   "bob").stdout
            if table.count("SUCCEEDED") == 2 or "FAILED" in table:
                break
            time.sleep(5)
        assert table.count("SUCCEEDED") == 2, table + cli(env, "logs", ids["bob"]).stdout[-3000:]
        assert ids["bob"] not in cli(env, "jobs", "--dev", "alice").stdout  # own jobs only
        # each experiment under its own runs/<dev>/, leaderboard rows tagged with the dev
        for dev in ("alice", "bob"):
            exps = list((tmp_path / "runs" / dev).glob(f"{dev}-cnn1d-*"))
            assert len(exps) == 1, exps
        board = pd.read_csv(tmp_path / "res" / "leaderboard.csv")
        assert sorted(board["dev"]) == ["alice", "alice", "bob"]
        assert all(e.startswith(f"{d}-cnn1d-") for d, e in zip(board["dev"],
                                                                board["experiment"]))
        # bob's TorchTrainer placed its two workers on both nodes
        results = list((tmp_path / "runs" / "bob").glob("bob-cnn1d-*/trial_fn_*/result.json"))
        reported = [json.loads(line) for f in results for line in f.read_text().splitlines()]
        assert reported and all(r["worker_nodes"] == 2 for r in reported)
    finally:
        down = cli(env, "cluster", "down")
    assert down.returncode == 0, down.stderr
    left = subprocess.run(["pgrep", "-f", f"/tmp/raytasks-{port}"], capture_output=True,
                          text=True).stdout.split()
    assert not left, f"Ray processes left behind: {left}"
