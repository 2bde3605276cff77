"""Score `raytasks predict` output on the held-out beats of a built split only: detection over
every beat of the split's records, classification over the split's beats (an intra model
was trained on ~64% of every record's beats; its test split's beats it has never seen).

    .venv/bin/python bench/score_split.py --predictions runs/predict48/ensemble-intra-detect \
        --shards /work/main/data/processed/intra/test
    .venv/bin/python bench/score_split.py --shards /work/main/data/processed/inter/test \
        --predictions runs/predict48/resnet1d-inter-rr-drop-detect
"""

import argparse
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from raytasks.core import config
from raytasks.data.mitdb import resolve_records
from raytasks.recordings.score import ec57_table, score_all


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--predictions", required=True)
    ap.add_argument("--shards", required=True, help="a split folder of built shards")
    args = ap.parse_args()
    cfg = config.load()
    records = resolve_records(cfg["records"], config.where(cfg, "raw_download"))
    table = (
        pq.ParquetDataset(
            sorted(str(p) for p in Path(args.shards).glob("*.parquet")),
        )
        .read(columns=["record", "sample"])
        .to_pandas()
    )
    only = {str(r): np.sort(g["sample"].to_numpy()) for r, g in table.groupby("record")}
    rows, cm = score_all(records, Path(args.predictions), only=only)
    print(f"{args.predictions}, classes scored on {args.shards} ({len(table)} beats):")
    print(ec57_table(rows, cm))


if __name__ == "__main__":
    main()
