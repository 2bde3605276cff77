"""Property: whatever bad settings, spaces, imported files or damaged records a teammate
hands the CLI, it exits non-zero with one line of error and leaves earlier outputs
byte-identical (issue 11). Hypothesis generates the bad input; examples are few and
derandomised so the suite stays fast and reproducible (about 20 s here).
"""

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raytasks.cli import main
from raytasks.core.config import DEFAULTS, PATH_SETTINGS, PORT_RANGE
from raytasks.core.paths import NAME
from raytasks.data import FEATURES
from tests.conftest import copy_records, read_shards, snapshot

FUZZ = settings(
    max_examples=40,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def refused_in_one_line(res) -> str:
    assert res.exit_code != 0, res.output
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    lines = res.output.strip().splitlines()
    assert len(lines) == 1, res.output
    assert lines[0].startswith("Error: "), res.output
    return lines[0]


def invoke(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return (
            "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
        )
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return str(v)


@pytest.fixture
def quiet_env(monkeypatch, tmp_path):
    from raytasks.core import ray_connect

    def refuse():
        raise AssertionError("Ray was started")

    monkeypatch.setattr(ray_connect, "init_ray", refuse)
    for var in ("RAYTASKS_DEV", "RAYTASKS_PORT", "RAYTASKS_SCHEME", "RAYTASKS_PROCESSED"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "config.toml").write_text("")
    monkeypatch.setenv("RAYTASKS_CONFIG", str(tmp_path / "config.toml"))
    return tmp_path


# ---------------------------------------------------------------- settings files


def is_port(text: str) -> bool:
    try:
        return PORT_RANGE[0] <= int(text) <= PORT_RANGE[1]
    except ValueError:
        return False


not_a_string = st.one_of(
    st.integers(), st.booleans(), st.floats(), st.lists(st.integers(), max_size=2)
)
bad_setting = st.one_of(
    st.tuples(
        st.just("port"),
        st.one_of(
            st.booleans(),
            st.text(max_size=6).filter(lambda t: not is_port(t)),
            st.floats(),
            st.integers().filter(lambda p: not PORT_RANGE[0] <= p <= PORT_RANGE[1]),
        ),
    ),
    st.tuples(st.sampled_from((*PATH_SETTINGS, "host", "wandb_project")), not_a_string),
    st.tuples(
        st.sampled_from(["dev", "scheme"]),
        st.text(max_size=12).filter(lambda t: not NAME.fullmatch(t)),
    ),
    st.tuples(
        st.from_regex(r"[a-z][a-z_]{0,9}", fullmatch=True).filter(lambda k: k not in DEFAULTS),
        st.integers(),
    ),
)


@FUZZ
@given(bad=bad_setting)
def test_bad_settings_file(quiet_env, processed, monkeypatch, bad):
    results = quiet_env / "results"
    monkeypatch.setenv("RAYTASKS_RESULTS", str(results))
    monkeypatch.setenv("RAYTASKS_PROCESSED", str(processed))
    if not results.exists():
        assert invoke(["data", "describe"]).exit_code == 0
    before = snapshot(results)
    key, value = bad
    (quiet_env / "config.toml").write_text(f"{key} = {toml_value(value)}\n")
    line = refused_in_one_line(invoke(["data", "describe"]))
    assert key in line or "TOML" in line, line
    assert snapshot(results) == before
    (quiet_env / "config.toml").write_text("")


# ---------------------------------------------------------------- search spaces

GRU = """arch = "gru"
[fixed]
epochs = 4
[space]
lr = { dist = "loguniform", low = 5e-4, high = 1e-2 }
loss = { dist = "choice", values = ["ce", "focal"] }
[space.model]
hidden = { dist = "qrandint", low = 32, high = 96, q = 16 }
pooling = { dist = "choice", values = ["attention", "mean"] }
dropout = { dist = "uniform", low = 0.0, high = 0.4 }
[[points_to_evaluate]]
lr = 3e-3
model = { hidden = 64 }
"""
text_not = st.text(max_size=8)
SLOTS = {  # slot: (text replaced, its line, bad values for it)
    "epochs": (
        "epochs = 4",
        3,
        st.one_of(st.integers(max_value=0), st.floats(), text_not, st.booleans()),
    ),
    "lr_low": (
        "low = 5e-4",
        5,
        st.one_of(st.floats(max_value=0.0), st.floats(min_value=0.0101), text_not, st.booleans()),
    ),
    "loss": ('"focal"]', 6, text_not.filter(lambda t: t not in ("ce", "weighted_ce", "focal"))),
    "hidden_low": ("low = 32", 8, st.one_of(st.integers(max_value=7), st.floats(), text_not)),
    "q": ("q = 16", 8, st.one_of(st.integers(max_value=0), st.floats(), text_not, st.booleans())),
    "pooling": ('"mean"]', 9, text_not.filter(lambda t: t not in ("attention", "mean", "last"))),
    "dropout_high": ("high = 0.4", 10, st.one_of(st.floats(min_value=0.9901), text_not)),
    "point_lr": (
        "lr = 3e-3",
        12,
        st.one_of(st.floats(max_value=4.9e-4), st.floats(min_value=0.0101), text_not),
    ),
}


def space_with(slot: str, value) -> str:
    old, _, _ = SLOTS[slot]
    key, _, _ = old.partition(" = ")
    if old.endswith("]"):  # a choice: the bad value joins the list
        new = f"{old[:-1]}, {toml_value(value)}]"
    else:
        new = f"{key} = {toml_value(value)}"
    return GRU.replace(old, new, 1)


@FUZZ
@given(data=st.data())
def test_bad_space(quiet_env, processed, monkeypatch, data):
    monkeypatch.setenv("RAYTASKS_DEV", "fuzz")
    monkeypatch.setenv("RAYTASKS_PROCESSED", str(processed))
    monkeypatch.setenv("RAYTASKS_RUNS", str(quiet_env / "runs"))
    slot = data.draw(st.sampled_from(sorted(SLOTS)))
    value = data.draw(SLOTS[slot][2])
    path = quiet_env / "space.toml"
    path.write_text(space_with(slot, value))
    line = refused_in_one_line(invoke(["tune", "--space", path]))
    assert f"{path}:{SLOTS[slot][1]}:" in line or "not valid TOML" in line, line
    assert not (quiet_env / "runs").exists()


# ---------------------------------------------------------------- imported files


@pytest.fixture
def good_frame(processed) -> pd.DataFrame:
    frame = read_shards(sorted((processed / "intra" / "valid").glob("*.parquet"))).iloc[:150]
    out = frame[FEATURES].astype("float64")
    out["target"] = frame["target"].astype("float64")
    return out.reset_index(drop=True)


bad_cell = st.one_of(
    st.sampled_from([np.inf, -np.inf, np.nan]),
    st.floats(min_value=1.02),
    st.floats(max_value=-0.02),
)
bad_label = st.one_of(
    st.integers().filter(lambda c: not 0 <= c <= 4), st.floats(0, 4).filter(lambda v: v != round(v))
)
defects = st.one_of(
    st.tuples(st.just("cell"), st.integers(0, 149), st.integers(0, 186), bad_cell),
    st.tuples(st.just("label"), st.integers(0, 149), bad_label),
    st.tuples(st.just("drop"), st.integers(0, 187)),
    st.tuples(
        st.just("extra"),
        st.from_regex(r"[a-z]{1,6}", fullmatch=True).filter(
            lambda c: c not in ("record", "sample")
        ),
    ),  # the two optional columns
    st.tuples(st.just("csv_cut"), st.integers(0, 149), st.floats(0, 0.999)),
    st.tuples(st.just("parquet_cut"), st.floats(0, 0.99)),
)


def damaged_file(frame: pd.DataFrame, defect, dest_dir) -> str:
    frame = frame.copy()
    kind = defect[0]
    if kind == "cell":
        frame.iloc[defect[1], defect[2]] = defect[3]
    elif kind == "label":
        frame.loc[defect[1], "target"] = defect[2]
    elif kind == "drop":
        frame = frame.drop(columns=frame.columns[defect[1]])
    elif kind == "extra":
        frame[defect[1]] = 0.5
    if kind == "csv_cut":  # cut inside a row, before its label: the row loses fields
        text = frame.to_csv(header=False, index=False)
        lines = text.splitlines(keepends=True)
        row = lines[defect[1]]
        cut = 1 + int(defect[2] * (row.rindex(",") - 1))
        path = dest_dir / "bad.csv"
        path.write_text("".join(lines[: defect[1]]) + row[:cut])
        return path
    path = dest_dir / "bad.parq"
    frame.to_parquet(path)
    if kind == "parquet_cut":
        data = path.read_bytes()
        path.write_bytes(data[: int(defect[1] * len(data))])
    return path


@FUZZ
@given(defect=defects)
def test_bad_import(quiet_env, good_frame, defect):
    out = quiet_env / "processed"
    if not (out / "mine").exists():
        good_frame.to_parquet(quiet_env / "good.parq")
        assert (
            invoke(
                [
                    "data",
                    "import",
                    "--train",
                    quiet_env / "good.parq",
                    "--name",
                    "mine",
                    "--out",
                    out,
                ]
            ).exit_code
            == 0
        )
    before = snapshot(out)
    bad = damaged_file(good_frame, defect, quiet_env)
    line = refused_in_one_line(
        invoke(["data", "import", "--train", bad, "--name", "mine", "--out", out])
    )
    assert bad.name in line, line
    assert snapshot(out) == before


# ---------------------------------------------------------------- damaged records

record_damage = st.one_of(
    st.tuples(st.just("dat_cut"), st.floats(0, 0.9999)),
    st.tuples(st.just("atr_cut"), st.floats(0, 0.9999)),
    st.tuples(st.just("dat_flip"), st.floats(0, 0.9999), st.integers(1, 255)),
    st.tuples(st.just("atr_past_end"), st.integers(1, 10**8)),
)


def damage_record(recs, damage) -> str:
    kind = damage[0]
    path = recs / ("100.dat" if kind.startswith("dat") else "100.atr")
    data = bytearray(path.read_bytes())
    if kind.endswith("cut"):
        data = data[: int(damage[1] * len(data))]
    elif kind == "dat_flip":
        data[int(damage[1] * len(data))] ^= damage[2]
    else:  # an N beat `skip` samples past the signal's end, before the end marker
        words = np.frombuffer(bytes(data), dtype="<u2")
        skip = 650000 + damage[1]
        extra = np.array([59 << 10, skip >> 16, skip & 0xFFFF, (1 << 10) | 1], dtype="<u2")
        data = np.concatenate([words[:-1], extra, words[-1:]]).astype("<u2").tobytes()
    path.write_bytes(bytes(data))
    return path.name


@settings(FUZZ, max_examples=20)
@given(damage=record_damage)
def test_damaged_record(quiet_env, mitdb, damage):
    out = quiet_env / "processed"
    if not out.exists():
        good = copy_records(quiet_env / "good", ["100"])
        assert invoke(["data", "build", "--records", good, "--out", out]).exit_code == 0
    before = snapshot(out)
    recs = quiet_env / "recs"
    shutil.rmtree(recs, ignore_errors=True)
    copy_records(recs, ["100"])
    name = damage_record(recs, damage)
    line = refused_in_one_line(invoke(["data", "build", "--records", recs, "--out", out]))
    assert name in line, line
    assert snapshot(out) == before
