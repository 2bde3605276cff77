"""predict / score on slices of real records: detection against the .atr, the 150 ms matcher,
the training preprocessing at detected peaks, EDF and CSV round trips, the Ray Data path, and
bad recordings among good ones."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from raytasks.cli import main
from raytasks.data.beats import record_beats
from raytasks.models import saved
from raytasks.recordings.predict import (
    TRACE_BATCH,
    add_beats_on_both,
    add_second_lead,
    check_signal,
    classify,
    detect_chunk,
    detect_peaks,
    drop_lone_beats,
    even_pieces,
    fast_local_peaks,
    local_peaks,
    longest_run,
    probe,
    read_span,
    refine_peaks,
    second_lead,
    second_lead_beats,
    traced_model,
)
from raytasks.recordings.score import match_beats, read_annotations, score_record
from tests.atr import read_atr
from tests.conftest import ROOT

MODEL = ROOT / "models" / "cnn2d-intra-rr"  # shipped: small and fast
MINUTES = 3
TWO = ("232", "233")


def write_slice(
    src: Path,
    name: str,
    dest: Path,
    minutes: float = MINUTES,
    atr: bool = True,
    fs_out: float | None = None,
) -> Path:
    """The first minutes of a record as a new WFDB record (and its beats as a .atr)."""
    import wfdb

    rec = wfdb.rdrecord(str(src / name), sampto=int(minutes * 60 * 360))
    dest.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(
        name,
        fs=fs_out or rec.fs,
        units=rec.units,
        sig_name=rec.sig_name,
        p_signal=rec.p_signal,
        fmt=["16"] * rec.n_sig,
        write_dir=str(dest),
    )
    if atr:
        ann = wfdb.rdann(str(src / name), "atr", sampto=int(minutes * 60 * 360))
        wfdb.wrann(name, "atr", ann.sample, np.array(ann.symbol), write_dir=str(dest))
    return dest / f"{name}.hea"


def mlii(src: Path, name: str, minutes: float = MINUTES) -> np.ndarray:
    return wfdb_lead(src, name, "MLII", minutes)


def wfdb_lead(src: Path, name: str, lead: str, minutes: float = MINUTES) -> np.ndarray:
    import wfdb

    rec = wfdb.rdrecord(str(src / name), sampto=int(minutes * 60 * 360))
    return rec.p_signal[:, rec.sig_name.index(lead)]


@pytest.mark.parametrize("name", ["118", "232"])
def test_detector_finds_the_annotated_beats_of_the_first_minutes(mitdb, name):
    x = mlii(mitdb, name, 5)
    ref, _ = read_atr(mitdb / f"{name}.atr")
    ref = ref[ref < len(x)]
    peaks = detect_peaks(x, 360.0)
    ri, di = match_beats(ref / 360, peaks / 360, 0.150)
    assert len(ri) / len(ref) >= 0.99
    assert len(di) / len(peaks) >= 0.97
    # R-peak positions, not QRS onsets: the training beats start at the annotated R-peak
    assert np.median(np.abs(peaks[di] - ref[ri])) <= 2


def test_local_peaks_are_wfdbs_and_xqrs_finds_the_same_beats_with_them(mitdb):
    from wfdb.processing import qrs, xqrs_detect
    from wfdb.processing.peaks import find_local_peaks

    x = mlii(mitdb, "203", minutes=2)  # quantised: plateaus of equal samples
    cases = [x, np.round(x, 1), np.r_[5.0, np.zeros(50), 5.0], np.r_[1.0, 1.0, 0.0, 2.0, 2.0]]
    for sig in cases:
        for radius in [r for r in (1, 3, 26, 72) if r < len(sig) - 1]:  # wfdb's needs that
            want = find_local_peaks(sig, radius)
            got = local_peaks(sig, radius)
            np.testing.assert_array_equal(got, want)
            assert got.dtype == want.dtype
    assert len(local_peaks(np.ones(100), 5)) == 0
    with fast_local_peaks():
        fast = xqrs_detect(x, 360, verbose=False)
    assert qrs.find_local_peaks is find_local_peaks  # put back
    np.testing.assert_array_equal(fast, xqrs_detect(x, 360, verbose=False))


def test_second_lead_finds_208s_missed_v_beats_and_little_else(mitdb):
    """XQRS passes over many of 208's premature ventricular beats on MLII; V1 shows them."""
    import wfdb

    rec = wfdb.rdrecord(str(mitdb / "208"), sampto=10 * 60 * 360)
    ref, classes = read_atr_slice(mitdb, "208", 10)
    found = {}
    for leads, second in (("one", None), ("two", rec.p_signal[:, 1])):
        peaks = detect_peaks(rec.p_signal[:, 0], 360, second=second)
        ri, di = match_beats(ref / 360, peaks / 360, 0.150)
        found[leads] = (set(ri), len(peaks) - len(di))
    (one, extra_one), (two, extra_two) = found["one"], found["two"]
    missed_one, missed_two = len(ref) - len(one), len(ref) - len(two)
    assert missed_one > 60
    assert missed_two < missed_one / 2
    assert extra_two <= extra_one + 3
    assert one <= two  # the first lead's beats all stay
    recovered = classes[sorted(two - one)]
    assert (recovered == 2).mean() > 0.8  # V beats
    # a flat second lead changes nothing
    flat = detect_peaks(rec.p_signal[:, 0], 360, second=np.zeros(len(rec.p_signal)))
    np.testing.assert_array_equal(flat, detect_peaks(rec.p_signal[:, 0], 360))


def test_lone_beats_record_108s_extra_beats_go_real_beats_stay(mitdb):
    """108's tall P and T waves and noise make extra beats on MLII; V1 has no beat there."""
    x, x2, ref, _, other, kept = gaps_filled(mitdb, "108")
    final = drop_lone_beats(kept, x, x2, other, 360)
    (ri_kept, di_kept), (ri, di) = (match_beats(ref / 360, p / 360, 0.150) for p in (kept, final))
    extra_kept, extra = len(kept) - len(di_kept), len(final) - len(di)
    assert extra_kept > 60
    assert extra < 0.2 * extra_kept
    assert set(ri_kept) <= set(ri)  # every real beat found stays
    np.testing.assert_array_equal(
        detect_peaks(x, 360, second=x2), add_beats_on_both(final, x, x2, other, 360)
    )
    # a second lead that beats nowhere near (off, or a different rhythm) drops nothing
    far = np.array([len(x) + 10 * 360])
    np.testing.assert_array_equal(drop_lone_beats(kept, x, x2, far, 360), kept)


def test_beats_on_both_leads_recover_208s_v_beats_between_missed_ones(mitdb):
    """Runs of V beats XQRS misses on MLII leave no gap a gap rule sees; V1 shows them."""
    x, x2, ref, classes, other, kept = gaps_filled(mitdb, "208")
    kept = drop_lone_beats(kept, x, x2, other, 360)
    final = add_beats_on_both(kept, x, x2, other, 360)
    (ri_kept, di_kept), (ri, di) = (match_beats(ref / 360, p / 360, 0.150) for p in (kept, final))
    missed_kept, missed = len(ref) - len(ri_kept), len(ref) - len(ri)
    assert missed_kept > 30
    assert missed < missed_kept / 2
    assert len(final) - len(di) <= len(kept) - len(di_kept) + 2  # extra beats
    assert set(ri_kept) <= set(ri)
    assert (classes[sorted(set(ri) - set(ri_kept))] == 2).mean() > 0.9  # V beats
    assert set(kept) <= set(final)
    # every added beat keeps apart from its neighbours
    assert np.diff(final).min() >= 0.2 * 360


def gaps_filled(mitdb: Path, name: str, minutes: float = 10):
    """A record's first minutes: both leads, the reference beats and classes, the second
    lead's XQRS beats, and the refined peaks with its beats filling the first lead's gaps
    (what detect_peaks has before it drops lone beats)."""
    import wfdb

    rec = wfdb.rdrecord(str(mitdb / name), sampto=round(minutes * 60 * 360))
    x, x2 = rec.p_signal[:, 0], rec.p_signal[:, 1]
    ref, classes = read_atr_slice(mitdb, name, minutes)
    peaks = add_second_lead(detect_peaks(x, 360, refine=False), x2, 360)
    return x, x2, ref, classes, second_lead_beats(x2, 360), refine_peaks(x, peaks, 360)


def read_atr_slice(mitdb: Path, name: str, minutes: float):
    ref, classes = read_annotations(mitdb, name)
    keep = ref < minutes * 60 * 360
    return ref[keep], np.asarray(classes)[keep]


def test_second_lead_is_an_ecg_lead_or_none():
    assert second_lead(["MLII", "V1"], 0) == 1
    assert second_lead(["V5", "V2"], 0) == 1
    assert second_lead(["ECG I", "ECG II"], 1) == 0
    assert second_lead(["ECG"], 0) is None
    assert second_lead(["ECG1", "ECG2"], 0) == 1  # a Holter's channels
    # a sleep study's EDF: EEG, breathing and SpO2 are no second lead
    assert second_lead(["EEG C3-A2", "ECG", "Resp chest", "SpO2", "EMG chin"], 1) is None


def test_refinement_moves_208_s_v_beats_to_their_annotated_fiducial(mitdb):
    """Record 208 (many wide V beats): XQRS puts most of its V beats > 25 ms from the mark
    the training beats were cut at; refined, most are within it, N beats no worse, and no
    beat is lost or added by the move."""
    x = mlii(mitdb, "208", 8)
    ref, cls = read_annotations(mitdb, "208")
    ref, cls = ref[ref < len(x)], cls[ref < len(x)]
    raw = detect_peaks(x, 360.0, refine=False)
    refined = refine_peaks(x, raw, 360.0)
    assert len(refined) == len(raw)

    def far(peaks, c):
        ri, di = match_beats(ref, peaks, 0.15 * 360)
        return (np.abs(peaks[di] - ref[ri]) > 9)[cls[ri] == c].mean()

    assert far(raw, 2) > 0.5
    assert far(refined, 2) < 0.5 * far(raw, 2)
    assert far(refined, 0) <= far(raw, 0) + 0.005
    np.testing.assert_array_equal(detect_peaks(x, 360.0), refined)


def test_refinement_takes_the_first_big_deflection_and_merges_duplicates():
    x = np.zeros(2000)
    x[500], x[520] = -0.9, 1.0  # a wide beat: a deep first deflection, then the top
    x[1200] = 1.0
    got = refine_peaks(x, np.array([515, 1190, 1195, 1210]), 360.0)
    assert np.abs(got - np.array([500, 1200])).max() <= 1  # first peak >= 0.6 x the top
    # near the edges the window holds only the signal (no repeated end sample to snap to);
    # on a flat stretch a detection stays where it is
    edge = np.zeros(2000)
    edge[10], edge[1990] = 1.0, 1.0
    assert refine_peaks(edge, np.array([5, 1996]), 360.0).tolist() == [10, 1990]
    assert refine_peaks(np.zeros(2000), np.array([700]), 360.0).tolist() == [700]
    only_top = refine_peaks(x, np.array([515]), 360.0, frac=1.0)
    assert abs(only_top[0] - 520) <= 1
    assert len(refine_peaks(x, np.zeros(0, np.int64), 360.0)) == 0


def test_merging_chunks_drops_seam_duplicates_only():
    """A beat both chunks found at their seam is one beat; two detections 150 ms apart
    inside a chunk are the detector's call, kept (refined peaks behind a P-wave detection
    were lost to a blanket 200-ms rule)."""
    from raytasks.recordings.predict import STATS, merge_chunks

    def chunk(t0, peaks):
        n = len(peaks)
        return {
            "t0": t0,
            "peaks": np.array(peaks),
            "beats": np.zeros((n, 187), np.float32),
            "windows": np.zeros((1, len(STATS)), np.float32),
        }

    inside = [100, 100 + int(0.15 * 360), 1000]
    rec = merge_chunks([chunk(60.0, [21_650, 21_700]), chunk(0.0, [*inside, 21_590])])
    assert rec["peaks"].tolist() == [*inside, 21_590, 21_700]
    assert len(rec["beats"]) == 5
    assert merge_chunks([chunk(0.0, [])])["peaks"].tolist() == []


def test_matcher_on_hand_made_cases():
    ref = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    # exact, 0.1 s late, 0.2 s late (too far), a stray between 3 and 4, none near 5
    det = np.array([1.0, 2.1, 3.2, 3.5, 9.0])
    ri, di = match_beats(ref, det, 0.15)
    assert ri.tolist() == [0, 1]
    assert di.tolist() == [0, 1]
    # two detections for one beat: only the closest one matches, the other is extra
    ri, di = match_beats(np.array([1.0]), np.array([0.95, 1.01]), 0.15)
    assert ri.tolist() == [0]
    assert di.tolist() == [1]
    # closest pairs first: a detection between two beats does not steal the nearer match
    ri, di = match_beats(np.array([1.0, 1.25]), np.array([1.12, 1.24]), 0.15)
    assert sorted(zip(ri.tolist(), di.tolist())) == [(0, 0), (1, 1)]
    assert match_beats(ref, np.array([]), 0.15)[0].size == 0
    s = score_record(ref, np.array([0, 1, 2, 0, 0]), det, np.array([0, 2, 2, 1, 0]))
    assert (s["tp"], s["fn"], s["fp"]) == (2, 3, 3)
    assert s["cm"][0, 0] == 1
    assert s["cm"][1, 2] == 1
    assert s["cm"].sum() == 2


def test_beats_at_reference_peaks_are_the_training_beats(slice_dir):
    """--peaks atr through predict's reader gives exactly data.beats.record_beats' beats, and
    chunking (aligned to the 10-s windows) leaves nearly all of them unchanged."""
    path = slice_dir / "118.hea"
    info = probe(path, None)
    want = record_beats(slice_dir, "118")
    whole = detect_chunk(
        {"path": str(path), "info": info, "t0": 0.0, "t1": None, "mode": "atr", "name": "118"}
    )
    assert whole["error"] == ""
    np.testing.assert_array_equal(whole["peaks"], want["sample"].to_numpy())
    np.testing.assert_array_equal(whole["beats"], want[[str(i) for i in range(187)]].to_numpy())
    part = detect_chunk(
        {"path": str(path), "info": info, "t0": 600.0, "t1": 900.0, "mode": "atr", "name": "118"}
    )
    sel = (want["sample"] >= 600 * 360) & (want["sample"] < 900 * 360)
    np.testing.assert_array_equal(part["peaks"], want["sample"][sel].to_numpy())
    same = np.isclose(part["beats"], whole["beats"][sel.to_numpy()], atol=1e-4).all(axis=1)
    assert same.mean() > 0.97


def run_predict(*args):
    return CliRunner().invoke(main, ["predict", "--model", str(MODEL), *args])


@pytest.fixture(scope="module")
def two_records(ray_cluster, mitdb, tmp_path_factory):
    """Predictions for the first minutes of 232 (S beats, pauses) and 233 (V beats, in runs)
    (no .atr beside them), 2 workers, chunks of 60 s; the reference beats in another folder."""
    root = tmp_path_factory.mktemp("two")
    for name in TWO:
        write_slice(mitdb, name, root / "rec", atr=False)
        write_slice(mitdb, name, root / "ref")
    res = run_predict(
        "--records",
        str(root / "rec"),
        "--out",
        str(root / "out"),
        "--workers",
        "2",
        "--chunk-s",
        "60",
    )
    assert res.exit_code == 0, (res.output, res.exception)
    return root


def test_ray_data_path_writes_every_output(two_records):
    out = two_records / "out"
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary["recording"].astype(str)) == list(TWO)
    assert set(summary["quality"]) <= {"good", "fair", "poor"}
    for name in TWO:
        beats = pd.read_csv(out / name / "beats.csv")
        ref, classes = read_atr(two_records / "ref" / f"{name}.atr")
        assert abs(len(beats) - len(ref)) <= 0.05 * len(ref)  # 232 starts hard: 7 extra
        probs = beats[[f"p_{c}" for c in "NSVFQ"]].to_numpy()
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-3)
        assert np.all(np.diff(beats["time_s"]) > 0.15)  # chunk seams left no duplicate
        s = json.loads((out / name / "summary.json").read_text())
        assert s["beats"] == len(beats)
        assert s["n_V"] == int((beats["class"] == 2).sum())
        assert abs(s["duration_s"] - 60 * MINUTES) < 1
        assert s["windows_10s"] == 6 * MINUTES  # the 60-s chunks' 10-s windows, joined
        assert s["quality"] == "good", s["quality_reasons"]  # clean stretches of both
        page = (out / name / "report.html").read_text()
        assert f"Recording {name}" in page
        assert page.count("data:image/png;base64,") >= 4  # ectopy, >= 2 classes, strip
        png = (out / name / "strip.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(png) > 10000
        # the summary of the record's main ectopic class against the reference beats
        c, short = (1, "S") if name == "232" else (2, "V")
        want = (classes == c).sum(), longest_run(classes, c, ref / 360)[0]
        got = s[f"n_{short}"], s[f"longest_{short}_run"]
        assert abs(got[0] - want[0]) <= 0.15 * want[0] + 3, (name, got, want)
        assert abs(got[1] - want[1]) <= 2, (name, got, want)
        assert s[f"{short}_per_hour"] == pytest.approx(got[0] / (MINUTES / 60), rel=0.01)
    assert not list(out.glob(".*"))


def test_score_reaches_the_reference(two_records):
    res = CliRunner().invoke(
        main,
        ["score", "--records", str(two_records / "ref"), "--predictions", str(two_records / "out")],
    )
    assert res.exit_code == 0, (res.output, res.exception)
    rows = pd.read_csv(two_records / "out" / "score.csv").set_index("record")
    assert list(rows.index.astype(str)) == [*TWO, "total"]
    assert rows.loc["total", "QRS_Se"] > 0.98
    assert rows.loc["total", "QRS_+P"] > 0.97
    assert rows.loc["total", "ref_beats"] == sum(
        len(read_atr(two_records / "ref" / f"{n}.atr")[0]) for n in TWO
    )
    # an intra model saw these records' beats in training: matched beats are mostly right
    assert rows.loc["total", "accuracy"] > 0.9
    assert rows.loc["233", "V_Se"] > 0.9
    assert "total confusion" in (two_records / "out" / "score.txt").read_text()


def test_edf_and_csv_round_trips(ray_cluster, slice_dir, tmp_path):
    """The same minutes as WFDB, EDF and CSV (at 250 Hz) give the same beats."""
    import pyedflib
    from scipy.signal import resample_poly

    wfdb_hea = write_slice(slice_dir, "232", tmp_path / "wfdb", atr=False)
    x = mlii(slice_dir, "232")
    edf = tmp_path / "files" / "232e.edf"
    edf.parent.mkdir()
    heads = [
        pyedflib.highlevel.make_signal_header(
            label, dimension="mV", sample_frequency=360, physical_min=-5, physical_max=5
        )
        for label in ("ECG MLII", "ECG V1")
    ]
    v1 = wfdb_lead(slice_dir, "232", "V1")
    pyedflib.highlevel.write_edf(str(edf), [np.ascontiguousarray(x), v1], heads)
    csv = tmp_path / "files" / "232c.csv"
    x250 = resample_poly(x, 25, 36)
    pd.DataFrame({"time": np.arange(len(x250)) / 250, "MLII": x250}).to_csv(csv, index=False)
    assert probe(edf, None)["fs"] == 360
    assert len(read_span(edf, probe(edf, None), 0, 60)) == 21600
    for rec in (wfdb_hea, tmp_path / "files"):
        res = run_predict("--records", str(rec), "--out", str(tmp_path / "out"), "--fs", "250")
        assert res.exit_code == 0, (res.output, res.exception)
    ref = pd.read_csv(tmp_path / "out" / "232" / "beats.csv")
    for name in ("232e", "232c"):
        got = pd.read_csv(tmp_path / "out" / name / "beats.csv")
        ri, di = match_beats(ref["time_s"].to_numpy(), got["time_s"].to_numpy(), 0.02)
        # the CSV has one lead: it keeps the few lone beats (T waves) V1 lets WFDB and EDF drop
        assert len(ri) >= 0.99 * (len(ref) if name == "232c" else max(len(ref), len(got)))
        same = ref["class"].to_numpy()[ri] == got["class"].to_numpy()[di]
        assert same.mean() > 0.97
    assert pd.read_csv(tmp_path / "out" / "232c" / "beats.csv")["sample"].max() < len(x250)
    # the lead classified, and the second lead whose beats fill its gaps (none in a CSV)
    leads = {}
    for name in ("232", "232e", "232c"):
        summary = json.loads((tmp_path / "out" / name / "summary.json").read_text())
        leads[name] = (summary["lead"], summary["second_lead"])
    assert leads == {"232": ("MLII", "V1"), "232e": ("ECG MLII", "ECG V1"), "232c": ("MLII", "")}


def test_bad_recordings_are_named_and_skipped(ray_cluster, slice_dir, tmp_path):
    rec = tmp_path / "rec"
    write_slice(slice_dir, "118", rec, minutes=1, atr=False)
    x = mlii(slice_dir, "118", 1)
    pd.DataFrame({"MLII": x[:360]}).to_csv(rec / "short.csv", index=False)
    pd.DataFrame({"MLII": np.full(len(x), 0.25)}).to_csv(rec / "flat.csv", index=False)
    pd.DataFrame({"MLII": np.clip(x, -0.1, 0.1)}).to_csv(rec / "clipped.csv", index=False)
    write_slice(slice_dir, "232", rec, minutes=1, atr=False, fs_out=80)  # header says 80 Hz
    (rec / "bad.csv").write_text("MLII\n0.1\nabc\n0.2\n")
    write_slice(slice_dir, "208", rec, minutes=1, atr=False)
    dat = (rec / "208.dat").read_bytes()
    (rec / "208.dat").write_bytes(dat[: len(dat) // 2])  # truncated
    out = tmp_path / "out"
    res = run_predict("--records", str(rec), "--out", str(out), "--fs", "360")
    assert res.exit_code == 0, (res.output, res.exception)
    skipped = [ln for ln in res.output.splitlines() if ln.startswith("skipped:")]
    for bad, why in (
        ("short.csv", "too short"),
        ("flat.csv", "flat"),
        ("clipped.csv", "saturated"),
        ("232.hea", "80 Hz"),
        ("bad.csv", "line 3"),
        ("208", "208"),
    ):
        assert any(bad in ln and why in ln for ln in skipped), (bad, res.output)
    assert len(skipped) == 6
    assert sorted(p.name for p in out.iterdir()) == ["118", "summary.csv"]
    assert pd.read_csv(out / "summary.csv")["recording"].astype(str).tolist() == ["118"]


def test_check_signal_messages():
    x = np.sin(np.arange(3600) / 20.0)
    check_signal(Path("ok.csv"), x, 360)
    with pytest.raises(ValueError, match="NaN"):
        check_signal(Path("n.csv"), np.r_[x, np.nan], 360)
    with pytest.raises(ValueError, match="below the 100 Hz"):
        check_signal(Path("slow.csv"), x, 50)


def test_reference_annotations_reader_agrees_with_independent_one(mitdb):
    got_s, got_y = read_annotations(mitdb, "232")
    want_s, want_y = read_atr(mitdb / "232.atr")
    np.testing.assert_array_equal(got_s, want_s)
    np.testing.assert_array_equal(got_y, want_y)


# ---------------------------------------------------------------- pass 2: classification


def record_inputs(mitdb, name: str, n: int = 1000) -> np.ndarray:
    """beat + RR features of a record's first n beats: what an RR model reads."""
    from raytasks.data import FEATURES, RR_FEATURES

    return record_beats(mitdb, name)[FEATURES + RR_FEATURES].to_numpy(np.float32)[:n]


def test_pieces_keep_every_worker_equally_busy():
    """A 24-hour recording's 109,286 beats, 2 workers: 6 pieces, 3 each, not 5 + 1 short."""
    assert even_pieces(109286, 2, 20000) == 18215
    for total in (1, 7, 19999, 20001, 40000, 109286, 250001):
        for workers in (1, 2, 3, 8):
            size = even_pieces(total, workers, 20000)
            rounds = -(-total // (workers * 20000))
            pieces = -(-total // size)
            assert size <= 20000
            assert pieces <= workers * rounds  # no round more than the largest pieces need
            if total >= 1000 * workers:  # then each worker gets as many pieces as the others
                assert pieces == workers * rounds, (total, workers)


def test_traced_model_classifies_as_the_eager_one_or_is_not_used(mitdb):
    """Tracing keeps the logits (within 1e-4) and every class; a graph that does not
    reproduce the module (here, one that counts its calls) falls back to the module."""
    import torch

    model, info = saved.load_model(MODEL)
    fast = traced_model(model)
    assert isinstance(fast, torch.jit.ScriptModule)
    x = record_inputs(mitdb, "208", 2 * TRACE_BATCH)
    want, got = saved.predict_logits(model, x), saved.predict_logits(fast, x)
    np.testing.assert_allclose(got, want, atol=1e-4)
    off = saved.offsets_of(info)
    np.testing.assert_array_equal((got + off).argmax(1), (want + off).argmax(1))

    class Counting(torch.nn.Module):
        input_width = 191

        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            return x[:, :5] * self.calls

    counting = Counting()
    assert traced_model(counting) is counting


def test_a_model_rewritten_in_place_is_loaded_anew(mitdb, tmp_path):
    """Pass 2 keeps each model it loads in its worker process; a model folder rewritten
    since (a re-export under the same tag) is read again, not served from that cache."""
    import shutil

    dest = tmp_path / "model"
    shutil.copytree(MODEL, dest)
    x = record_inputs(mitdb, "208", 300)
    first = classify({"name": "208", "t0": 0.0, "x": x}, str(dest))["logits"]
    other = ROOT / "models" / "resnet1d-intra-rr-s1"  # also 191 inputs wide
    for f in (saved.WEIGHTS, saved.INFO):
        shutil.copyfile(other / f, dest / f)
    second = classify({"name": "208", "t0": 0.0, "x": x}, str(dest))["logits"]
    np.testing.assert_allclose(
        second, saved.predict_logits(saved.load_model(other)[0], x), atol=1e-5
    )
    assert not np.allclose(first, second)
