"""Shared-cluster workflow: cluster.yaml against Ray's schema, settings checks, and an
end-to-end run on a real 2-node cluster (two raylets on this machine) with two dev tags."""

import json
import os
import re
import shlex
import shutil
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
from raytasks.team.cluster import _psutil
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
    assert "--dashboard-host=127.0.0.1" in head
    assert "RAY_AUTH_MODE=token" in head
    assert "RAY_enable_autoscaler_v2=0" in head  # v2 never starts a local cluster's 2nd worker
    # the head makes the token, its autoscaler copies it to each worker
    assert "get-auth-token --generate" in " ".join(config["head_setup_commands"])
    assert config["cluster_synced_files"] == ["~/.ray/auth_token"]
    # a worker's processes end with its raylet (`ray down` stops only the head)
    assert "ray start --block" in " ".join(config["worker_start_ray_commands"])
    # anchored: rsync's "data" also drops raytasks/data/, the package
    assert all(p.startswith("/") for p in config["rsync_exclude"] if p != "__pycache__")


def test_cluster_render_fills_in_the_machines(tmp_path):
    """The override for real machines: head, workers, SSH user and key; the rest as shipped,
    still valid for Ray; one clear error per bad input."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    out = tmp_path / "cluster.local.yaml"
    machines = ["--head", "10.1.0.1", "--worker", "10.1.0.2", "--worker", "node-3.lan"]
    ssh = ["--user", "alice", "--key", "~/.ssh/t"]
    res = run_cli("cluster", "render", *machines, *ssh, "-o", str(out))
    assert res.exit_code == 0, res.output
    assert f"ray up {out}" in res.output
    rendered = yaml.safe_load(out.read_text())
    shipped = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    assert rendered["provider"] == {
        "type": "local",
        "head_ip": "10.1.0.1",
        "worker_ips": ["10.1.0.2", "node-3.lan"],
    }
    assert rendered["auth"] == {"ssh_user": "alice", "ssh_private_key": "~/.ssh/t"}
    assert rendered["max_workers"] == 2
    for key in set(shipped) - {"provider", "auth", "max_workers"}:
        assert rendered[key] == shipped[key], key
    validate_config(prepare_config(rendered))
    # without --user/--key/-o: cluster.yaml's user and key, on stdout
    res = run_cli("cluster", "render", "--head", "10.1.0.1", "--worker", "10.1.0.2")
    assert res.exit_code == 0, res.output
    assert yaml.safe_load(res.output)["auth"] == shipped["auth"]

    for args, error in [
        (["--head", "10.1.0.1"], "Missing option '--worker'"),
        (["--head", "10.1.0.1", "--worker", "10.1.0.1"], "each machine once"),
        (["--head", "10.1.0.1", "--worker", "a", "--worker", "a"], "each machine once"),
        (["--head", "10.1.0.1", "--worker", "a b"], "'a b' is not an IP address or host name"),
        (["--head", "1", "--worker", "2", "--config", tmp_path / "none.yaml"], "cannot read"),
    ]:
        res = run_cli("cluster", "render", *map(str, args))
        assert res.exit_code != 0, args
        assert error in res.output, res.output
        assert "Traceback" not in res.output, res.output


def run_cli(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env)


def test_settings_checked_before_anything(monkeypatch, tmp_path):
    (tmp_path / "none.toml").write_text("")  # no settings file: defaults
    monkeypatch.setenv("RAYTASKS_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.delenv("RAYTASKS_DEV", raising=False)
    res = run_cli("submit", "--space", "gru")
    assert res.exit_code != 0
    assert "set your dev tag" in res.output
    res = run_cli("jobs", env={"RAYTASKS_PORT": "http"})
    assert res.exit_code != 0
    assert "'port' must be an integer" in res.output
    # nothing listens on this port: say how to get a cluster
    res = run_cli("submit", "--space", "gru", "--dev", "alice", env={"RAYTASKS_PORT": "1025"})
    assert res.exit_code != 0
    assert "make cluster-up" in res.output
    assert "ssh -N -L" in res.output


# the walk: a 2-trial, 2-epoch search submitted with W&B on (offline: no key in a job)
TEAM_SUBMIT = (
    "raytasks submit --space cnn1d --follow -- --samples 2 --max-epochs 2 --grace 1 --export"
)
LOG_BUDGET = 150  # lines of that job's log
README_SUBMIT = (
    'eval "$(raytasks cluster env)" && ray job submit --working-dir . -- '
    "python -m raytasks.tune --space cnn1d --samples 1 --max-epochs 1 --grace 1 "
    "--no-wandb"
)


def head_cli(env, *args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "raytasks.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def checkout(tmp_path: Path, name: str, **settings) -> Path:
    """A teammate's own checkout: the code, the search spaces and their config.toml."""
    d = tmp_path / name
    shutil.copytree(ROOT / "raytasks", d / "raytasks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "searchspaces", d / "searchspaces")
    (d / "config.toml").write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
    return d


def shell(where: Path, command: str, **kw):
    """A teammate's shell in their checkout: no raytasks/Ray settings but their config.toml."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAYTASKS_", "WANDB_", "RAY_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env['PATH']}",
        PYTHONPATH=str(where),
        RAY_USAGE_STATS_ENABLED="0",
    )
    return subprocess.Popen(
        ["bash", "-c", command],
        cwd=where,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **kw,
    )


def said(where: Path, command: str, timeout=300) -> tuple[int, str]:
    proc = shell(where, f'eval "$(raytasks cluster env)" && {command}')
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def wandb_records(path: Path) -> list:
    """The protobuf records of an offline W&B run file (LevelDB-log framing: 32 KiB blocks of
    records with a 7-byte header: CRC, length, type FULL/FIRST/MIDDLE/LAST)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, out, part = path.read_bytes(), [], b""
    pos, block = 7, 32768  # the file header: ':W&B', 2 magic bytes, a version byte
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the rest of a block too short for a header: padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        part += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = pb.Record()
            record.ParseFromString(part)
            out.append(record)
            part = b""
    return out


def wandb_run(run_dir: Path) -> dict:
    """name, group, tags, config keys and logged keys of an offline W&B run."""
    out = {"config": set(), "logged": set(), "artifacts": []}
    for r in wandb_records(next(run_dir.glob("*.wandb"))):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out |= {"name": r.run.display_name, "group": r.run.run_group, "tags": list(r.run.tags)}
            out["config"] |= {i.key for i in r.run.config.update}
        elif kind == "history":
            out["logged"] |= {i.key or "/".join(i.nested_key) for i in r.history.item}
        elif kind == "artifact":
            out["artifacts"].append(r.artifact.name)
    return out


FAILED = """
import json, sys, ray
from ray.job_submission import JobSubmissionClient
from ray.util.state import list_actors, list_tasks
job = JobSubmissionClient(sys.argv[1]).get_job_info(sys.argv[2])
ray.init(address=sys.argv[3], log_to_driver=False, configure_logging=False)
mine = [("job_id", "=", job.job_id)]
failed = list_tasks(filters=mine + [("state", "=", "FAILED")], raise_on_missing_output=False)
dead = list_actors(filters=mine + [("state", "=", "DEAD")], detail=True,
                   raise_on_missing_output=False)
print(json.dumps({"failed": [t.name for t in failed], "job_name": job.metadata.get("job_name"),
                  "dead": [(a.class_name, (a.death_cause or {}).get("actor_died_error_context",
                                                                     {}).get("reason"))
                           for a in dead]}))
"""


def listening(pids) -> set[str]:
    psutil = _psutil()

    return {
        c.laddr.ip
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    }


@pytest.mark.cluster
def test_team_on_one_head_end_to_end(processed, tmp_path):
    """A head from one checkout (its owner's env says dev carol), alice and bob submitting the
    README's raw `ray job submit` from their own checkouts at once, a second team's cluster
    and a bystander process that survive `cluster down`."""
    psutil = _psutil()

    port = 20000 + os.getpid() % 2000
    other = port + 3000  # another team's, its derived ports apart from this one's
    storage = tmp_path / "storage"
    head = {
        **os.environ,
        "RAYTASKS_PORT": str(port),
        "RAYTASKS_PROCESSED": str(processed),
        "RAYTASKS_STORAGE": str(storage),
        "RAYTASKS_DEV": "carol",
        "RAYTASKS_RESULTS": str(tmp_path / "head-results"),
        "PYTHONUNBUFFERED": "1",
    }
    head.pop("RAY_ADDRESS", None)
    up = head_cli(head, "cluster", "up", "--nodes", "2", "--cpus", "2")
    bystander = None
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "export RAY_AUTH_MODE=token" in up.stdout
        assert f"export RAY_ADDRESS=http://127.0.0.1:{port}" in up.stdout
        pids = [
            p[0]
            for p in json.loads(Path(f"/tmp/raytasks-{port}/raytasks-cluster.json").read_text())[
                "processes"
            ]
        ]
        assert listening(pids) <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, listening(pids)
        second = head_cli({**head, "RAYTASKS_PORT": str(other)}, "cluster", "up", "--cpus", "1")
        assert second.returncode == 0, second.stderr
        bystander = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import time; time.sleep(600)",
                f"/tmp/raytasks-{port}",
                f"--port={port}",
            ]
        )
        # the job API refuses requests without the token
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/jobs/", timeout=10)
        assert err.value.code in (401, 403)

        alice = checkout(
            tmp_path,
            "alice",
            dev="alice",
            port=port,
            storage=str(storage),
            processed=str(processed),
        )
        bob = checkout(tmp_path, "bob", dev="bob", port=port)  # the cluster's storage and data
        newbie = checkout(tmp_path, "newbie", port=port)  # placeholder tag
        subs = {
            "alice": shell(alice, f'eval "$(raytasks cluster env)" && {TEAM_SUBMIT}'),
            "bob": shell(bob, README_SUBMIT + " --workers 2 --placement SPREAD"),
            "newbie": shell(newbie, README_SUBMIT),
        }
        outs = {dev: p.communicate(timeout=480)[0] for dev, p in subs.items()}
        for dev in ("alice", "bob"):
            assert subs[dev].returncode == 0, outs[dev][-4000:]
        assert "set your dev tag first" in outs["newbie"], outs["newbie"][-2000:]

        # each search under <storage>/<its dev>/, none under the head owner's tag
        assert sorted(p.name for p in storage.iterdir()) == ["alice", "bob"], outs["alice"][-3000:]
        for dev in ("alice", "bob"):
            assert len(list((storage / dev / "runs").glob(f"{dev}-cnn1d-*"))) == 1
        results = list((storage / "bob" / "runs").glob("bob-cnn1d-*/*/result.json"))
        reported = [json.loads(line) for f in results for line in f.read_text().splitlines()]
        assert reported
        assert all(r["worker_nodes"] == 2 for r in reported)  # SPREAD: 2 nodes

        check_team_walk(alice, outs["alice"], storage / "alice", port)
        rc, table = said(alice, "raytasks jobs --all")
        assert rc == 0, table
        ids = {line.split()[1]: line.split()[0] for line in table.splitlines()[1:]}
        assert set(ids) == {"alice", "bob", "?"}, table  # found by the tag they ran under
        rc, mine = said(alice, "raytasks jobs")
        assert ids["alice"] in mine, mine
        assert ids["bob"] not in mine, mine
        assert "SUCCEEDED" in mine, mine
        rc, out = said(alice, f"raytasks stop {ids['bob']}")
        assert rc == 1, out
        assert "is bob's job, not yours (alice)" in out, out
        assert "Traceback" not in out, out
        assert out.count(ids["bob"]) == 1, out
        rc, out = said(alice, f"raytasks stop --force {ids['bob']}")
        assert rc == 0, out
        assert f"bob's job {ids['bob']}" in out, out

        rc, out = said(alice, "raytasks leaderboard")
        assert rc == 0, out
        board = pd.read_csv(alice / "results" / "leaderboard.csv")
        assert sorted(board["dev"]) == ["alice", "alice", "bob"]  # alice's 2 trials, bob's 1
        assert all(e.startswith(f"{d}-cnn1d-") for d, e in zip(board["dev"], board["experiment"]))
        rc, out = said(alice, f"raytasks pull {ids['alice']}")
        assert rc == 0, out
        assert (alice / "models" / "alice-cnn1d" / "model.pt").exists(), out
        rc, out = said(alice, "raytasks evaluate --model models/alice-cnn1d")
        assert rc == 0, out
        assert "alice-cnn1d@recall" in out, out

        # submit --wait follows a job to its end: this search fails on the cluster (no
        # scheme 'nope' there), and the command says so and exits 1
        quick = "--samples 1 --max-epochs 1 --grace 1 --no-wandb"
        rc, out = said(alice, f"raytasks submit --wait --space cnn1d -- {quick} --scheme nope")
        failed = re.search(r"submitted (alice-cnn1d-\S+)", out)
        assert rc == 1, out
        assert failed, out
        assert f"{failed.group(1)}: FAILED" in out, out
        assert f"ended FAILED; see raytasks logs {failed.group(1)}" in out, out
        # stop: a long search, stopped while it runs
        rc, out = said(
            alice, "raytasks submit --space cnn1d -- --samples 50 --max-epochs 50 --no-wandb"
        )
        long_job = re.search(r"submitted (alice-cnn1d-\S+)", out).group(1)
        rc, out = said(alice, f"raytasks stop {long_job}")
        assert rc == 0, out
        assert f"{long_job}: stop requested" in out, out
        for _ in range(30):
            rc, mine = said(alice, "raytasks jobs")
            if re.search(rf"{long_job}\s.*STOPPED", mine):
                break
            time.sleep(2)
        assert re.search(rf"{long_job}\s.*STOPPED", mine), mine
    finally:
        down = head_cli(head, "cluster", "down")
        assert down.returncode == 0, down.stderr
        try:
            # another team's cluster and a process merely naming this one survive
            with pytest.raises(urllib.error.HTTPError):  # it still answers (401)
                urllib.request.urlopen(f"http://127.0.0.1:{other}/api/jobs/", timeout=10)
            assert bystander is None or bystander.poll() is None
        finally:
            head_cli({**head, "RAYTASKS_PORT": str(other)}, "cluster", "down")
            if bystander is not None:
                bystander.terminate()
                bystander.wait()
    left = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any(f"raytasks-{n}" in " ".join(p.info["cmdline"] or []) for n in (port, other))
    ]
    assert not left, f"Ray processes left behind: {left}"


def check_team_walk(alice: Path, followed: str, mine: Path, port: int) -> None:
    """What a teammate reads of a 2-trial, 2-epoch search: a short log with Tune's table
    showing the objective, recalls and settings; W&B runs named and configured for
    comparing; no failed task; the job named; submission id = experiment = runs folder."""
    job = re.search(r"submitted (\S+) to", followed).group(1)
    assert f"{job}: SUCCEEDED" in followed, followed[-3000:]
    rc, log = said(alice, f"raytasks logs {job}")
    assert rc == 0, f"{len(log.splitlines())} lines"
    assert len(log.splitlines()) < LOG_BUDGET, f"{len(log.splitlines())} lines"
    for noise in ("Traceback", "wandb:", "core_worker", "Checkpoint successfully"):
        assert noise not in log, (noise, log)
    header = [line for line in log.splitlines() if "| Trial name" in line][-1]  # results in
    for column in ("arch", "lr", "F2scoremacro", "valid_loss", "recall_S", "recall_F"):
        assert f" {column} " in header, header
    assert [p.name for p in (mine / "runs").iterdir()] == [job]  # one name for all three
    rc, last = said(alice, f"raytasks logs {job} --tail 3")
    assert rc == 0, last
    assert last.splitlines() == log.splitlines()[-3:], last

    runs = [wandb_run(d) for d in sorted((mine / "wandb").glob("offline-run-*"))]
    trials = [r for r in runs if r["logged"] >= {"train/loss", "valid/loss", "valid/TP_1"}]
    assert len(trials) == 2, runs
    for r in trials:
        assert re.fullmatch(r"cnn1d-[0-9a-f]{8}", r["name"]), r
        assert r["group"] == job, r
        assert sorted(r["tags"]) == ["alice", "cnn1d"], r  # dev, space = arch: no repeats
        # every setting the trial trained with (defaults too) and the search's own
        assert r["config"] >= {
            "experiment",
            "dev",
            "space",
            "scheme",
            "metric",
            "max_epochs",
            "grace",
            "samples",
            "workers",
            "seed",
            "lr",
            "loss",
            "balance",
            "batch_size",
            "epochs",
            "rr",
            "model.kernel",
            "trial_id",
        }, r["config"]
    assert sum("alice-cnn1d" in a for r in runs for a in r["artifacts"]) == 1, runs
    # the exported best's run, resumed: its confusion image (logged as valid/confusion/*)
    export = [r for r in runs if any(k.startswith("valid/confusion/") for k in r["logged"])]
    assert len(export) == 1, runs
    assert export[0]["name"] in {r["name"] for r in trials}, runs
    assert sorted(export[0]["tags"]) == ["alice", "cnn1d"], export

    rc, out = said(
        alice,
        f"python -c {shlex.quote(FAILED)} http://127.0.0.1:{port} {job} 127.0.0.1:{port + 10000}",
    )
    state = json.loads(out.strip().splitlines()[-1])
    # Ray Data keeps one detached stats actor per cluster, created get_if_exists by each
    # job's driver: alice's and bob's jobs start at once, and the one that loses the race
    # has its creation task recorded FAILED while it uses the winner's. Not this search's.
    raced = {"datasets_stats_actor:_StatsActor.__init__"}
    assert [t for t in state["failed"] if t not in raced] == [], state
    # what stays dead on a healthy search is lifecycle: trials, W&B queues and logging
    # actors ended by Tune, the job's supervisor (README "Dashboard")
    lifecycle = {"ImplicitFunc", "_QueueActor", "QuietLoggingActor", "JobSupervisor"}
    assert {cls.rsplit(".", 1)[-1] for cls, _ in state["dead"]} <= lifecycle, state["dead"]
    assert state["job_name"].startswith("alice: tune --space cnn1d"), state
