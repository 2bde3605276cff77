import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from raytasks.cli import main
from raytasks.data import BEAT, FEATURES, LAYOUT
from tests.conftest import read_shards


@pytest.fixture
def beats(processed) -> pd.DataFrame:
    return read_shards(sorted((processed / "intra" / "valid").glob("*.parquet")))


def hackathon_frame(beats: pd.DataFrame) -> pd.DataFrame:
    """The hackathon's layout: '0'..'186' then target as float, nothing else."""
    frame = beats[FEATURES].astype("float64")
    frame["target"] = beats["target"].astype("float64")
    return frame


def invoke_import(tmp_path, *args):
    return CliRunner().invoke(main, ["data", "import", "--out", str(tmp_path / "out"), *args])


def test_import_hackathon_parquet(tmp_path, beats):
    train, valid = beats.iloc[: len(beats) // 2], beats.iloc[len(beats) // 2 :]
    hackathon_frame(train).to_parquet(tmp_path / "heart_big_train.parq")
    hackathon_frame(valid).to_parquet(tmp_path / "heart_big_valid.parq")
    res = invoke_import(
        tmp_path,
        "--train",
        str(tmp_path / "heart_big_train.parq"),
        "--valid",
        str(tmp_path / "heart_big_valid.parq"),
    )
    assert res.exit_code == 0, res.output
    out = tmp_path / "out" / "hackathon"
    assert pq.read_schema(next((out / "valid").glob("*.parquet"))).names == [
        BEAT,
        "target",
        "record",
        "sample",
    ]
    got = read_shards(sorted((out / "valid").glob("*.parquet")))
    got = got.sort_values("sample").reset_index(drop=True)
    assert got.columns.tolist() == [*FEATURES, "target", "record", "sample"]
    assert json.loads((out / "build.json").read_text())["layout"] == LAYOUT
    assert len(got) == len(valid)
    assert set(got["record"]) == {"heart_big_valid.parq"}
    np.testing.assert_allclose(got[FEATURES].to_numpy(), valid[FEATURES].to_numpy(), atol=1e-7)
    np.testing.assert_array_equal(got["target"], valid["target"])


def test_import_kaggle_csv_carves_valid(tmp_path, beats):
    rows = hackathon_frame(beats)
    rows.to_csv(tmp_path / "mitbih_train.csv", header=False, index=False)
    rows.iloc[:300].to_csv(tmp_path / "mitbih_test.csv", header=False, index=False)
    res = invoke_import(
        tmp_path,
        "--train",
        str(tmp_path / "mitbih_train.csv"),
        "--test",
        str(tmp_path / "mitbih_test.csv"),
        "--name",
        "kaggle",
    )
    assert res.exit_code == 0, res.output
    out = tmp_path / "out" / "kaggle"
    n = {
        s: pq.ParquetDataset([str(p) for p in (out / s).glob("*.parquet")]).read().num_rows
        for s in ("train", "valid", "test")
    }
    assert n["test"] == 300
    assert n["train"] + n["valid"] == len(rows)
    assert abs(n["valid"] / len(rows) - 0.2) < 0.01


@pytest.mark.parametrize(
    ("defect", "needle"),
    [
        ("unknown_column", "unknown column"),
        ("nan", "NaN"),
        ("label", "outside 0-4"),
        ("short_rows", "187"),
    ],
)
def test_import_refuses_bad_files(tmp_path, beats, defect, needle):
    frame = hackathon_frame(beats.iloc[:200])
    path = tmp_path / "heart_big_train.parq"
    if defect == "unknown_column":
        frame["age"] = 1.0
    elif defect == "nan":
        frame.iloc[17, 40] = np.nan
    elif defect == "label":
        frame.iloc[3, -1] = 7.0
    elif defect == "short_rows":
        path = tmp_path / "mitbih_train.csv"
        frame.iloc[:, 30:].to_csv(path, header=False, index=False)
    if path.suffix == ".parq":
        frame.to_parquet(path)
    res = invoke_import(tmp_path, "--train", str(path))
    assert res.exit_code != 0
    assert needle in res.output, res.output
    assert path.name in res.output, res.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.parquet"))


def test_describe_prints_percentages_and_plots(processed, tmp_path):
    res = CliRunner().invoke(
        main, ["data", "describe", "--processed", str(processed), "--out", str(tmp_path / "plots")]
    )
    assert res.exit_code == 0, res.output
    assert "intra" in res.output
    assert "inter" in res.output
    assert "%" in res.output
    # every split's row: its class counts and shares, counted here from the shards' labels
    for scheme in ("intra", "inter"):
        for split in ("train", "valid", "test"):
            y = read_shards(sorted((processed / scheme / split).glob("*.parquet")))["target"]
            cc = np.bincount(y.to_numpy(), minlength=5)
            # a share under 1% keeps 2 significant digits (2 of 4,488 is 0.045%, not 0.0%)
            pct = [
                (
                    "0%"
                    if not v
                    else f"{100 * v / cc.sum():#.2g}%"
                    if 100 * v < 0.995 * cc.sum()
                    else f"{100 * v / cc.sum():.1f}%"
                )
                for v in cc
            ]
            cells = "".join(f"{v:>10} {p:>6} " for v, p in zip(cc, pct))
            assert f"{scheme:<10}{split:<7}{cc.sum():>8}  {cells}".rstrip() in res.output, (
                scheme,
                split,
                res.output,
            )
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert pngs == ["beats_inter.png", "beats_intra.png", "class_balance.png"]
    for p in (tmp_path / "plots").glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert p.stat().st_size > 10_000


def test_tiny_shares_keep_two_significant_digits():
    from raytasks.data.describe import percent
    from raytasks.evaluation.evaluate import share

    assert [percent(n, 100_000) for n in (0, 1, 28, 999, 1000, 5432)] == [
        "0%",
        "0.0010%",
        "0.028%",
        "1.0%",
        "1.0%",
        "5.4%",
    ]
    assert [share(v) for v in (0, 5e-5, 0.001, 0.0028, 0.00999, 0.0123, 0.5)] == [
        "0",
        "0.000050",
        "0.0010",
        "0.0028",
        "0.01",
        "0.01",
        "0.50",
    ]
