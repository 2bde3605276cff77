import numpy as np
import pyarrow.parquet as pq
import pytest

from raytasks.data import FEATURES, RR_FEATURES, DataError
from raytasks.data.stream import (
    EpochClock,
    balanced_stream,
    class_counts,
    load_split,
    resample_rates,
    split_files,
)


def take(ds) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for b in ds.iter_torch_batches(batch_size=512):
        xs.append(b["x"].numpy())
        ys.append(b["y"].numpy())
    return np.concatenate(xs), np.concatenate(ys)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_balanced_proportions(ray_cluster, processed, alpha):
    files = split_files(processed / "intra", "train")
    counts = class_counts(files)
    x, y = take(balanced_stream(files, alpha, seed=3))
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


def test_stream_reproducible_per_seed_and_changes_per_epoch(ray_cluster, processed):
    files = split_files(processed / "intra", "train")
    a = take(balanced_stream(files, 0.7, seed=5, epoch=0))
    b = take(balanced_stream(files, 0.7, seed=5, epoch=0))
    c = take(balanced_stream(files, 0.7, seed=5, epoch=1))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert len(a[1]) != len(c[1]) or not np.array_equal(a[0], c[0])


def test_epoch_clock_drives_a_reused_dataset(ray_cluster, processed):
    files = split_files(processed / "intra", "train")
    clock = EpochClock.remote()
    ds = balanced_stream(files, 0.7, seed=5, epoch=clock)
    first = take(ds)
    ray_cluster.get(clock.set.remote(1))
    second = take(ds)
    fixed = take(balanced_stream(files, 0.7, seed=5, epoch=1))
    np.testing.assert_array_equal(second[0], fixed[0])
    assert not np.array_equal(first[0][:100], second[0][:100])


def test_rates_reject_bad_alpha():
    with pytest.raises(ValueError):
        resample_rates([10, 1, 1, 1, 1], 1.5)
    np.testing.assert_allclose(resample_rates([80, 20, 0, 0, 0], 0.0)[:2], [1, 1])


def test_rr_stream_carries_each_beat_s_own_rr_features(ray_cluster, processed, tmp_path):
    files = split_files(processed / "intra", "train")
    x, y = take(balanced_stream(files, 0.5, seed=1, rr=True))
    assert x.shape[1] == 187 + len(RR_FEATURES)
    ref_x, ref_y = load_split(files, rr=True)
    rows = {tuple(r): c for r, c in zip(ref_x.round(5), ref_y)}
    # every streamed row (beat + RR) is exactly one of the split's rows, with its label
    assert all(rows.get(tuple(r)) == c for r, c in zip(x[:2000].round(5), y[:2000]))
    # shards without RR columns (imported files) are refused for an RR model, saying why
    beats_only = tmp_path / "part-00000.parquet"
    pq.write_table(pq.read_table(files[0], columns=FEATURES + ["target"]), beats_only)
    with pytest.raises(DataError, match="no RR-interval columns"):
        load_split([str(beats_only)], rr=True)
