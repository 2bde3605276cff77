"""The training stream: parquet shards -> class-balanced, shuffled Ray Data -> torch batches.

`balance` alpha in [0, 1] sets the epoch's class shares p_c ~ count_c^(1 - alpha): 0 keeps
the natural frequencies, 1 gives equal classes. The epoch keeps the split's size N, so class
c is resampled at rate N p_c / count_c: each row is repeated floor(rate) times plus once more
with probability frac(rate) (rates below 1 thin the class). That is one `map_batches` pass,
no per-class filter/union.

The draw for a row is a hash of (record, sample, seed, epoch), so a stream is reproducible
for a given seed whatever the block boundaries, and changes every epoch. Inside a
TorchTrainer the dataset is built once, so its epoch comes from an `EpochClock` actor the
train loop sets before each pass.
"""

import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import ray

from raytasks.data import FEATURES, NUM_CLASSES, RR_FEATURES, DataError

DATA_CPUS = 0.25
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def split_files(data_dir: str | Path, split: str) -> list[str]:
    """The shard files of one split of a built scheme, e.g. data/processed/intra + 'train'."""
    files = sorted(str(p) for p in (Path(data_dir) / split).glob("part-*.parquet"))
    if not files:
        raise DataError(f"{Path(data_dir) / split}: no shards; run `raytasks data build` first")
    return files


def class_counts(files: list[str]) -> np.ndarray:
    """Rows per class over shards, reading only the target column."""
    target = pq.ParquetDataset(files).read(columns=["target"]).column("target").to_numpy()
    return np.bincount(target, minlength=NUM_CLASSES)


def resample_rates(counts, balance: float) -> np.ndarray:
    """Per-row rate for each class: N p_c / n_c with p_c ~ n_c^(1 - balance)."""
    if not 0.0 <= balance <= 1.0:
        raise ValueError(f"balance must be in [0, 1], got {balance}")
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    share = np.zeros_like(counts)
    share[present] = counts[present] ** (1.0 - balance)
    share /= share.sum()
    rates = np.zeros_like(counts)
    rates[present] = counts.sum() * share[present] / counts[present]
    return rates


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _M64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
        return x ^ (x >> np.uint64(31))


def row_uniforms(record: np.ndarray, sample: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """A uniform [0, 1) per row, fixed by (record, sample, seed, epoch)."""
    rec = np.fromiter((zlib.crc32(str(r).encode()) for r in record), dtype=np.uint64,
                      count=len(record))
    key = (rec << np.uint64(32)) ^ sample.astype(np.uint64)
    salt = _splitmix64(np.array([seed * 1_000_003 + epoch], dtype=np.uint64))[0]
    return (_splitmix64(key ^ salt) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@ray.remote(num_cpus=0)
class EpochClock:
    """The epoch the stream resamples for; set by the train loop before each pass."""

    def __init__(self, epoch: int = 0):
        self.epoch = epoch

    def set(self, epoch: int) -> None:
        self.epoch = epoch

    def get(self) -> int:
        return self.epoch


def inputs(rr: bool) -> list[str]:
    """The columns a model reads, in order: the beat, then its RR features if it uses them."""
    return FEATURES + RR_FEATURES if rr else FEATURES


def has_rr(files: list[str]) -> bool:
    """Whether a split's shards carry the RR columns (built ones do, imported ones don't)."""
    return set(RR_FEATURES) <= set(pq.read_schema(files[0]).names)


def check_rr(files: list[str]) -> None:
    """Refuse shards without RR columns for a model that reads them, saying why."""
    if not has_rr(files):
        raise DataError(f"{Path(files[0]).parent}: shards have no RR-interval columns "
                        f"{RR_FEATURES} (imported files carry none; shards built before "
                        f"they existed: `raytasks data build --force`)")


def resample_batch(batch: dict, rates: np.ndarray, seed: int, epoch, rr: bool = False) -> dict:
    """Repeat/thin one batch's rows by class rate, shuffle them, pack x (n, 187[+4]) and y."""
    if not isinstance(epoch, int):
        epoch = ray.get(epoch.get.remote())
    y = batch["target"].astype(np.int64)
    u = row_uniforms(batch["record"], batch["sample"], seed, epoch)
    rate = rates[y]
    copies = np.floor(rate).astype(np.int64) + (u < rate - np.floor(rate))
    idx = np.repeat(np.arange(len(y)), copies)
    # shuffle within the batch too: shards are already class-mixed, this mixes the repeats
    key = int(u[0] * (1 << 31)) if len(u) else 0
    idx = np.random.default_rng([seed, epoch, key]).permutation(idx)
    x = np.stack([batch[c] for c in inputs(rr)], axis=1).astype(np.float32)
    return {"x": x[idx], "y": y[idx]}


def balanced_stream(files: list[str], balance: float = 0.0, seed: int = 0, epoch=0,
                    counts=None, rr: bool = False) -> "ray.data.Dataset":
    """A Ray Dataset of {'x': float32[187], 'y': int64} rows, class-balanced by `balance`.

    With `rr`, x also carries the beat's RR_FEATURES (float32[191]).

    `epoch` is an int, or an `EpochClock` handle for a dataset reused across epochs.
    """
    counts = class_counts(files) if counts is None else np.asarray(counts)
    rates = resample_rates(counts, balance)
    # small CPU requests, so reads fit next to Tune trials and Train workers (Ray Data's file
    # listing still takes a whole CPU: callers leave 1 CPU free, see raytasks.tune)
    if rr:
        check_rr(files)
    ds = ray.data.read_parquet(files, columns=inputs(rr) + ["target", "record", "sample"],
                               num_cpus=DATA_CPUS)
    # keep block order so that a seed reproduces the exact sequence
    ds.context.execution_options.preserve_order = True
    return ds.map_batches(resample_batch, batch_format="numpy", batch_size=None,
                          num_cpus=DATA_CPUS,
                          fn_kwargs={"rates": rates, "seed": seed, "epoch": epoch, "rr": rr})


def load_split(files: list[str], rr: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A whole split in memory as (x float32 (n, 187[+4]), y int64): validation/evaluation."""
    if rr:
        check_rr(files)
    table = pq.ParquetDataset(files).read(columns=inputs(rr) + ["target"])
    x = np.stack([table.column(c).to_numpy() for c in inputs(rr)], axis=1).astype(np.float32)
    return x, table.column("target").to_numpy().astype(np.int64)
