"""Writing shards: <out>/<scheme>/{train,valid,test}/part-*.parquet plus build.json.

A shard holds each beat as one fixed-size tensor column (`beat`: FixedSizeList<float32>[187]),
so a reader gets an (n, 187) array without stacking 187 columns (see `shard_schema`). A
scheme is written into a folder beside its target and swapped in whole (paths.staged_dir).
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from raytasks.core.constants import utc_iso
from raytasks.core.paths import staged_dir
from raytasks.data import BEAT, BEAT_LEN, CLASS_SHORT, FEATURES, NUM_CLASSES, RR_FEATURES

BUILD_VERSION = 3  # 2: RR-interval columns; 3: the beat as one tensor column (LAYOUT)


def write_split(frame: pd.DataFrame, out: Path, shard_rows: int, seed: int) -> int:
    """Shuffle a split's rows (seeded) and write them as part-00000.parquet, ...

    Shuffling here makes every shard a class-mixed sample, so Ray Data's block-level
    parallelism and per-worker splits each see all classes.
    """
    out.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(seed).permutation(len(frame))
    frame = frame.iloc[order].reset_index(drop=True)
    n_shards = max(1, int(np.ceil(len(frame) / shard_rows)))
    for i, chunk in enumerate(np.array_split(np.arange(len(frame)), n_shards)):
        pq.write_table(shard_table(frame.iloc[chunk]), out / f"part-{i:05d}.parquet")
    return n_shards


def shard_schema(rr: bool = True) -> pa.Schema:
    """The shard layout (build.json `layout`): the beat as one FixedSizeList<float32>[187]
    column, then target, record, sample and (built shards only) the RR_FEATURES."""
    return pa.schema(
        [
            (BEAT, pa.list_(pa.float32(), BEAT_LEN)),
            ("target", pa.int64()),
            ("record", pa.string()),
            ("sample", pa.int64()),
        ]
        + [(c, pa.float32()) for c in (RR_FEATURES if rr else [])]
    )


def shard_table(frame: pd.DataFrame) -> pa.Table:
    """A frame with the hackathon's columns '0'..'186' (+ target, record, sample, RR) as a
    table of the shard layout."""
    rr = all(c in frame for c in RR_FEATURES)
    beats = np.ascontiguousarray(frame[FEATURES].to_numpy(np.float32))
    columns = [pa.FixedSizeListArray.from_arrays(pa.array(beats.ravel()), BEAT_LEN)]
    columns += [
        pa.array(frame[c].to_numpy(), type=t)
        for c, t in (("target", pa.int64()), ("record", pa.string()), ("sample", pa.int64()))
    ]
    columns += [pa.array(frame[c].to_numpy(np.float32)) for c in (RR_FEATURES if rr else [])]
    return pa.Table.from_arrays(columns, schema=shard_schema(rr))


def class_counts(frame: pd.DataFrame) -> list[int]:
    return np.bincount(frame["target"].to_numpy(), minlength=NUM_CLASSES).tolist()


def write_dataset(
    splits: dict[str, pd.DataFrame], dest: Path, meta: dict, shard_rows: int, seed: int
) -> dict:
    """Write splits + build.json into a folder beside `dest`, then swap it into place."""
    with staged_dir(dest) as tmp:
        meta = dict(meta, splits={})
        for i, (split, frame) in enumerate(splits.items()):
            shards = write_split(frame, tmp / split, shard_rows, seed + i)
            meta["splits"][split] = {
                "rows": len(frame),
                "shards": shards,
                "class_counts": class_counts(frame),
            }
        meta["created"] = utc_iso()
        (tmp / "build.json").write_text(json.dumps(meta, indent=2))
    return meta


def missing_classes(meta: dict) -> list[str]:
    """Warnings: splits that lack a class the build holds (a small or odd set of records)."""

    splits = meta.get("splits", {})
    total = np.sum([s["class_counts"] for s in splits.values()], axis=0)
    out = []
    for split, info in splits.items():
        gone = [
            CLASS_SHORT[c] for c in range(NUM_CLASSES) if total[c] and not info["class_counts"][c]
        ]
        if gone:
            out.append(f"{meta.get('scheme')}/{split} has no {', '.join(gone)} beats")
    return out


def counts_table(metas: dict[str, dict]) -> str:
    """Class counts per split and scheme as a fixed-width table."""

    head = f"{'scheme':<8}{'split':<7}" + "".join(f"{c:>8}" for c in CLASS_SHORT) + f"{'total':>9}"
    lines = [head, "-" * len(head)]
    for scheme, meta in metas.items():
        total = np.zeros(NUM_CLASSES, dtype=int)
        for split, info in meta["splits"].items():
            cc = np.asarray(info["class_counts"])
            total += cc
            lines.append(
                f"{scheme:<8}{split:<7}" + "".join(f"{v:>8}" for v in cc) + f"{cc.sum():>9}"
            )
        lines.append(
            f"{scheme:<8}{'all':<7}" + "".join(f"{v:>8}" for v in total) + f"{total.sum():>9}"
        )
    return "\n".join(lines)
