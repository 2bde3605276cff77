import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from raytasks.data import RR_FEATURES, DataError
from raytasks.data.shards import shard_table
from raytasks.data.stream import (
    BalancedStream,
    StreamStats,
    class_counts,
    load_split,
    prefetched,
    resample_rates,
    row_uniforms,
    split_files,
)
from tests.conftest import read_shards


def take(stream, epoch=0, **kw) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for b in stream.batches(epoch, 512, **kw):
        xs.append(b["x"].numpy())
        ys.append(b["y"].numpy())
    return np.concatenate(xs), np.concatenate(ys)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_balanced_proportions(ray_cluster, processed, alpha):
    files = split_files(processed / "intra", "train")
    counts = class_counts(files)
    x, y = take(BalancedStream.materialize(files, alpha, seed=3))
    assert x.shape[1] == 187 and x.dtype == np.float32
    present = counts > 0
    expected = np.where(present, counts ** (1 - alpha), 0.0)
    expected = expected / expected.sum()
    got = np.bincount(y, minlength=5) / len(y)
    # epoch size is kept (sampling noise only) and each class lands on its share
    assert abs(len(y) - counts.sum()) < 4 * np.sqrt(counts.sum())
    np.testing.assert_allclose(got[present], expected[present], atol=0.015)
    if alpha == 1.0:
        assert got[present].min() > 0.9 / present.sum()


def test_each_row_is_drawn_by_its_own_hash(ray_cluster, processed):
    """Same semantics as the per-batch Ray Data resampling it replaced: row i appears
    floor(rate) times, plus once when hash(record, sample, seed, epoch) < frac(rate)."""
    files = split_files(processed / "intra", "train")
    stream = BalancedStream.materialize(files, 0.7, seed=5)
    frame = read_shards(files)
    rate = resample_rates(class_counts(files), 0.7)[frame["target"].to_numpy()]
    for epoch in (0, 1):
        u = row_uniforms(frame["record"].to_numpy(), frame["sample"].to_numpy(), 5, epoch)
        expected = np.floor(rate).astype(int) + (u < rate - np.floor(rate))
        got = np.bincount(stream.epoch_rows(epoch), minlength=len(frame))
        np.testing.assert_array_equal(got, expected)


def test_stream_reproducible_per_seed_and_changes_per_epoch(ray_cluster, processed):
    files = split_files(processed / "intra", "train")
    a = take(BalancedStream.materialize(files, 0.7, seed=5), epoch=0)
    stream = BalancedStream.materialize(files, 0.7, seed=5)
    b, c = take(stream, epoch=0), take(stream, epoch=1)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert len(a[1]) != len(c[1]) or not np.array_equal(a[0], c[0])
    other = take(BalancedStream.materialize(files, 0.7, seed=6), epoch=0)
    assert len(a[1]) != len(other[1]) or not np.array_equal(a[0], other[0])


def test_ranks_take_equal_disjoint_shares_of_an_epoch(ray_cluster, processed):
    files = split_files(processed / "intra", "train")
    stream = BalancedStream.materialize(files, 0.5, seed=2)
    whole = stream.epoch_rows(4)
    shares = [stream.epoch_rows(4, rank, 3) for rank in range(3)]
    assert len({len(s) for s in shares}) == 1 and len(whole) - 3 < 3 * len(shares[0])
    np.testing.assert_array_equal(np.concatenate(shares), whole[:3 * len(shares[0])])
    # a rank's batches are exactly its rows, in order, batch by batch
    x, y = take(stream, epoch=4, rank=1, world=3)
    ref_x, ref_y = load_split(files)
    np.testing.assert_array_equal(x, ref_x[shares[1]])
    np.testing.assert_array_equal(y, ref_y[shares[1]])


def test_rates_reject_bad_alpha():
    with pytest.raises(ValueError):
        resample_rates([10, 1, 1, 1, 1], 1.5)
    np.testing.assert_allclose(resample_rates([80, 20, 0, 0, 0], 0.0)[:2], [1, 1])


def test_rr_stream_carries_each_beat_s_own_rr_features(ray_cluster, processed, tmp_path):
    files = split_files(processed / "intra", "train")
    x, y = take(BalancedStream.materialize(files, 0.5, seed=1, rr=True))
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


def test_prefetch_keeps_order_raises_errors_and_stops_early():
    stats = StreamStats()
    assert list(prefetched(iter(range(50)), 3, stats)) == list(range(50))

    def broken():
        yield 1
        raise RuntimeError("gather failed")

    with pytest.raises(RuntimeError, match="gather failed"):
        list(prefetched(broken(), 2, stats))
    produced = []

    def endless():
        for i in range(10_000):
            produced.append(i)
            yield i

    it = prefetched(endless(), 2, stats)
    assert [next(it) for _ in range(5)] == list(range(5))
    it.close()  # the consumer leaves: the producer thread must stop, not run on
    time.sleep(0.5)
    assert len(produced) < 20
