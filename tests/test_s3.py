"""The team storage on a real S3 server: moto's, started by the `s3_server` fixture on
127.0.0.1 (inside the tests' network namespace). The two ways a dev names its endpoint, a
tiny `raytasks tune` writing its runs, models and leaderboard rows there, `raytasks pull`
and `raytasks leaderboard` reading them back, and one line for a missing bucket or bad keys.
(Searches finishing at once on S3: tests/test_storage.py, kind "s3".)"""

import io
import os
import pickle
import subprocess
import sys

import pandas as pd
import pytest
from click.testing import CliRunner

from raytasks.cli import main
from raytasks.core.storage import Storage, StorageError
from tests.conftest import ROOT

QUICK = ["--samples", "2", "--max-epochs", "2", "--grace", "1", "--no-wandb"]


def in_uri(s3, prefix: str) -> str:
    """The storage URI that names the endpoint itself (pyarrow's query parameters)."""
    host = s3.endpoint.removeprefix("http://")
    return f"s3://{s3.bucket}/{prefix}?endpoint_override={host}&scheme=http"


def test_both_ways_of_naming_the_endpoint_reach_one_server(s3_env, tmp_path, monkeypatch):
    prefix = tmp_path.name
    by_env = Storage.from_setting(f"s3://{s3_env.bucket}/{prefix}")  # AWS_ENDPOINT_URL
    by_env.dev("alice").write_bytes(b"env", "runs", "e", "a.txt")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_env.endpoint)  # the S3-only variable
    by_s3_var = Storage.from_setting(f"s3://{s3_env.bucket}/{prefix}")
    assert by_s3_var.dev("alice").read_bytes("runs", "e", "a.txt") == b"env"
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    by_uri = Storage.from_setting(in_uri(s3_env, prefix))  # no endpoint variable left
    assert by_uri.root == f"{s3_env.bucket}/{prefix}"
    assert by_uri.dev("alice").read_bytes("runs", "e", "a.txt") == b"env"
    by_uri.dev("bob").write_bytes(b"uri!", "runs", "f", "b.txt")
    assert s3_env.objects(prefix) == {
        f"{prefix}/alice/runs/e/a.txt": 3,
        f"{prefix}/bob/runs/f/b.txt": 4,
    }
    # Ray ships the storage's filesystem to its trial processes pickled: the endpoint goes
    # with it, so a process without the variable still reaches this server (keys: its env)
    worker_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    worker = (
        "import pickle, sys; fs = pickle.loads(sys.stdin.buffer.read()); "
        "sys.stdout.write(fs.open_input_stream(sys.argv[1]).read().decode())"
    )
    read = subprocess.run(
        [sys.executable, "-c", worker, by_env.path("bob", "runs", "f", "b.txt")],
        input=pickle.dumps(by_env.fs),
        env=worker_env,
        capture_output=True,
        timeout=60,
    )
    assert read.stdout == b"uri!", read.stderr.decode()[-2000:]


def one_line_error(args: list[str]) -> str:
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1, res.output
    assert isinstance(res.exception, SystemExit), res.exception  # handled, no traceback
    lines = res.output.strip().splitlines()
    assert len(lines) == 1, res.output
    assert "Traceback" not in res.output
    return lines[0]


@pytest.fixture
def checkout(monkeypatch, tmp_path, processed):
    """A dev's settings with local folders of its own (which must stay unwritten here)."""
    for var, value in {
        "RAYTASKS_DEV": "alice",
        "RAYTASKS_PROCESSED": str(processed),
        "RAYTASKS_RESULTS": str(tmp_path / "results"),
        "RAYTASKS_MODELS": str(tmp_path / "models"),
        "RAYTASKS_RUNS": str(tmp_path / "runs"),
    }.items():
        monkeypatch.setenv(var, value)
    return tmp_path


@pytest.mark.parametrize(
    ("storage", "env", "said"),
    [
        ("s3://no-such-bucket/raytasks", {}, "no bucket 'no-such-bucket' at that endpoint"),
        ("s3://team-bucket/raytasks", {"AWS_SECRET_ACCESS_KEY": "wrong"}, "ACCESS_DENIED"),
        ("s3://team-bucket/raytasks", {"AWS_ACCESS_KEY_ID": "AKIANOBODY"}, "ACCESS_DENIED"),
    ],
)
def test_missing_bucket_or_bad_keys_is_one_line(s3_env, checkout, monkeypatch, storage, env, said):
    before = s3_env.objects()
    monkeypatch.setenv("RAYTASKS_STORAGE", storage)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    for args in (["tune", "--space", "cnn1d", *QUICK], ["leaderboard"], ["pull", "alice-x"]):
        line = one_line_error(args)
        assert f"storage {storage}: " in line, line
        assert said in line, line
    assert sorted(p.name for p in checkout.iterdir()) == []  # no results/, models/, runs/
    assert s3_env.objects() == before


@pytest.mark.slow  # the S3 client retries for ~6 s before it gives up
def test_an_endpoint_that_does_not_answer_is_one_line(s3_env, checkout, monkeypatch):
    from tests.conftest import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("RAYTASKS_STORAGE", "s3://team-bucket/raytasks")
    line = one_line_error(["leaderboard"])
    assert "storage s3://team-bucket/raytasks: " in line, line
    assert "NETWORK_CONNECTION" in line, line
    assert sorted(p.name for p in checkout.iterdir()) == []


def test_keys_in_the_uri_are_refused_unrepeated(s3_env):
    for uri in (
        f"s3://{s3_env.key}:{s3_env.secret}@{s3_env.bucket}/raytasks",
        f"s3://{s3_env.key}:abc%2Fdef@{s3_env.bucket}/raytasks",
        f"s3://{s3_env.bucket}/raytasks?secret_key={s3_env.secret}&access_key={s3_env.key}",
    ):
        with pytest.raises(StorageError, match="credentials in the URI") as e:
            Storage.from_setting(uri)
        assert s3_env.key not in str(e.value)


@pytest.mark.parametrize(
    ("uri", "said"),
    [("nope://x/y", "Unrecognized filesystem type"), ("s3://", "names no bucket")],
)
def test_a_uri_pyarrow_cannot_open_is_a_storage_error(s3_env, uri, said):
    with pytest.raises(StorageError, match=f"storage '?{uri}'?.*{said}"):
        Storage.from_setting(uri)


@pytest.mark.ray  # the search runs in a subprocess, with its own Ray
@pytest.mark.slow
def test_tiny_search_on_s3_then_pull_and_leaderboard(s3_server, checkout, monkeypatch):
    """`raytasks tune --export` with the endpoint in the storage URI (no AWS_ENDPOINT_URL:
    Ray's trials reach the server through the filesystem raytasks hands them), then a
    teammate naming it by AWS_ENDPOINT_URL pulls the search and reads the leaderboard."""
    prefix = checkout.name
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.pop("RAY_ADDRESS", None)
    env |= s3_server.env(RAYTASKS_STORAGE=in_uri(s3_server, prefix), PYTHONUNBUFFERED="1")
    del env["AWS_ENDPOINT_URL"]
    cmd = [sys.executable, "-m", "raytasks.tune", "--space", "cnn1d", "--export", *QUICK]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stdout + res.stderr, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"storage {in_uri(s3_server, prefix)}" in res.stdout

    stored = s3_server.objects(f"{prefix}/")
    runs = sorted({k.split("/")[3] for k in stored if k.startswith(f"{prefix}/alice/runs/")})
    assert len(runs) == 1, sorted(stored)
    exp = runs[0]
    assert exp.startswith("alice-cnn1d-")
    mine = f"{prefix}/alice"
    assert f"{mine}/runs/{exp}/search.json" in stored
    assert any(k.startswith(f"{mine}/runs/{exp}/experiment_state-") for k in stored)
    checkpoints = [k for k in stored if f"/runs/{exp}/" in k and "/checkpoint_" in k]
    assert checkpoints, sorted(stored)  # written by the trial processes, not the driver
    assert stored[f"{mine}/models/alice-cnn1d/model.pt"] > 1000
    for name in ("leaderboard.csv", "leaderboard.png", "job.json"):
        assert stored[f"{mine}/results/{exp}/{name}"] > 0
    body = s3_server.client().get_object(
        Bucket=s3_server.bucket, Key=f"{mine}/results/{exp}/leaderboard.csv"
    )["Body"]
    rows = pd.read_csv(io.BytesIO(body.read()))
    assert len(rows) == 2
    assert set(rows["experiment"]) == {exp}
    assert not [k for k in stored if ".tmp-" in k]
    # outside a job the search also refreshed alice's local team leaderboard, from S3
    assert len(pd.read_csv(checkout / "results" / "leaderboard.csv")) == 2

    # bob, in a checkout of his own, names the endpoint by AWS_ENDPOINT_URL
    for var in [v for v in os.environ if v.startswith("AWS_")]:
        monkeypatch.delenv(var)
    for var, value in s3_server.env().items():
        monkeypatch.setenv(var, value)
    bob = checkout / "bob"
    monkeypatch.setenv("RAYTASKS_DEV", "bob")
    monkeypatch.setenv("RAYTASKS_STORAGE", f"s3://{s3_server.bucket}/{prefix}")
    monkeypatch.setenv("RAYTASKS_MODELS", str(bob / "models"))
    monkeypatch.setenv("RAYTASKS_RESULTS", str(bob / "results"))
    pulled = CliRunner().invoke(main, ["pull", exp])
    assert pulled.exit_code == 0, pulled.output
    assert f"alice's {exp}: 2 trial(s)" in pulled.output
    model = s3_server.client().get_object(
        Bucket=s3_server.bucket, Key=f"{mine}/models/alice-cnn1d/model.pt"
    )["Body"]
    assert (bob / "models" / "alice-cnn1d" / "model.pt").read_bytes() == model.read()
    assert len(pd.read_csv(bob / "results" / exp / "leaderboard.csv")) == 2
    (bob / "results" / "leaderboard.csv").unlink()  # pull merged it: read it anew
    board = CliRunner().invoke(main, ["leaderboard"])
    assert board.exit_code == 0, board.output
    assert "2 rows from 1 dev(s)" in board.output
    team = pd.read_csv(bob / "results" / "leaderboard.csv")
    assert set(team["dev"]) == {"alice"}
    assert sorted(team["trial_id"]) == sorted(rows["trial_id"])
