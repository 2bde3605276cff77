"""The training stream: a split's beat shards as a Ray Data dataset, fed to each TorchTrainer
worker through `ray.train.get_dataset_shard("train")` and resampled there every epoch.

    train_ds = open_split(files)                  # read once (or streamed, see below)
    TorchTrainer(loop, datasets={"train": train_ds, "valid": valid_ds}, ...)
    # in the loop: for batch in epoch_batches(get_dataset_shard("train"), epoch, ...)

`balance` alpha in [0, 1] sets the epoch's class shares p_c ~ count_c^(1 - alpha): 0 keeps
the natural frequencies, 1 gives equal classes. The epoch keeps the split's size N, so class
c is resampled at rate N p_c / count_c: each row is repeated floor(rate) times plus once more
with probability frac(rate) (rates below 1 thin the class). The draw for a row is a hash of
(record, sample, seed, epoch): which rows an epoch holds is fixed by the seed and changes every
epoch, wherever the row is read (any worker, any block order).

`record_balance` beta in [0, 1] (subject-invariant training) reshares each class among the
records that hold it, q_rc ~ count_rc^(1 - beta): at 0 one patient's 400 V beats outweigh ten
patients' 40 each, at 1 every record holding the class weighs the same. The class shares
stay those of `balance`; a row's rate is then N p_c q_rc / count_rc (`record_rates`).

Read once: a split that fits the object store's budget (`MATERIALIZE_SHARE` of it) is read
and materialized once (a search shares it between its trials); one that does not is streamed
from its shards every epoch, in a file order reseeded per epoch, never materialized. Either
way Ray Data hands out whole blocks (the beat in Ray's tensor type, zero-copy to torch), so
its per-batch cost is paid once per ~4,000 rows; the worker resamples and shuffles a block
with one gather and slices it into `batch_size` views.
"""

import json
import time
import zlib
from dataclasses import dataclass
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
    if (
        recorded not in (None, LAYOUT)
        or beat is None
        or not pa.types.is_fixed_size_list(beat)
        or beat.list_size != BEAT_LEN
    ):
        raise DataError(
            f"{Path(files[0]).parent.parent}: shards of layout {recorded or 1}, "
            f"this version reads layout {LAYOUT} (the beat as one tensor column); "
            f"rebuild: `raytasks data build --force` (imported files: "
            f"`raytasks data import` again)"
        )


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


def record_class_counts(files: list[str]) -> dict[int, list[int]]:
    """Rows per class of each record (keyed by the record's crc32, the high half of
    `row_keys`), reading only the record and target columns."""
    table = pq.ParquetDataset(files).read(columns=["record", "target"])
    codes = table.column("record").combine_chunks().dictionary_encode()
    names = codes.dictionary.to_pylist()
    pairs = codes.indices.to_numpy() * NUM_CLASSES + table.column("target").to_numpy()
    counts = np.bincount(pairs, minlength=len(names) * NUM_CLASSES).reshape(-1, NUM_CLASSES)
    return {zlib.crc32(n.encode()): c.tolist() for n, c in zip(names, counts)}


def record_rates(record_counts: dict, balance: float, record_balance: float):
    """(record crc32s, sorted; rates (records, classes)): the class shares of
    `resample_rates`, and within each class record r's share ~ n_rc^(1 - record_balance),
    so one record's many beats of a class stop standing for the whole class (0: natural,
    the same rates as `resample_rates`; 1: every record that has the class, equal)."""
    if not 0.0 <= record_balance <= 1.0:
        raise ValueError(f"record_balance must be in [0, 1], got {record_balance}")
    crcs = np.array(sorted(record_counts), dtype=np.uint64)
    n = np.array([record_counts[int(c)] for c in crcs], dtype=np.float64).reshape(-1, NUM_CLASSES)
    class_n = n.sum(axis=0)
    share = np.where(n > 0, n, 1.0) ** (1.0 - record_balance) * (n > 0)
    share /= np.maximum(share.sum(axis=0), 1e-300)  # within each class, over records
    per_class = resample_rates(class_n, balance) * class_n  # N p_c: the class's rows per epoch
    rates = np.where(n > 0, per_class * share / np.where(n > 0, n, 1.0), 0.0)
    return crcs, rates


def stream_rates(counts, balance: float, record_counts: dict | None, record_balance: float):
    """What `row_rates` reads: per class, or, given `record_counts`, per record and class
    (a record balance; or a CV fold, whose held-out records are left out of them)."""
    if record_counts:
        return record_rates(record_counts, balance, record_balance)
    return resample_rates(counts, balance)


def row_rates(rates, key: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each row's resampling rate: by its class (`resample_rates`), or by its record and
    class (`record_rates`; 0 for a record they leave out: a CV fold's held-out rows)."""
    if isinstance(rates, tuple):
        crcs, table = rates
        crc = key >> np.uint64(32)
        record = np.searchsorted(crcs, crc).clip(0, len(crcs) - 1)
        return np.where(crcs[record] == crc, table[record, y], 0.0)
    return rates[y]


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
    crc = np.array([zlib.crc32(n.encode()) for n in codes.dictionary.to_pylist()], dtype=np.uint64)
    return (crc[codes.indices.to_numpy()] << np.uint64(32)) ^ np.asarray(sample).astype(np.uint64)


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
        raise DataError(
            f"{Path(files[0]).parent}: shards have no RR-interval columns "
            f"{RR_FEATURES} (imported files carry none; shards built before "
            f"they existed: `raytasks data build --force`)"
        )


def read_split(files: list[str], rr: bool = False, keys: bool = False) -> dict[str, np.ndarray]:
    """A split as arrays: x float32 (n, 187[+4]) (the beat, then its RR features with `rr`),
    y int64, and with `keys` each row's key (see `row_keys`)."""
    check_layout(files)
    if rr:
        check_rr(files)
    columns = (
        [BEAT, "target"] + (RR_FEATURES if rr else []) + (["record", "sample"] if keys else [])
    )
    table = pq.ParquetDataset(files).read(columns=columns)
    beat = table.column(BEAT).combine_chunks()
    x = beat.flatten().to_numpy().reshape(len(beat), BEAT_LEN)  # no per-row stacking
    if rr:
        x = np.concatenate(
            [x, np.stack([table.column(c).to_numpy() for c in RR_FEATURES], axis=1)], axis=1
        )
    out = {
        "x": x,  # read-only when it is Arrow's own buffer
        "y": table.column("target").to_numpy().astype(np.int64),
    }
    if keys:
        out["key"] = row_keys(
            table.column("record").combine_chunks(), table.column("sample").to_numpy()
        )
    return out


def load_split(
    files: list[str], rr: bool = False, template: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """A whole split in memory as (x float32 (n, 187[+4[+187]]), y int64): validation and
    evaluation. With `template`, x ends with each beat's deviation from its record's
    template, the templates taken from this split's own beats (raytasks.data.features)."""
    arrays = read_split(files, rr=rr or template)
    x = np.array(arrays["x"])  # a writable copy: torch warns on read-only
    if template:
        from raytasks.data.features import with_deviations

        where = pq.ParquetDataset(files).read(columns=["record", "sample"])
        x = with_deviations(x, where.column("record").to_numpy(), where.column("sample"))
    return x, arrays["y"]


# ---------------------------------------------------------------- the Ray Data path

MATERIALIZE_SHARE = 0.25  # of the object store: room left for checkpoints and other trials
# rows per Ray Data block, one hand-out to a worker (~12 MB, 64 batches of 256): Ray Data's
# fixed cost per hand-out (~2 ms here) is paid per block, not per batch
BLOCK_ROWS = 16384
# a streamed split's read tasks: small, so that they fit beside a Tune trial (its own sliver
# of CPU) and its TorchTrainer workers (whole CPUs) on a 2-CPU machine instead of starving
STREAM_TASK_CPUS = 0.25
ROW_BYTES = (BEAT_LEN + len(RR_FEATURES)) * 4 + 16  # x, rr float32; y, key int64


@dataclass
class StreamStats:
    """Where a worker's stream time went (seconds): waiting for Ray Data's next block (the
    first one separately), resampling and shuffling blocks, and rows handed out."""

    first_block_s: float = 0.0
    wait_s: float = 0.0
    resample_s: float = 0.0
    blocks: int = 0
    rows: int = 0


def split_bytes(files: list[str]) -> int:
    """What a split takes as training rows (x float32 beat + RR, y, key), from the shards'
    metadata: nothing is read."""
    return sum(pq.read_metadata(f).num_rows for f in files) * ROW_BYTES


def choose_mode(files: list[str], store_bytes: float | None = None) -> str:
    """'materialize' when the split fits MATERIALIZE_SHARE of the object store, else
    'stream'. store_bytes: the cluster's object store (asked of Ray when not given)."""
    if store_bytes is None:
        import ray

        store_bytes = ray.cluster_resources().get("object_store_memory", 0)
    return "materialize" if split_bytes(files) <= MATERIALIZE_SHARE * store_bytes else "stream"


def to_training_rows(table: pa.Table, templates: dict | None = None) -> dict[str, np.ndarray]:
    """A shard batch -> x (n, 187) float32 (the beat), rr (n, 4) float32 when the shards
    carry the RR features, y int64, key int64 (`row_keys`, reinterpreted); with `templates`
    (record -> its template, raytasks.data.features) dev, the beat minus its template."""
    beat = table.column(BEAT).combine_chunks()
    rows = {"x": beat.flatten().to_numpy().reshape(len(beat), BEAT_LEN)}
    if templates is not None:
        from raytasks.data.features import deviations

        rows["dev"] = deviations(rows["x"], table.column("record").to_numpy(), templates)
    if set(RR_FEATURES) <= set(table.column_names):
        rows["rr"] = np.stack([table.column(c).to_numpy() for c in RR_FEATURES], axis=1).astype(
            np.float32
        )
    key = row_keys(table.column("record").combine_chunks(), table.column("sample").to_numpy())
    return rows | {
        "y": table.column("target").to_numpy().astype(np.int64),
        "key": key.view(np.int64),
    }


def open_split(
    files: list[str], seed: int = 0, mode: str = "auto", log=print, templates: dict | None = None
):
    """A split as a Ray Data dataset of {x, y, key} rows (+ rr, + dev with `templates`),
    read once into the object store ('materialize') or streamed from its shards per epoch
    ('stream'); 'auto' chooses by size, and the log says which. Block order is reseeded every
    epoch (execution) and fixed by the seed: one seed, the same batches, run after run."""
    import ray.data

    check_layout(files)
    mode = choose_mode(files) if mode == "auto" else mode
    ds = read_rows(files, seed, mode, templates)
    where = Path(files[0]).parent
    if mode == "stream":
        log(
            f"{where}: streamed from {len(files)} shards every epoch, never held whole "
            f"({split_bytes(files) / 1e6:.0f} MB; read once when <= {MATERIALIZE_SHARE:.0%} of "
            f"the object store)"
        )
        return ds
    ds = ds.materialize()
    log(
        f"{where}: {ds.count():,} rows read once into the object store "
        f"({split_bytes(files) / 1e6:.0f} MB)"
    )
    return ds.randomize_block_order(
        seed=ray.data.RandomSeedConfig(seed=seed, reseed_after_execution=True)
    )


def read_rows(files: list[str], seed: int, mode: str, templates: dict | None):
    """The lazy read: shards -> blocks of BLOCK_ROWS training rows (`to_training_rows`)."""
    import ray.data

    columns = [BEAT, "target", "record", "sample"] + (RR_FEATURES if has_rr(files) else [])
    shuffle = ray.data.FileShuffleConfig(seed=seed) if mode == "stream" else None
    remote = {"num_cpus": STREAM_TASK_CPUS} if mode == "stream" else {}
    if "://" not in files[0]:  # this machine's shards: read them on this node (a cluster's
        # other hosts need not hold them; the rows reach those through the object store)
        remote["label_selector"] = {"ray.io/node-id": ray.get_runtime_context().get_node_id()}
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # bars are noise in a job log; the log line says enough
    v2, ctx.use_datasource_v2 = ctx.use_datasource_v2, False
    try:  # Ray 2.60's V2 parquet reader spends ~60 ms per shard listing (9 s vs 2 s, 144 shards)
        ds = ray.data.read_parquet(files, columns=columns, shuffle=shuffle, **remote)
    finally:
        ctx.use_datasource_v2 = v2
    # blocks of BLOCK_ROWS, made as the rows stream by (a repartition would be all-to-all)
    row_bytes = ROW_BYTES + (BEAT_LEN * 4 if templates is not None else 0)  # + dev
    ds.context.target_max_block_size = int(BLOCK_ROWS * row_bytes * 1.25)
    # blocks in plan order, not in the order tasks and prefetch threads finish: the epoch's
    # batches are cut from blocks in arrival order, so otherwise two runs of one seed train
    # on different batches (a CV figure moved by 0.03 between two runs of one config)
    ds.context.execution_options.preserve_order = True
    return ds.map_batches(
        to_training_rows,
        fn_kwargs={"templates": templates},
        batch_format="pyarrow",
        batch_size=BLOCK_ROWS,
        zero_copy_batch=True,
        **remote,
    )


def model_columns(block: dict, rr: bool, template: bool = False) -> list:
    """The parts of x a model reads, in raytasks.nets' order: the beat, the RR features
    (a template model's x holds them, read or not), the deviation from the template."""
    return (
        [block["x"]]
        + ([block["rr"]] if rr or template else [])
        + ([block["dev"]] if template else [])
    )


def dataset_arrays(dataset, rr: bool, template: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A whole (small) dataset or dataset shard as (x, y) numpy arrays: the valid split."""
    xs, ys = [], []
    for block in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        xs.append(np.concatenate(model_columns(block, rr, template), axis=1))
        ys.append(block["y"])
    return np.concatenate(xs), np.concatenate(ys)


def epoch_batches(
    source,
    epoch: int,
    *,
    counts,
    balance: float,
    seed: int,
    batch_size: int,
    record_counts: dict | None = None,
    record_balance: float = 0.0,
    rr: bool = False,
    template: bool = False,
    rank: int = 0,
    steps: int | None = None,
    device: str | torch.device = "cpu",
    prefetch: int = 2,
    stats: StreamStats | None = None,
):
    """{'x', 'y'} torch batches of one epoch of `source` (a Dataset, or a worker's
    DataIterator), resampled by `stream_rates` (class and record balance) and shuffled.
    Ray Data hands out whole blocks; each is resampled by its rows' hashes, permuted with
    a generator fixed by (seed, epoch, rank), gathered once and cut into batch_size views;
    rows left at a block's end open the next batch. With `steps` exactly that many batches
    come out (DDP ranks must take the same number of steps): surplus rows are dropped, a
    short share is topped up with rows drawn again from its last block."""
    rng = np.random.default_rng([seed, epoch, rank])
    stats = stats if stats is not None else StreamStats()
    device = torch.device(device)
    last = []  # the latest block: a short DDP share is topped up from it

    def remember(blocks):
        for block in blocks:
            last[:] = [block]
            yield block

    rates = stream_rates(counts, balance, record_counts, record_balance)
    blocks = resampled_blocks(source, rates, seed, epoch, rng, (rr, template), prefetch, stats)
    done = 0
    for x, y in rebatch(remember(blocks), batch_size):
        if steps is not None and (done >= steps or len(y) < batch_size):
            break
        yield to_device(x, y, device, stats)
        done += 1
    if steps is not None:
        yield from top_up(last, steps - done, batch_size, rng, device, stats)


def top_up(last: list, missing: int, batch_size: int, rng, device, stats: StreamStats):
    """A short DDP share's missing batches, rows drawn again from its last block."""
    for _ in range(missing if last else 0):
        x, y = last[0]
        pick = torch.from_numpy(rng.integers(0, len(y), batch_size))
        yield to_device(x[pick], y[pick], device, stats)


def resampled_blocks(source, rates, seed: int, epoch: int, rng, reads, prefetch, stats):
    """(x, y) of each block Ray Data hands out, resampled and shuffled (`resample_block`);
    the time spent waiting for blocks and resampling them goes into `stats`."""
    t0 = time.perf_counter()
    for block in source.iter_torch_batches(batch_size=None, prefetch_batches=prefetch):
        waited = time.perf_counter() - t0
        if stats.blocks:
            stats.wait_s += waited
        else:
            stats.first_block_s += waited
        stats.blocks += 1
        t1 = time.perf_counter()
        x, y = resample_block(block, rates, seed, epoch, rng, *reads)
        stats.resample_s += time.perf_counter() - t1
        if len(y):
            yield x, y
        t0 = time.perf_counter()


def rebatch(blocks, batch_size: int):
    """Blocks cut into batch_size views; rows left at a block's end open the next batch
    (the one copy), and what is left at the end comes out as a last, shorter batch."""
    carry = None
    for x, y in blocks:
        if carry is not None:
            need = batch_size - len(carry[1])
            head = torch.cat([carry[0], x[:need]]), torch.cat([carry[1], y[:need]])
            x, y, carry = x[need:], y[need:], None
            if len(head[1]) < batch_size:  # a block smaller than the gap: keep filling
                carry = head
                continue
            yield head
        full = len(y) // batch_size * batch_size
        for i in range(0, full, batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]
        carry = (x[full:], y[full:]) if full < len(y) else None
    if carry is not None:
        yield carry


def to_device(x, y, device: torch.device, stats: StreamStats) -> dict:
    """A batch as the train loop takes it: pinned and copied to a GPU when there is one."""
    stats.rows += len(y)
    if device.type == "cuda":
        return {
            "x": x.pin_memory().to(device, non_blocking=True),
            "y": y.pin_memory().to(device, non_blocking=True),
        }
    return {"x": x, "y": y}


def resample_block(
    block: dict, rates: np.ndarray, seed: int, epoch: int, rng, rr: bool, template: bool = False
):
    """A block's rows for this epoch: each repeated by its hash's draw, shuffled, gathered
    once (x: the columns the model reads, `model_columns`)."""
    y = block["y"]
    key = block["key"].numpy().view(np.uint64)
    u = key_uniforms(key, seed, epoch)
    rate = row_rates(rates, key, y.numpy())
    copies = np.floor(rate).astype(np.int64) + (u < rate - np.floor(rate))
    idx = torch.from_numpy(rng.permutation(np.repeat(np.arange(len(y)), copies)))
    parts = model_columns(block, rr, template)
    x = parts[0][idx] if len(parts) == 1 else torch.cat([p[idx] for p in parts], dim=1)
    return x, y[idx]
