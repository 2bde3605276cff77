"""raytasks.models.saved: the shipped models (model.json version 1) load unchanged, a newer
format is refused in one line, and write_info stamps the current version."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from raytasks.data import DataError
from raytasks.models import saved
from tests.conftest import ROOT

SHIPPED = sorted(p.parent for p in (ROOT / "models").glob("*/model.json"))


def test_every_shipped_model_loads_whatever_its_version():
    """Models shipped before `schema` was recorded (version 1) load as they are, beside the
    ones written since (version 2)."""
    assert SHIPPED, "no shipped models"
    versions = set()
    for d in SHIPPED:
        raw = json.loads((d / "model.json").read_text())
        info = saved.read_info(d)
        assert info == raw  # read as is
        versions.add(raw.get("schema", 1))
        assert set(raw) <= set(saved.INFO_FIELDS), d  # every field it carries is known
        model, _ = saved.load_model(d)
        assert saved.scheme_of(info) in ("intra", "inter")
        x = np.random.default_rng(0).random((20, model.input_width), dtype=np.float32)
        # trees (alone or in an ensemble) read features of the rows' whole record
        context = pd.DataFrame({"record": "r", "sample": np.arange(20) * 300})
        logits = saved.predict_logits(model, saved.model_inputs(model, x, context))
        assert logits.shape == (20, 5)
        assert np.isfinite(logits).all()
    assert versions == {1, saved.SCHEMA}, versions  # both kinds are exercised


def test_newer_schema_and_non_model_json_are_refused(tmp_path):
    d = tmp_path / "m"
    shutil.copytree(SHIPPED[0], d)
    info = saved.read_info(d)
    saved.write_info(d, info)
    assert json.loads((d / "model.json").read_text())["schema"] == saved.SCHEMA
    assert saved.load_model(d)[1]["schema"] == saved.SCHEMA  # the written file loads
    (d / "model.json").write_text(json.dumps(info | {"schema": saved.SCHEMA + 1}))
    with pytest.raises(DataError, match=rf"schema {saved.SCHEMA + 1}.*update raytasks"):
        saved.load_model(d)
    (d / "model.json").write_text("[1, 2]")
    with pytest.raises(DataError, match=r"not a model\.json"):
        saved.read_info(d)
    (d / "model.json").write_text("{")
    with pytest.raises(DataError, match="not valid JSON"):
        saved.load_model(d)


def test_write_info_refuses_fields_outside_the_schema(tmp_path):
    d = tmp_path / "m"
    shutil.copytree(SHIPPED[0], d)
    before = (d / "model.json").read_bytes()
    with pytest.raises(ValueError, match=r"not in saved.INFO_FIELDS.*'note'"):
        saved.write_info(d, saved.read_info(d) | {"note": "typo"})
    assert (d / "model.json").read_bytes() == before


def test_times_in_files_are_iso_and_in_names_sort_as_time(monkeypatch):
    """model.json `exported` (and build.json, leaderboard, job.json) read back as the UTC
    time they were written, as the shipped models' do; the compact stamps in run names sort
    as the times do (`tune --resume` takes the last name as the latest search) and are valid
    names (no colon)."""
    import time
    from datetime import UTC, datetime

    from raytasks.core.constants import utc_stamp
    from raytasks.core.paths import check_name

    def parse(text):
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()

    assert all(parse(saved.read_info(d)["exported"]) > 1.7e9 for d in SHIPPED)
    real = time.gmtime
    stamps = []
    # out of order on purpose: 2001-09-09, 2026-12-06, 2009-02-13, 2033-05-18
    for t in (1_000_000_000, 1_796_000_000, 1_234_567_890, 2_000_000_000):
        monkeypatch.setattr(time, "gmtime", lambda *_, t=t: real(t))
        assert parse(saved.stamp({})["exported"]) == t
        stamps.append((t, utc_stamp()))
        check_name(f"alice-gru-{stamps[-1][1]}", "experiment")
    assert [s for _, s in sorted(stamps)] == sorted(s for _, s in stamps)


def test_a_model_s_scheme_is_its_data_build_s():
    """What evaluate skips and calibrate refits on: data.scheme only (a calibrated model
    without one records intra in offsets_fit but is of unknown scheme)."""
    assert (
        saved.scheme_of(
            {"arch": "cnn1d", "data": {"scheme": "inter"}, "offsets_fit": {"scheme": "intra"}}
        )
        == "inter"
    )
    assert saved.scheme_of({"arch": "cnn1d", "offsets_fit": {"scheme": "intra"}}) is None
    assert saved.scheme_of({"arch": "cnn1d", "data": None}) is None
