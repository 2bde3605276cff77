"""Signal-quality flags (raytasks.recordings.quality) on real ECG with known damage, and
report.html from a real recording: its figures against summary.json, one image per figure
section, nothing fetched, and a real rendering in headless Chromium."""

import base64
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from raytasks.data import FS_RAW
from raytasks.models import saved
from raytasks.recordings.predict import (
    classify,
    detect_chunk,
    merge_chunks,
    plan_chunks,
    probe,
    recording_inputs,
    write_outputs,
)
from raytasks.recordings.quality import (
    assess,
    rate_jumps,
    rr_implausible,
    window_flags,
    window_stats,
)
from tests.test_predict import MODEL, mlii

MIN = 60 * FS_RAW  # samples per minute
WIN = 6  # 10-s windows per minute


def damaged(x: np.ndarray) -> np.ndarray:
    """Minute 0 clean; 1 muscle-like noise; 2 lead off (flat); 3 clipped; 4 baseline wander."""
    y = x.copy()
    y[MIN : 2 * MIN] += np.random.default_rng(0).normal(0, 0.3, MIN)
    y[2 * MIN : 3 * MIN] = y[2 * MIN]
    lo, hi = np.percentile(x[3 * MIN : 4 * MIN], [1, 60])
    y[3 * MIN : 4 * MIN] = np.clip(x[3 * MIN : 4 * MIN], lo, hi)
    t = np.arange(MIN) / FS_RAW
    y[4 * MIN : 5 * MIN] += 5.0 * np.sin(2 * np.pi * 0.3 * t)  # 10 mV, 3x the QRS
    return y


def test_each_flag_fires_on_its_own_damage_only(mitdb):
    x = damaged(mlii(mitdb, "118", 5))
    stats = window_stats(x, 0, len(x))
    assert stats.shape == (5 * WIN, 4)
    flags = window_flags(stats)
    minute = {"noisy": 1, "flat": 2, "saturated": 3, "wander": 4}
    for name, m in minute.items():
        want = np.zeros(5 * WIN, bool)
        want[m * WIN : (m + 1) * WIN] = True
        np.testing.assert_array_equal(flags[name], want, err_msg=name)
    # chunks of the recording's 10-s grid measure the same windows as the whole
    parts = [window_stats(x, a, min(a + 2 * MIN, len(x))) for a in range(0, len(x), 2 * MIN)]
    np.testing.assert_allclose(np.concatenate(parts), stats, rtol=1e-6)


def test_the_clean_records_raise_no_flag(mitdb):
    """118 and 232 are clean at the start: no flagged window, no implausible RR."""
    for name in ("118", "232"):
        x = mlii(mitdb, name, 5)
        flags = window_flags(window_stats(x, 0, len(x)))
        assert not any(v.any() for v in flags.values()), name


def test_rr_and_rate_figures_by_hand():
    peaks = np.arange(0, 10 * MIN, int(0.8 * FS_RAW))  # 75 bpm for 10 min
    assert rr_implausible(peaks) == 0.0
    assert rate_jumps(peaks, 600) == 0.0
    extra = np.sort(np.r_[peaks, peaks[:30] + int(0.1 * FS_RAW)])  # 30 double detections
    assert rr_implausible(extra) == pytest.approx(30 / (len(extra) - 1))
    gap = peaks[(peaks < 4 * MIN) | (peaks >= 5 * MIN)]  # minute 4 lost: one 60-s RR
    assert rr_implausible(gap) == pytest.approx(1 / (len(gap) - 1))
    assert rate_jumps(gap, 600) == pytest.approx(0.1)


def test_grades_and_reasons():
    clean = np.tile([[2.0, 0.002, 0.01, 0.2]], (60, 1))
    peaks = np.arange(0, 10 * MIN, int(0.8 * FS_RAW))
    good = assess(clean, peaks, 600)
    assert (good["quality"], good["quality_reasons"], good["windows_10s"]) == ("good", [], 60)
    noisy = clean.copy()
    noisy[:6, 2] = 0.5  # one minute in ten very noisy: fair
    fair = assess(noisy, peaks, 600)
    assert fair["quality"] == "fair"
    assert fair["noisy_windows_pct"] == 10.0
    assert fair["unusable_windows_pct"] == 10.0
    assert fair["quality_reasons"] == [
        "10% of 10-s windows very noisy (high-frequency power: muscle, mains, motion)"
    ]
    noisy[6:15, 0] = 0.0  # and 15% flat: 25% unusable, poor
    poor = assess(noisy, peaks, 600)
    assert (poor["quality"], poor["flat_windows_pct"], poor["unusable_windows_pct"]) == (
        "poor",
        15.0,
        25.0,
    )
    assert len(poor["quality_reasons"]) == 2
    few = np.tile([[2.0, 0.002, 0.01, 0.2]], (100, 1))
    few[:2, 0], few[2:4, 2], few[4:6, 3] = 0.0, 0.5, 3.0  # 2% each: only together a grade
    union = assess(few, peaks, 600)
    assert (union["quality"], union["unusable_windows_pct"]) == ("fair", 6.0)
    assert union["quality_reasons"] == [
        "6% of 10-s windows unusable (flat, saturated, noisy, wander)"
    ]
    extra = np.sort(np.r_[peaks, peaks[:40] + int(0.1 * FS_RAW)])  # 5% of RR implausible
    rr = assess(clean, extra, 600)
    assert rr["quality"] == "poor"
    assert "RR intervals implausible" in rr["quality_reasons"][0]


# ---------------------------------------------------------------- report.html


def predict_here(path: Path, out: Path, fs: float | None = None) -> dict:
    """What `raytasks predict` does for one recording, without Ray (pass 1 per chunk, the
    driver's merge, the classifier actor's call, the driver's outputs)."""
    name, info = path.stem, probe(path, fs)
    chunks = [detect_chunk(row | {"mode": "detect"}) for row in plan_chunks(name, path, info, 60)]
    rec = merge_chunks(chunks)
    x = recording_inputs(saved.load_model(MODEL)[0], rec)
    logits = classify({"name": name, "t0": 0.0, "x": x}, str(MODEL))["logits"]
    offsets = saved.offsets_of(saved.read_info(MODEL)).astype(np.float32)
    write_outputs([rec], {name: logits}, offsets, out, MODEL)
    return json.loads((out / name / "summary.json").read_text())


@pytest.fixture(scope="module")
def report(mitdb, tmp_path_factory) -> Path:
    """report.html of 3 min of record 208 (N, V and F beats) as WFDB, its second minute
    under muscle-like noise (so quality reasons and a shaded bin show)."""
    import wfdb

    root = tmp_path_factory.mktemp("report")
    x = mlii(mitdb, "208", 3)
    x[MIN : 2 * MIN] += np.random.default_rng(1).normal(0, 0.3, MIN)
    wfdb.wrsamp(
        "208",
        fs=FS_RAW,
        units=["mV"],
        sig_name=["MLII"],
        p_signal=x[:, None],
        fmt=["16"],
        write_dir=str(root),
    )
    predict_here(root / "208.hea", root / "out")
    return root / "out" / "208"


def sections(page: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="(\w+)">(.*?)</section>', page, re.S))


@pytest.mark.slow  # detection, a model and five figures: ~5 s
def test_report_holds_the_summary_and_an_image_per_figure(report):
    summary = json.loads((report / "summary.json").read_text())
    page = (report / "report.html").read_text()
    assert summary["quality"] in ("fair", "poor")
    assert summary["noisy_windows_pct"] >= 30.0  # 6 of 18 windows
    shown = dict(re.findall(r'<tr data-key="(\w+)"><th>.*?</th><td><span class="v">(.*?)<', page))
    for key, value in summary.items():
        if key == "quality_reasons":
            for reason in value:
                assert f"<li>{reason}</li>" in page
        elif isinstance(value, float) and np.isnan(value):
            assert shown[key] == "–"
        elif isinstance(value, int | float):
            assert float(shown[key]) == pytest.approx(value), key
        else:
            assert shown[key] == html.escape(str(value)), key
    parts = sections(page)
    assert list(parts) == ["summary", "ectopy", "classes", "strip"]
    classes = sum(summary[f"n_{c}"] > 0 for c in "NSVFQ")
    want = {"summary": 0, "ectopy": 1, "classes": classes, "strip": 1}
    for sid, n in want.items():
        pngs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', parts[sid])
        assert len(pngs) == n, sid
        assert all(base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    # self-contained: nothing fetched, no script
    assert not re.search(r"<script|<link|https?://|url\(", page)
    assert not list(report.parent.glob(".*"))  # staged, nothing half-written left


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.slow
@pytest.mark.skipif(
    chromium() is None, reason="no chromium: apt-get install -y chromium (as .ci/run does)"
)
def test_report_renders_in_headless_chromium(report, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    cmd += [f"--screenshot={shot}", "--window-size=1280,3200", (report / "report.html").as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), res.stderr[-2000:]
    px = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert px.shape == (3200, 1280, 3)
    ink = (px.min(axis=2) < 200).mean()  # text, traces and bars
    assert 0.02 < ink < 0.5, ink
    colours = len(np.unique((px[::2, ::2] // 8).reshape(-1, 3), axis=0))
    assert colours > 150, colours  # a blank or broken page has a handful
    # the embedded figures were decoded and drawn: V bars and traces (red), N traces (green)
    for rgb in ((214, 39, 40), (44, 160, 44)):
        share = (np.abs(px - rgb).sum(axis=2) < 40).mean()
        assert share > 0.0003, (rgb, share)
    # the heading was drawn at the top (dark text on the light page)
    assert (px[:80].min(axis=2) < 80).mean() > 0.005
