"""Two TorchTrainer workers on two raylets (`raytasks cluster up --nodes 2`, SPREAD), fed by
one Ray Data split: each rank trains on rows no other rank sees, both take the same number
of steps, and each runs (and reads its share) on its own node."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.test_cluster import head_cli

pytestmark = pytest.mark.cluster

# runs in its own process: this test session's Ray is a single local node
SCRIPT = """
import hashlib, json, sys
from pathlib import Path
import ray
from raytasks.training import train

out = Path(sys.argv[2])

def record(batches, rank):
    def counted(epoch):
        rows, steps = set(), 0
        for batch in batches(epoch):
            steps += 1
            rows |= {hashlib.blake2b(r.tobytes(), digest_size=8).hexdigest()
                     for r in batch["x"].numpy()}
            yield batch
        (out / f"rank{rank}-epoch{epoch}.json").write_text(json.dumps(
            {"node": ray.get_runtime_context().get_node_id(), "steps": steps,
             "rows": sorted(rows)}))
    return counted

ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)
train.fit({"arch": "cnn1d", "model": {"channels": [8, 16]}, "data": sys.argv[3], "epochs": 2,
           "batch_size": 128, "workers": 2, "cpus_per_worker": 1.0, "placement": "SPREAD"},
          "nodes", out / "runs", wrap_batches=record)
"""


def test_two_workers_on_two_nodes_disjoint_rows_equal_steps(processed, tmp_path):
    # P..P+14199 (dashboard, GCS at P+10000, node ports) below the kernel's ephemeral ports
    # (32768+): at 24000 + n the GCS port sometimes met a port Ray had just taken at random
    port = 17000 + os.getpid() % 1000
    env = {
        **os.environ,
        "RAYTASKS_PORT": str(port),
        "RAYTASKS_DEV": "carol",
        "RAYTASKS_STORAGE": str(tmp_path / "storage"),
    }
    env.pop("RAY_ADDRESS", None)
    up = head_cli(env, "cluster", "up", "--nodes", "2", "--cpus", "2")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        run = subprocess.run(
            [
                sys.executable,
                "-c",
                SCRIPT,
                f"127.0.0.1:{port + 10000}",
                str(tmp_path),
                str(processed / "intra"),
            ],
            cwd=ROOT,
            env={**env, "RAY_AUTH_MODE": "token", "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    finally:
        down = head_cli(env, "cluster", "down")
        assert down.returncode == 0, down.stderr
        # raylets and monitor before the GCS: every process ends on SIGTERM
        assert "killed" not in down.stdout, down.stdout
    for epoch in (0, 1):
        ranks = [json.loads((tmp_path / f"rank{r}-epoch{epoch}.json").read_text()) for r in (0, 1)]
        assert ranks[0]["node"] != ranks[1]["node"]  # SPREAD: one worker per node
        assert ranks[0]["steps"] == ranks[1]["steps"] > 0  # DDP: the same number of steps
        rows = [set(r["rows"]) for r in ranks]
        assert rows[0]  # disjoint shares
        assert rows[1]
        assert not rows[0] & rows[1]
    # the second epoch is a new draw, not the first one again
    first = [json.loads((tmp_path / f"rank0-epoch{e}.json").read_text())["rows"] for e in (0, 1)]
    assert first[0] != first[1]
