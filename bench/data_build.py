"""Wall time of a full 48-record build (both schemes) from raw records.

MITDB_DIR=../shared/data/mitdb .venv/bin/python bench/data_build.py
"""

import tempfile
import time
from pathlib import Path

from raytasks.core import config
from raytasks.data.build import build
from raytasks.data.mitdb import resolve_records


def main():
    cfg = config.load()
    records = resolve_records(cfg["records"], config.where(cfg, "raw_download"))
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        metas = build(records, Path(out), ("intra", "inter"), force=True)
        seconds = time.perf_counter() - t0
    beats = sum(i["rows"] for i in metas["intra"]["splits"].values())
    print(
        f"full build: {len(metas['intra']['records'])} records, {beats} beats, both schemes: "
        f"{seconds:.1f} s ({beats / seconds:.0f} beats/s)"
    )


if __name__ == "__main__":
    main()
