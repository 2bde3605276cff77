"""The training stream: a split's shards read once into Ray's object store, then every epoch a
class-balanced, shuffled resample of them, batched and prefetched on each worker.

`balance` alpha in [0, 1] sets the epoch's class shares p_c ~ count_c^(1 - alpha): 0 keeps
the natural frequencies, 1 gives equal classes. The epoch keeps the split's size N, so class
c is resampled at rate N p_c / count_c: each row is repeated floor(rate) times plus once more
with probability frac(rate) (rates below 1 thin the class).

The draw for a row is a hash of (record, sample, seed, epoch): an epoch is reproducible for a
given seed and changes every epoch. Each worker computes the whole epoch's shuffled row list
itself (a few milliseconds of numpy over the split's row keys; no coordination needed) and
takes its rank's equal slice, so DDP workers see disjoint rows and the same number of steps.

Why not a Ray Data pipeline per epoch: re-reading and re-stacking the shards every epoch ran
at 0.026x the speed of in-memory tensors (bench/stream.py). The split (52 MB for intra train)
is read once; workers on a node share the object store's copy without copying it.
"""

import json
import queue
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from raytasks.data import BEAT, BEAT_LEN, LAYOUT, NUM_CLASSES, RR_FEATURES, DataError

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def split_files(data_dir: str | Path, split: str) -> list[str]:
    """The shard files of one split of a built scheme, e.g. data/processed/intra + 'train'."""
    files = sorted(str(p) for p in (Path(data_dir) / split).glob("part-*.parquet"))
    if not files:
        raise DataError(f"{Path(data_dir) / split}: no shards; run `raytasks data build` first")
    check_layout(files)
    return files


def check_layout(files: list[str]) -> None:
    """Refuse shards of another layout (e.g. 187 scalar columns), saying how to rebuild."""
    meta = Path(files[0]).parent.parent / "build.json"
    recorded = json.loads(meta.read_text()).get("layout", 1) if meta.exists() else None
    schema = pq.read_schema(files[0])
    beat = schema.field(BEAT).type if BEAT in schema.names else None
    if (recorded not in (None, LAYOUT) or beat is None or not pa.types.is_fixed_size_list(beat)
            or beat.list_size != BEAT_LEN):
        raise DataError(f"{Path(files[0]).parent.parent}: shards of layout {recorded or 1}, "
                        f"this version reads layout {LAYOUT} (the beat as one tensor column); "
                        f"rebuild: `raytasks data build --force` (imported files: "
                        f"`raytasks data import` again)")


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


def row_keys(record, sample: np.ndarray) -> np.ndarray:
    """A uint64 identity per row: crc32(record) in the high half, the R-peak sample below.

    `record` is an array of names or an Arrow array (dictionary-encoded here: a split holds
    a few dozen records, so each name is hashed once)."""
    codes = pa.array(record, type=pa.string()).dictionary_encode()
    crc = np.array([zlib.crc32(n.encode()) for n in codes.dictionary.to_pylist()],
                   dtype=np.uint64)
    return ((crc[codes.indices.to_numpy()] << np.uint64(32))
            ^ np.asarray(sample).astype(np.uint64))


def key_uniforms(keys: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """A uniform [0, 1) per row key, fixed by (key, seed, epoch)."""
    salt = _splitmix64(np.array([seed * 1_000_003 + epoch], dtype=np.uint64))[0]
    return (_splitmix64(keys ^ salt) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def row_uniforms(record: np.ndarray, sample: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """A uniform [0, 1) per row, fixed by (record, sample, seed, epoch)."""
    return key_uniforms(row_keys(record, sample), seed, epoch)


def has_rr(files: list[str]) -> bool:
    """Whether a split's shards carry the RR columns (built ones do, imported ones don't)."""
    return set(RR_FEATURES) <= set(pq.read_schema(files[0]).names)


def check_rr(files: list[str]) -> None:
    """Refuse shards without RR columns for a model that reads them, saying why."""
    if not has_rr(files):
        raise DataError(f"{Path(files[0]).parent}: shards have no RR-interval columns "
                        f"{RR_FEATURES} (imported files carry none; shards built before "
                        f"they existed: `raytasks data build --force`)")


def read_split(files: list[str], rr: bool = False, keys: bool = False) -> dict[str, np.ndarray]:
    """A split as arrays: x float32 (n, 187[+4]) (the beat, then its RR features with `rr`),
    y int64, and with `keys` each row's key (see `row_keys`)."""
    check_layout(files)
    if rr:
        check_rr(files)
    columns = [BEAT, "target"] + (RR_FEATURES if rr else []) + (
        ["record", "sample"] if keys else [])
    table = pq.ParquetDataset(files).read(columns=columns)
    beat = table.column(BEAT).combine_chunks()
    x = beat.flatten().to_numpy().reshape(len(beat), BEAT_LEN)  # no per-row stacking
    if rr:
        x = np.concatenate([x, np.stack([table.column(c).to_numpy() for c in RR_FEATURES],
                                        axis=1)], axis=1)
    out = {"x": x,  # read-only when it is Arrow's own buffer
           "y": table.column("target").to_numpy().astype(np.int64)}
    if keys:
        out["key"] = row_keys(table.column("record").combine_chunks(),
                              table.column("sample").to_numpy())
    return out


def load_split(files: list[str], rr: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A whole split in memory as (x float32 (n, 187[+4]), y int64): validation/evaluation."""
    arrays = read_split(files, rr=rr)
    return np.array(arrays["x"]), arrays["y"]  # a writable copy: torch warns on read-only


@dataclass
class StreamStats:
    """Where a worker's stream time went (seconds): building epoch row lists, gathering
    batches (in the prefetch thread), and the train loop waiting for a batch."""

    index_s: float = 0.0
    gather_s: float = 0.0
    wait_s: float = 0.0
    rows: int = 0


@dataclass(eq=False)
class BalancedStream:
    """A split held in Ray's object store, resampled per epoch (see the module docstring).

    Picklable (it carries an ObjectRef): build it once on the driver with `materialize`,
    hand it to every worker, and call `batches(epoch, ...)` there.
    """

    ref: object  # a ray.ObjectRef of the {"x", "y", "key"} arrays
    counts: np.ndarray
    balance: float
    seed: int
    stats: StreamStats = field(default_factory=StreamStats)

    @classmethod
    def materialize(cls, files: list[str], balance: float, seed: int,
                    rr: bool = False) -> "BalancedStream":
        """Read the split into the object store (balance and seed: the training settings')."""
        import ray

        arrays = read_split(files, rr=rr, keys=True)
        counts = np.bincount(arrays["y"], minlength=NUM_CLASSES)
        resample_rates(counts, balance)  # refuse a bad alpha before any worker starts
        return cls(ray.put(arrays), counts, balance, seed)

    def __getstate__(self):  # ship the reference, never the arrays a driver fetched
        return {k: v for k, v in self.__dict__.items() if k != "_arrays"}

    def arrays(self) -> dict[str, np.ndarray]:
        """The split's arrays (zero-copy from the object store on a worker's node)."""
        if not hasattr(self, "_arrays"):
            import ray

            self._arrays = ray.get(self.ref)
        return self._arrays

    def epoch_rows(self, epoch: int, rank: int = 0, world: int = 1) -> np.ndarray:
        """Row indices of this rank's share of an epoch, resampled and shuffled."""
        t0 = time.perf_counter()
        a = self.arrays()
        rate = resample_rates(self.counts, self.balance)[a["y"]]
        u = key_uniforms(a["key"], self.seed, epoch)
        copies = np.floor(rate).astype(np.int64) + (u < rate - np.floor(rate))
        rows = np.random.default_rng([self.seed, epoch]).permutation(
            np.repeat(np.arange(len(copies)), copies))
        share = len(rows) // world  # equal shares: DDP ranks must take the same steps
        self.stats.index_s += time.perf_counter() - t0
        return rows[rank * share:(rank + 1) * share]

    def batches(self, epoch: int, batch_size: int, rank: int = 0, world: int = 1,
                device: str | torch.device = "cpu", prefetch: int = 4):
        """{'x', 'y'} torch batches of this rank's share of an epoch, gathered ahead of the
        train loop by a thread (pinned and copied to `device` there when it is a GPU)."""
        a, rows = self.arrays(), self.epoch_rows(epoch, rank, world)
        device = torch.device(device)

        def make():
            for i in range(0, len(rows), batch_size):
                t0 = time.perf_counter()
                idx = rows[i:i + batch_size]
                batch = {"x": torch.from_numpy(a["x"][idx]), "y": torch.from_numpy(a["y"][idx])}
                if device.type == "cuda":
                    batch = {k: v.pin_memory().to(device, non_blocking=True)
                             for k, v in batch.items()}
                self.stats.gather_s += time.perf_counter() - t0
                yield batch

        for batch in prefetched(make(), prefetch, self.stats):
            self.stats.rows += len(batch["y"])
            yield batch


_END = object()


def prefetched(items, depth: int, stats: StreamStats):
    """Iterate `items` produced `depth` ahead by a daemon thread; errors surface here."""
    q: queue.Queue = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()

    def produce():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        pass
                if stop.is_set():
                    return
            q.put(_END)
        except BaseException as e:  # handed to the consumer, raised in its thread
            q.put(e)

    threading.Thread(target=produce, daemon=True).start()
    try:
        while True:
            t0 = time.perf_counter()
            item = q.get()
            stats.wait_s += time.perf_counter() - t0
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()  # the consumer stopped early: let the producer end
