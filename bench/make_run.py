"""Seconds of a cold vs a warm `make run` (its two commands, as separate processes), and
whether the warm run wrote exactly the cold run's bytes. Goal: warm <= 10 s.

Both runs read a scratch copy of the intra shards (so the cold run starts from an empty
evaluation cache) and write into scratch results, leaving results/ alone. No Ray.

    .venv/bin/python bench/make_run.py
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from raytasks.core import config
from raytasks.models import saved

COMMANDS = (["data", "build", "--scheme", "intra"], ["evaluate", "--split", "valid"])


def make_run(env: dict) -> float:
    t0 = time.perf_counter()
    for args in COMMANDS:
        subprocess.run(
            [sys.executable, "-m", "raytasks.cli", *args],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return time.perf_counter() - t0


def snapshot(root: Path) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def main():
    cfg = config.load()
    source = config.scheme_dir(cfg, "intra")
    with tempfile.TemporaryDirectory() as tmp:
        processed = Path(tmp) / "processed"
        shutil.copytree(source, processed / "intra")
        env = {
            **os.environ,
            "RAYTASKS_PROCESSED": str(processed),
            "RAYTASKS_RESULTS": str(Path(tmp) / "results"),
        }
        cold = make_run(env)
        first = snapshot(Path(tmp) / "results")
        warm = make_run(env)
        same = snapshot(Path(tmp) / "results") == first
    schemes = [
        saved.scheme_of(saved.read_info(p.parent))
        for p in config.where(cfg, "models").glob(f"*/{saved.INFO}")
    ]
    print(
        f"make run (data build + evaluate on intra valid: "
        f"{sum(s in (None, 'intra') for s in schemes)} models)"
    )
    print(f"  cold (empty cache) : {cold:6.1f} s")
    print(f"  warm               : {warm:6.1f} s  (goal <= 10 s)")
    print(
        f"  ratio cold / warm  : {cold / warm:6.1f}x; warm output byte-identical to cold: "
        f"{'yes' if same else 'NO'} ({len(first)} files)"
    )


if __name__ == "__main__":
    main()
