import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from raytasks.cli import main
from raytasks.data import BEAT, FEATURES, LAYOUT, RR_FEATURES, DataError
from raytasks.data.beats import record_beats
from raytasks.data.build import build
from raytasks.data.splits import DS1, DS2
from raytasks.data.stream import load_split, split_files
from tests.atr import read_atr
from tests.conftest import SLICE, copy_records, read_shards, snapshot


def read_scheme(root: Path, scheme: str) -> dict[str, pd.DataFrame]:
    return {
        s: read_shards(sorted((root / scheme / s).glob("*.parquet")))
        for s in ("train", "valid", "test")
    }


@pytest.mark.parametrize("name", ["100", "208", "232"])
def test_beats_match_independent_atr_count(mitdb, name):
    samples, classes = read_atr(mitdb / f"{name}.atr")
    beats = record_beats(mitdb, name)
    assert len(beats) == len(samples) > 1000
    np.testing.assert_array_equal(beats["sample"].to_numpy(), samples)
    np.testing.assert_array_equal(beats["target"].to_numpy(), classes)
    x = beats[FEATURES].to_numpy()
    assert x.shape[1] == 187
    assert x.min() >= 0.0
    assert x.max() <= 1.0
    # each beat starts at its R-peak: the window-normalised amplitude there is high
    assert np.median(x[beats["target"].to_numpy() == 0, 0]) > 0.7


@pytest.mark.parametrize("name", ["208", "232"])
def test_rr_features_are_the_record_s_rr_intervals(mitdb, name):
    samples, classes = read_atr(mitdb / f"{name}.atr")
    beats = record_beats(mitdb, name)
    rr = np.diff(samples) / 360.0  # seconds, from the independent .atr reader
    pre, post, local, record = (beats[c].to_numpy(np.float64) for c in RR_FEATURES)
    # local: the mean of the 31 previous-RR values centred on the beat (edges repeated),
    # computed here beat by beat
    pre_rr = np.r_[rr[0], rr]
    padded = np.r_[[pre_rr[0]] * 15, pre_rr, [pre_rr[-1]] * 15]
    expected = np.array([padded[i : i + 31].mean() for i in range(len(pre_rr))])
    np.testing.assert_allclose(local, expected, rtol=1e-5)
    np.testing.assert_allclose((pre * local)[1:], rr, rtol=1e-5)
    np.testing.assert_allclose((post * local)[:-1], rr, rtol=1e-5)
    np.testing.assert_allclose((record * rr.mean())[1:], rr, rtol=1e-5)
    assert np.all(local > 0.25)  # 20-240 bpm
    assert np.all(local < 3.0)
    # ventricular ectopics come early and are followed by a compensatory pause
    v, n = classes == 2, classes == 0
    if v.sum() > 100:
        assert np.median(pre[v]) < 0.9 < np.median(pre[n])
        assert np.median(post[v]) > 1.1 > np.median(post[n])


def test_shard_schema_and_layout(processed):
    for scheme in ("intra", "inter"):
        for split in ("train", "valid", "test"):
            files = sorted((processed / scheme / split).glob("part-*.parquet"))
            assert files, (scheme, split)
            schema = pq.read_schema(files[0])
            # the beat is one fixed-size tensor column, the RR features beside it
            assert schema.names == [BEAT, "target", "record", "sample", *RR_FEATURES]
            assert schema.field(BEAT).type == pa.list_(pa.float32(), 187)
            assert all(str(schema.field(c).type) == "float" for c in RR_FEATURES)
            assert str(schema.field("target").type) == "int64"
        assert len(list((processed / scheme / "train").glob("*.parquet"))) >= 3
    meta = json.loads((processed / "intra" / "build.json").read_text())
    assert meta["records"] == SLICE
    assert meta["layout"] == LAYOUT


def test_shards_hold_each_record_s_beats_unchanged(processed, mitdb):
    frame = pd.concat(read_scheme(processed, "inter").values())
    rows = frame[frame["record"] == "208"].sort_values("sample")
    ref = record_beats(mitdb, "208")
    np.testing.assert_array_equal(rows[FEATURES].to_numpy(), ref[FEATURES].to_numpy())
    np.testing.assert_array_equal(rows[RR_FEATURES].to_numpy(), ref[RR_FEATURES].to_numpy())
    x, y = load_split(split_files(processed / "inter", "train"), rr=True)
    order = np.argsort(
        read_shards(sorted((processed / "inter" / "train").glob("*.parquet")))["sample"].to_numpy()
    )
    np.testing.assert_array_equal(x[order], ref[FEATURES + RR_FEATURES].to_numpy())
    np.testing.assert_array_equal(y[order], ref["target"].to_numpy())


def test_older_layout_is_rebuilt_not_misread(slice_dir, tmp_path):
    out = tmp_path / "p"
    build(slice_dir, out, ("inter",), params={"shard_rows": 800}, progress=False)
    # what layout 1 wrote: the beat as 187 scalar columns, build.json without "layout"
    meta_path, train = out / "inter" / "build.json", out / "inter" / "train"
    wide = read_shards(sorted(train.glob("*.parquet")))
    for p in train.glob("*.parquet"):
        p.unlink()
    wide.to_parquet(train / "part-00000.parquet", index=False)
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(
        json.dumps({k: v for k, v in meta.items() if k != "layout"} | {"version": 2})
    )
    with pytest.raises(DataError, match=r"layout 1.*raytasks data build --force"):
        split_files(out / "inter", "train")
    build(slice_dir, out, ("inter",), params={"shard_rows": 800}, progress=False)
    assert json.loads(meta_path.read_text())["layout"] == LAYOUT
    assert len(load_split(split_files(out / "inter", "train"))[1]) == len(wide)


def test_intra_split_is_disjoint_complete_and_stratified(processed, slice_dir):
    parts = read_scheme(processed, "intra")
    keys = {s: set(zip(f["record"], f["sample"])) for s, f in parts.items()}
    assert not keys["train"] & keys["valid"]
    assert not keys["train"] & keys["test"]
    assert not keys["valid"] & keys["test"]
    total = sum(len(read_atr(slice_dir / f"{n}.atr")[0]) for n in SLICE)
    assert sum(len(k) for k in keys.values()) == total
    n = {s: np.bincount(f["target"], minlength=5) for s, f in parts.items()}
    all_counts = sum(n.values())
    for c in np.flatnonzero(all_counts >= 50):  # every common class is ~20% test
        assert abs(n["test"][c] / all_counts[c] - 0.2) < 0.01


def test_inter_split_is_patient_level(processed):
    parts = read_scheme(processed, "inter")
    recs = {s: set(f["record"]) for s, f in parts.items()}
    assert recs == {"train": {"208"}, "valid": {"118"}, "test": {"232"}}
    assert recs["train"] <= set(DS1)
    assert recs["test"] <= set(DS2)


def test_same_seed_same_shards_other_seed_differs(slice_dir, tmp_path, processed):
    build(slice_dir, tmp_path / "a", ("intra",), params={"shard_rows": 800}, progress=False)
    build(
        slice_dir, tmp_path / "b", ("intra",), params={"shard_rows": 800, "seed": 7}, progress=False
    )
    again, other = read_scheme(tmp_path / "a", "intra"), read_scheme(tmp_path / "b", "intra")
    first = read_scheme(processed, "intra")
    for s in first:
        pd.testing.assert_frame_equal(first[s], again[s])
    assert not first["test"]["sample"].equals(other["test"]["sample"])


def test_build_is_idempotent_and_force_rebuilds(slice_dir, tmp_path):
    out = tmp_path / "p"
    build(slice_dir, out, ("intra",), params={"shard_rows": 800}, progress=False)
    stamp = (out / "intra" / "build.json").stat().st_mtime_ns
    build(slice_dir, out, ("intra",), params={"shard_rows": 800}, progress=False)
    assert (out / "intra" / "build.json").stat().st_mtime_ns == stamp
    build(slice_dir, out, ("intra",), params={"shard_rows": 800}, force=True, progress=False)
    assert (out / "intra" / "build.json").stat().st_mtime_ns != stamp
    # changed parameters also rebuild
    build(slice_dir, out, ("intra",), params={"shard_rows": 500}, progress=False)
    meta = json.loads((out / "intra" / "build.json").read_text())
    assert meta["params"]["shard_rows"] == 500


def test_cli_build_prints_counts(slice_dir, tmp_path):
    res = CliRunner().invoke(
        main,
        [
            "data",
            "build",
            "--records",
            str(slice_dir),
            "--out",
            str(tmp_path / "p"),
            "--scheme",
            "inter",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "inter   test" in res.output  # 232's beats, all in test
    assert "1780" in res.output
    assert (tmp_path / "p" / "inter" / "build.json").exists()


# ---------------------------------------------------------------- bad input


def run_build(records: Path, out: Path):
    return CliRunner().invoke(main, ["data", "build", "--records", str(records), "--out", str(out)])


def assert_clean_failure(res, out: Path, needle: str):
    assert res.exit_code != 0
    assert needle in res.output, res.output
    assert isinstance(res.exception, SystemExit), res.exception  # one line, no traceback
    assert not out.exists() or not any(out.rglob("*.parquet")), "something was written"


def test_missing_directory(tmp_path):
    res = run_build(tmp_path / "nope", tmp_path / "out")
    assert_clean_failure(res, tmp_path / "out", "nope")


def test_record_without_atr(tmp_path, mitdb):
    recs = copy_records(tmp_path / "r", ["100", "101"])
    (recs / "101.atr").unlink()
    assert_clean_failure(run_build(recs, tmp_path / "out"), tmp_path / "out", "101.atr")


def test_truncated_dat(tmp_path, mitdb):
    recs = copy_records(tmp_path / "r", ["100", "101"])
    data = (recs / "101.dat").read_bytes()
    (recs / "101.dat").write_bytes(data[: len(data) // 2])
    res = run_build(recs, tmp_path / "out")
    assert_clean_failure(res, tmp_path / "out", "101.dat")
    assert "truncated" in res.output


def test_corrupted_dat(tmp_path, mitdb):
    recs = copy_records(tmp_path / "r", ["100", "101"])
    data = bytearray((recs / "100.dat").read_bytes())
    data[500_000:500_064] = bytes(range(64))
    (recs / "100.dat").write_bytes(bytes(data))
    res = run_build(recs, tmp_path / "out")
    assert_clean_failure(res, tmp_path / "out", "100.dat")
    assert "checksum" in res.output


def test_sha256sums_mismatch(tmp_path, mitdb):
    recs = copy_records(tmp_path / "r", ["100"])
    sums = [
        ln
        for ln in (mitdb / "SHA256SUMS.txt").read_text().splitlines()
        if ln.endswith((" 100.atr", " 100.hea"))
    ]
    digest, name = sums[0].split()
    sums[0] = f"{'0' * len(digest)} {name}"
    (recs / "SHA256SUMS.txt").write_text("\n".join(sums) + "\n")
    res = run_build(recs, tmp_path / "out")
    assert_clean_failure(res, tmp_path / "out", name)
    assert "SHA256" in res.output
    # the genuine sums pass
    shutil.copy(mitdb / "SHA256SUMS.txt", recs / "SHA256SUMS.txt")
    assert run_build(recs, tmp_path / "out2").exit_code == 0


def test_failed_rebuild_keeps_previous_shards(tmp_path, mitdb):
    recs = copy_records(tmp_path / "r", ["100", "101"])
    out = tmp_path / "out"
    assert run_build(recs, out).exit_code == 0
    before = snapshot(out)
    (recs / "101.atr").unlink()
    res = CliRunner().invoke(
        main, ["data", "build", "--records", str(recs), "--out", str(out), "--force"]
    )
    assert res.exit_code != 0
    assert "101.atr" in res.output
    assert snapshot(out) == before  # every shard and build.json byte-identical
    assert [p.name for p in out.iterdir()] == ["intra"]  # no temp dirs left behind


def test_offline_download_fails_in_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("MITDB_DIR", raising=False)
    (tmp_path / "none.toml").write_text("")  # no settings file: defaults
    monkeypatch.setenv("RAYTASKS_CONFIG", str(tmp_path / "none.toml"))
    import wfdb

    def offline(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(wfdb, "dl_database", offline)
    from raytasks.data import DataError
    from raytasks.data import mitdb as build_module
    from raytasks.data.mitdb import resolve_records

    monkeypatch.setattr(build_module, "SHARED_MITDB", tmp_path / "no-shared")
    with pytest.raises(DataError, match="MITDB_DIR"):
        resolve_records("", tmp_path / "dl")
    assert not (tmp_path / "dl").exists()


def test_build_of_an_older_build_version_is_rebuilt(tmp_path, mitdb, monkeypatch):
    """Shards of another BUILD_VERSION are rebuilt; current ones are left alone."""
    from raytasks.data import build as build_module
    from raytasks.data.shards import BUILD_VERSION

    recs = copy_records(tmp_path / "r", ["100"])
    out = tmp_path / "out"
    build(recs, out, ("intra",), progress=False)
    first = snapshot(out)
    beats = read_shards(sorted((out / "intra").rglob("*.parquet")))
    files = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*")}
    writer = build_module.write_dataset

    def no_write(*args, **kwargs):
        raise AssertionError("current shards were rewritten")

    monkeypatch.setattr(build_module, "write_dataset", no_write)
    build(recs, out, ("intra",), progress=False)  # current: the writer is never called
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*")} == files
    monkeypatch.setattr(build_module, "write_dataset", writer)
    meta_path = out / "intra" / "build.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(meta | {"version": BUILD_VERSION - 1}))
    build(recs, out, ("intra",), progress=False)
    assert json.loads(meta_path.read_text())["version"] == BUILD_VERSION
    shards = sorted((out / "intra").rglob("*.parquet"))
    assert [str(p.relative_to(out)) for p in shards] == sorted(
        k for k in first if k.endswith(".parquet")
    )
    # rewritten (build.json's version is current again), with the same beats
    pd.testing.assert_frame_equal(read_shards(shards), beats)
