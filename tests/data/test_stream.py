"""The Ray Data training stream on real shards: class shares, per-row hash draws,
reproducibility per seed and epoch, equal steps, RR columns, the materialize/stream choice."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from raytasks.data import RR_FEATURES, DataError
from raytasks.data import stream as stream_mod
from raytasks.data.shards import shard_table
from raytasks.data.stream import (
    StreamStats,
    choose_mode,
    class_counts,
    epoch_batches,
    load_split,
    open_split,
    record_class_counts,
    record_rates,
    resample_rates,
    row_uniforms,
    split_bytes,
    split_files,
)
from tests.conftest import read_shards

QUIET = {"log": lambda _: None}


def take(ds, counts, epoch=0, seed=0, alpha=0.5, **kw) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for b in epoch_batches(
        ds, epoch, counts=counts, balance=alpha, seed=seed, batch_size=512, **kw
    ):
        xs.append(b["x"].numpy())
        ys.append(b["y"].numpy())
    return np.concatenate(xs), np.concatenate(ys)


@pytest.fixture(scope="module")
def intra(processed):
    files = split_files(processed / "intra", "train")
    return files, class_counts(files)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_balanced_proportions(ray_cluster, intra, alpha):
    files, counts = intra
    x, y = take(open_split(files, seed=3, **QUIET), counts, alpha=alpha)
    assert x.shape[1] == 187
    assert x.dtype == np.float32
    present = counts > 0
    expected = np.where(present, counts ** (1 - alpha), 0.0)
    expected = expected / expected.sum()
    got = np.bincount(y, minlength=5) / len(y)
    # epoch size is kept (sampling noise only) and each class lands on its share
    assert abs(len(y) - counts.sum()) < 4 * np.sqrt(counts.sum())
    np.testing.assert_allclose(got[present], expected[present], atol=0.015)


def test_each_row_is_drawn_by_its_own_hash(ray_cluster, intra):
    """Row i appears floor(rate) times, plus once when hash(record, sample, seed, epoch) <
    frac(rate), whichever block and order Ray Data hands it out in."""
    files, counts = intra
    frame = read_shards(files)
    ref_x, _ = load_split(files)
    where = {row.tobytes(): i for i, row in enumerate(ref_x)}
    assert len(where) == len(ref_x)  # beats are unique: a row's bytes name it
    rate = resample_rates(counts, 0.7)[frame["target"].to_numpy()]
    ds = open_split(files, seed=5, **QUIET)
    for epoch in (0, 1):
        u = row_uniforms(frame["record"].to_numpy(), frame["sample"].to_numpy(), 5, epoch)
        expected = np.floor(rate).astype(int) + (u < rate - np.floor(rate))
        x, _ = take(ds, counts, epoch=epoch, seed=5, alpha=0.7)
        got = np.bincount([where[row.tobytes()] for row in x], minlength=len(ref_x))
        np.testing.assert_array_equal(got, expected)


def test_stream_reproducible_per_seed_and_changes_per_epoch(ray_cluster, intra):
    files, counts = intra
    first = open_split(files, seed=5, **QUIET)
    a0, a1 = take(first, counts, 0, seed=5), take(first, counts, 1, seed=5)
    again = open_split(files, seed=5, **QUIET)
    b0, b1 = take(again, counts, 0, seed=5), take(again, counts, 1, seed=5)
    for a, b in ((a0, b0), (a1, b1)):  # the same epoch of the same seed: the same batches
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    # consecutive epochs differ in which rows they hold, not only in their order
    assert (
        len(a0[1]) != len(a1[1])
        or not np.array_equal(np.sort(a0[1]), np.sort(a1[1]))
        or (not np.array_equal(np.sort(a0[0], axis=0), np.sort(a1[0], axis=0)))
    )
    other = take(open_split(files, seed=6, **QUIET), counts, 0, seed=6)
    assert len(a0[1]) != len(other[1]) or not np.array_equal(a0[0], other[0])


@pytest.mark.parametrize("mode", ["materialize", "stream"])
def test_one_seed_the_same_batches_whatever_order_blocks_finish_in(
    ray_cluster, intra, mode, monkeypatch
):
    """Batches are cut from blocks in the order they arrive: Ray Data must hand them out in
    plan order (4 prefetch threads finish in any order), else two runs of one seed differ.
    Small blocks, many of them: without plan order this fails nearly every run."""
    monkeypatch.setattr(stream_mod, "BLOCK_ROWS", 256)
    files, counts = intra
    runs = [
        take(open_split(files, seed=5, mode=mode, **QUIET), counts, 0, seed=5, prefetch=4)
        for _ in range(3)
    ]
    for x, y in runs[1:]:
        np.testing.assert_array_equal(y, runs[0][1])
        np.testing.assert_array_equal(x, runs[0][0])


def test_steps_fix_the_batch_count_both_ways(ray_cluster, intra):
    """DDP ranks take `steps` batches: fewer than the share holds (the rest dropped) or more
    (topped up from the share's own rows), every batch full."""
    files, counts = intra
    ds = open_split(files, seed=1, **QUIET)
    whole = len(take(ds, counts)[1])
    for steps in (whole // 512 // 2, whole // 512 + 5):
        batches = list(
            epoch_batches(ds, 0, counts=counts, balance=0.5, seed=1, batch_size=512, steps=steps)
        )
        assert len(batches) == steps
        assert {len(b["y"]) for b in batches} == {512}


def test_stream_stats_say_where_time_went(ray_cluster, intra):
    files, counts = intra
    stats = StreamStats()
    _, y = take(open_split(files, **QUIET), counts, stats=stats)
    assert stats.rows == len(y)
    assert stats.blocks >= 1
    assert stats.first_block_s > 0
    assert stats.resample_s > 0


def test_materialize_or_stream_by_size(ray_cluster, intra, monkeypatch):
    files, counts = intra
    assert split_bytes(files) == counts.sum() * stream_mod.ROW_BYTES
    assert choose_mode(files, store_bytes=split_bytes(files) * 4) == "materialize"
    assert choose_mode(files, store_bytes=split_bytes(files) * 3) == "stream"
    lines = []
    streamed = open_split(files, seed=2, mode="stream", log=lines.append)
    assert "streamed from" in lines[0]
    assert "every epoch" in lines[0]
    kept = open_split(files, seed=2, log=lines.append)  # 2 MB against a store of GBs
    assert "read once into the object store" in lines[1]
    # both hold the same rows: the same multiset of draws for a seed and epoch
    for ds in (streamed, kept):
        _, y = take(ds, counts, 3, seed=2)
        np.testing.assert_array_equal(
            np.bincount(y, minlength=5), np.bincount(take(kept, counts, 3, seed=2)[1], minlength=5)
        )


def test_rates_reject_bad_alpha():
    with pytest.raises(ValueError, match="balance must be in"):
        resample_rates([10, 1, 1, 1, 1], 1.5)
    np.testing.assert_allclose(resample_rates([80, 20, 0, 0, 0], 0.0)[:2], [1, 1])


@pytest.mark.parametrize("beta", [0.0, 0.6, 1.0])
def test_record_balance_reshares_each_class_among_records(ray_cluster, processed, beta):
    """Class shares stay those of `balance`; within a class each record's share follows
    count_rc^(1 - beta): 0 the same draws as the class-only stream, 1 records equal."""
    files = split_files(processed / "intra", "train")  # all three slice records
    counts, per_record = class_counts(files), record_class_counts(files)
    frame = read_shards(files)
    assert sum(map(np.array, per_record.values())).tolist() == counts.tolist()
    where = {row.tobytes(): r for row, r in zip(load_split(files)[0], frame["record"])}
    ds = open_split(files, seed=2, **QUIET)
    kw = {"record_counts": per_record, "record_balance": beta}
    x, y = take(ds, counts, alpha=0.5, **kw)
    if beta == 0.0:  # identical rows to the stream without record balance
        np.testing.assert_array_equal(np.sort(y), np.sort(take(ds, counts, alpha=0.5)[1]))
    share = np.bincount(y, minlength=5) / len(y)
    expected = counts**0.5 / (counts**0.5).sum()
    np.testing.assert_allclose(share[counts > 0], expected[counts > 0], atol=0.02)
    n_drawn = pd.crosstab(pd.Series([where[r.tobytes()] for r in x]), pd.Series(y))
    n_have = pd.crosstab(frame["record"], frame["target"])
    checked = n_have.columns[(n_have > 0).sum() >= 2]  # classes held by several records
    assert len(checked) >= 2
    for c in checked:
        have = n_have[c][n_have[c] > 0]
        q = have ** (1 - beta) / (have ** (1 - beta)).sum()
        got = n_drawn[c].reindex(have.index, fill_value=0) / n_drawn[c].sum()
        assert np.abs(got - q).max() < 0.05 + 3 * np.sqrt(q / n_drawn[c].sum()).max()


def test_record_rates_give_the_class_rates_at_zero_and_reject_bad_beta():
    per_record = {3: [50, 1, 5, 0, 0], 1: [100, 10, 0, 0, 0], 2: [300, 0, 5, 0, 0]}
    crcs, table = record_rates(per_record, 0.5, 0.0)
    assert crcs.tolist() == [1, 2, 3]  # sorted, for row_rates' searchsorted
    n = np.array([per_record[c] for c in (1, 2, 3)])
    class_rate = resample_rates(n.sum(axis=0), 0.5)
    np.testing.assert_allclose(table, np.where(n > 0, class_rate, 0.0))
    _, equal = record_rates(per_record, 0.5, 1.0)
    # at 1 each record holding S draws the same S rows per epoch: 10 * r = 1 * r'
    assert np.isclose(10 * equal[0, 1], 1 * equal[2, 1])
    np.testing.assert_allclose((n * equal).sum(axis=0), (n * table).sum(axis=0))  # class rows
    with pytest.raises(ValueError, match="record_balance"):
        record_rates(per_record, 0.5, 1.5)


def test_rr_stream_carries_each_beat_s_own_rr_features(ray_cluster, intra, tmp_path):
    files, counts = intra
    x, y = take(open_split(files, seed=1, **QUIET), counts, rr=True)
    assert x.shape[1] == 187 + len(RR_FEATURES)
    ref_x, ref_y = load_split(files, rr=True)
    rows = {tuple(r): c for r, c in zip(ref_x.round(5), ref_y)}
    # every streamed row (beat + RR) is exactly one of the split's rows, with its label
    assert all(rows.get(tuple(r)) == c for r, c in zip(x[:2000].round(5), y[:2000]))
    # shards without RR columns (imported files) are refused for an RR model, saying why
    beats_only = tmp_path / "imported" / "valid" / "part-00000.parquet"
    beats_only.parent.mkdir(parents=True)
    pq.write_table(shard_table(read_shards(files[:1]).drop(columns=RR_FEATURES)), beats_only)
    with pytest.raises(DataError, match="no RR-interval columns"):
        load_split([str(beats_only)], rr=True)
