"""Shared fixtures: a few real MIT-BIH records from ../shared, their shards, one Ray cluster.

Ray is started once per session. `make test` runs the suite inside `unshare -n` where it can
(so Ray's startup probes cannot leave the machine); `make test-fast` runs what needs no Ray.

Markers: `ray` (the test starts Ray: every test using the `ray_cluster` fixture is marked
here), `cluster` (it starts a multi-process cluster of its own), `slow` (> ~5 s without
Ray). With RAYTASKS_TEST_NO_RAY=1 (make test-fast) starting Ray fails the test: a test that
starts Ray without its marker cannot hide in the fast loop.
"""

import os
import shutil
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
