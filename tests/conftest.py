"""Shared fixtures: a few real MIT-BIH records from ../shared, their shards, one Ray cluster.

Ray is started once per session; so is an S3 server (moto's, `s3_server`) for the team
storage tests. `make test` runs the suite inside `unshare -n` where it can
(so Ray's startup probes cannot leave the machine); `make test-fast` runs what needs no Ray.

Markers: `ray` (the test starts Ray: every test using the `ray_cluster` fixture is marked
here), `cluster` (it starts a multi-process cluster of its own), `slow` (> ~5 s without
Ray). With RAYTASKS_TEST_NO_RAY=1 (make test-fast) starting Ray fails the test: a test that
starts Ray without its marker cannot hide in the fast loop.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ROOT = Path(__file__).resolve().parent.parent
MITDB = Path(os.environ.get("MITDB_DIR") or ROOT.parent / "shared" / "data" / "mitdb")
# 118 (DS1, inter valid: S beats), 208 (DS1 train: V and F), 232 (DS2 test: many S)
SLICE = ["118", "208", "232"]


def read_shards(files):
    """Shards as one wide frame: the hackathon's columns '0'..'186', then every other column."""
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    from raytasks.data import BEAT, BEAT_LEN, FEATURES

    table = pq.ParquetDataset([str(f) for f in files]).read()
    beat = table.column(BEAT).combine_chunks()
    wide = pd.DataFrame(beat.values.to_numpy().reshape(-1, BEAT_LEN), columns=FEATURES)
    rest = table.drop_columns([BEAT]).to_pandas()
    assert np.all(np.isfinite(wide.to_numpy()))
    return pd.concat([wide, rest], axis=1)


def copy_records(dest: Path, names) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for n in names:
        for ext in ("hea", "dat", "atr"):
            shutil.copy(MITDB / f"{n}.{ext}", dest / f"{n}.{ext}")
    return dest


def snapshot(root: Path) -> dict:
    """Every file under root (hidden ones too) with its bytes: "left byte-identical"."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file()
    }


def train_tiny(cfg: dict, out_dir: Path) -> Path:
    """Train cfg in this process (train.fit_local, Ray Data) and export its last epoch to
    out_dir, as `raytasks train` would."""
    from ray.train import Checkpoint

    from raytasks.training import train

    # beside the models' folder, not in it (a test may copy that folder whole)
    keep, reports = out_dir.parent.with_name(f"{out_dir.parent.name}-ckpt-{out_dir.name}"), []

    def report(metrics, state_dir):
        reports.append(metrics)
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(state_dir, keep)

    train.fit_local(dict(cfg), report)
    return train.export(Checkpoint.from_directory(keep), reports[-1], cfg, out_dir)


def use_models(monkeypatch, models: Path, processed: Path, results: Path) -> None:
    """Point the CLI at these models, shards and results (and at no default scheme)."""
    monkeypatch.setenv("RAYTASKS_MODELS", str(models))
    monkeypatch.setenv("RAYTASKS_PROCESSED", str(processed))
    monkeypatch.setenv("RAYTASKS_RESULTS", str(results))
    monkeypatch.delenv("RAYTASKS_SCHEME", raising=False)


@pytest.fixture(scope="session")
def mitdb() -> Path:
    if not (MITDB / "100.hea").exists():
        pytest.fail(f"raw MIT-BIH records not found at {MITDB}; set MITDB_DIR")
    return MITDB


@pytest.fixture(scope="session")
def slice_dir(tmp_path_factory, mitdb) -> Path:
    return copy_records(tmp_path_factory.mktemp("mitdb_slice"), SLICE)


@pytest.fixture(scope="session")
def processed(tmp_path_factory, slice_dir) -> Path:
    """Shards of both schemes built from the slice (small shards: several per split)."""
    from raytasks.data.build import build

    out = tmp_path_factory.mktemp("processed")
    build(slice_dir, out, ("intra", "inter"), params={"shard_rows": 800}, progress=False)
    return out


@dataclass(frozen=True)
class S3Server:
    """moto's S3 server on 127.0.0.1 (in the test's network namespace): its endpoint, the
    team's keys (an IAM user allowed s3:*) and the bucket the team's storage lives in."""

    endpoint: str
    key: str
    secret: str
    bucket: str = "team-bucket"
    region: str = "us-east-1"

    def env(self, **changes: str) -> dict:
        """The AWS variables a dev exports to use it (pyarrow and boto3 read the same)."""
        return {
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",  # no credential probe of a cloud address
        } | changes

    def client(self, service: str = "s3", **keys):
        import boto3

        keys = keys or {"aws_access_key_id": self.key, "aws_secret_access_key": self.secret}
        return boto3.client(service, endpoint_url=self.endpoint, region_name=self.region, **keys)

    def objects(self, prefix: str = "") -> dict[str, int]:
        """key -> size of every file under prefix, read with boto3 (not pyarrow); the
        empty 'folder/' markers pyarrow writes for its directories are left out."""
        pages = self.client().get_paginator("list_objects_v2")
        return {
            o["Key"]: o["Size"]
            for page in pages.paginate(Bucket=self.bucket, Prefix=prefix)
            for o in page.get("Contents", [])
            if not o["Key"].endswith("/")
        }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> S3Server:
    """A real S3 endpoint for the team storage: moto's server, which checks signatures once
    its first 3 requests (an IAM user, its s3:* policy, its key) are done, so that a wrong
    secret is refused as it would be by a real one."""
    import boto3

    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc, log)
        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="team")
        statement = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
        policy = {"Version": "2012-10-17", "Statement": [statement]}
        iam.put_user_policy(UserName="team", PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="team")["AccessKey"]
        server = S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
        server.client().create_bucket(Bucket=server.bucket)
        yield server
    finally:
        proc.terminate()
        proc.wait(10)


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"moto server exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"moto server not listening on 127.0.0.1:{port} after {timeout} s")


@pytest.fixture
def s3_env(monkeypatch, s3_server) -> S3Server:
    """This process's AWS variables pointed at the moto server (and nothing else's)."""
    for var in [v for v in os.environ if v.startswith("AWS_")]:
        monkeypatch.delenv(var)
    for var, value in s3_server.env().items():
        monkeypatch.setenv(var, value)
    return s3_server


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=True, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(items):
    for item in items:
        if "ray_cluster" in item.fixturenames:
            item.add_marker(pytest.mark.ray)


@pytest.fixture(autouse=True)
def _no_ray_in_the_fast_loop(monkeypatch):
    if os.environ.get("RAYTASKS_TEST_NO_RAY") != "1":
        return
    import ray

    def refuse(*a, **kw):
        raise RuntimeError("this test starts Ray: mark it `ray` (make test-fast runs no Ray)")

    monkeypatch.setattr(ray, "init", refuse)


@pytest.fixture
def tune_env(monkeypatch, tmp_path, processed):
    """A search's settings as dev alice: the slice's shards, storage, results and models
    under tmp_path, W&B offline."""
    env = {
        "RAYTASKS_DEV": "alice",
        "RAYTASKS_PROCESSED": str(processed),
        "RAYTASKS_STORAGE": str(tmp_path / "storage"),
        "RAYTASKS_RESULTS": str(tmp_path / "results"),
        "RAYTASKS_MODELS": str(tmp_path / "models"),
        "WANDB_DIR": str(tmp_path),
        "WANDB_MODE": "offline",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return tmp_path
