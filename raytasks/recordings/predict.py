"""Unannotated recordings -> detected, classified beats, on Ray Data.

    raytasks predict --records DIR|FILE [--model models/x] [--out results/predict/]

Inputs: WFDB records (.hea + .dat; a .atr, if any, is ignored unless --peaks atr), EDF
files (pyedflib) and CSV files of samples (--fs gives their sampling rate). Lead MLII (or a
channel labelled ECG), else the first one.

Per recording: the signal is resampled to the 360 Hz of MIT-BIH, R-peaks are found by
wfdb's XQRS with sleepecg's detector filling its gaps (`detect_peaks`), and the training
preprocessing is applied unchanged (`extract_beats` and `rr_features` of raytasks.data.beats:
125 Hz, 10-s windows min-max normalised, beats of 1.2 x the window's median RR, RR features
from the *detected* peaks). A recording is cut
into chunks (--chunk-s, aligned to the 10-s windows) and Ray Data runs one task per chunk:
pass 1 detects peaks and extracts beats, the driver computes each recording's RR features
over all its peaks (they need the whole record), and pass 2 classifies them in tasks too,
on the processes pass 1 warmed up, the model loaded once per process. Outputs per recording
go to OUT/<name>/ (beats.csv, summary.json, strip.png, report.html; summary.json carries
signal-quality flags, raytasks.recordings.quality), each written into a temporary folder
renamed into place; OUT/summary.csv covers all of them.
A bad recording (unreadable, too short, flat, saturated, below 100 Hz) is reported in one
line naming the file and skipped; the others are processed.
"""

import json
from contextlib import contextmanager
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from raytasks.core.paths import staged_dir, staged_file
from raytasks.data import BEAT_LEN, CLASS_SHORT, FS_RAW, NUM_CLASSES, DataError
from raytasks.data.beats import WINDOW_S, extract_beats, rr_features
from raytasks.data.features import with_deviations
from raytasks.models import saved
from raytasks.recordings.quality import STATS, assess, window_stats

MIN_FS = 100
MIN_SECONDS = 2.5  # shorter than this holds no beat with an RR interval either side
CHUNK_S = 3600
MARGIN_S = 2 * WINDOW_S  # read around a chunk so resampling edges fall outside it
REFRACTORY_S = 0.2  # two detections closer than this (a chunk seam) are one beat
ECTOPIC = (1, 2)  # S and V: what "ectopic beats per hour" and the runs count
SUFFIXES = (".hea", ".edf", ".csv")
CLASS_COLOURS = ("tab:green", "tab:orange", "tab:red", "tab:purple", "tab:gray")  # N S V F Q


# ---------------------------------------------------------------- reading recordings


def list_recordings(path: Path) -> list[Path]:
    """A file, or every WFDB header, EDF and CSV file in a directory (sorted)."""
    path = Path(path)
    if path.is_file() or path.with_suffix(".hea").is_file():
        return [path.with_suffix(".hea") if path.suffix in ("", ".dat") else path]
    if not path.is_dir():
        raise DataError(f"{path}: no such file or directory")
    found = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES)
    if not found:
        raise DataError(f"{path}: no recordings (*.hea + *.dat, *.edf, *.csv)")
    return found


def pick_lead(labels: list[str]) -> int:
    upper = [s.upper() for s in labels]
    for want in ("MLII", "ECG", "II"):
        for i, s in enumerate(upper):
            if want in s:
                return i
    return 0


ECG_LEADS = {
    "I",
    "II",
    "III",
    "AVR",
    "AVL",
    "AVF",
    "MLI",
    "MLII",
    "MLIII",
    "V",
    "V1",
    "V2",
    "V3",
    "V4",
    "V5",
    "V6",
    "D3",
    "CM5",
    "CC5",
    "ML5",
}


def second_lead(labels: list[str], lead: int) -> int | None:
    """Another channel that names an ECG lead (its beats fill the chosen lead's gaps:
    detect_peaks), or None: an EDF of a sleep study also holds EEG, breathing, SpO2."""
    for i, label in enumerate(labels):
        name = label.upper().replace("ECG", "").strip(" -_")
        ecg = "ECG" in label.upper() and (name == "" or name.isdigit())  # "ECG", "ECG2"
        if i != lead and (name in ECG_LEADS or ecg):
            return i
    return None


def probe(path: Path, fs_csv: float | None) -> dict:
    """Sampling rate, length (samples; None when unknown before reading), the lead read and
    a second ECG lead (or None), and both their names, of a recording."""
    kind = path.suffix.lower()
    try:
        if kind == ".hea":
            return probe_wfdb(path)
        if kind == ".edf":
            return probe_edf(path)
        if fs_csv is None:
            raise DataError(f"{path}: a CSV holds no sampling rate; give it with --fs")
        with open(path, errors="replace") as f:  # a header names the column (read_csv_samples)
            head = [v.strip() for v in f.readline().split(",")]
        named = not all(is_number(v) for v in head)
        name = head[pick_lead(head)] if named else ""
        return {"fs": float(fs_csv), "n": None, "lead": None, "names": [name, ""]}
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: unreadable ({type(e).__name__}: {str(e)[:100]})") from None


def probe_wfdb(path: Path) -> dict:
    import wfdb

    h = wfdb.rdheader(str(path.with_suffix("")))
    if not path.with_suffix(".dat").exists() and not h.file_name:
        raise DataError(f"{path.with_suffix('.dat')}: missing")
    names = h.sig_name or [""]
    lead = pick_lead(names)
    lead2 = second_lead(names, lead)
    return {"fs": float(h.fs), "n": h.sig_len, "lead": lead, "lead2": lead2} | {
        "names": [names[lead], "" if lead2 is None else names[lead2]]
    }


def probe_edf(path: Path) -> dict:
    import pyedflib

    with pyedflib.EdfReader(str(path)) as f:
        labels, rates, lengths = f.getSignalLabels(), f.getSampleFrequencies(), f.getNSamples()
    lead = pick_lead(labels)
    lead2 = second_lead(labels, lead)
    if lead2 is not None and (rates[lead2], lengths[lead2]) != (rates[lead], lengths[lead]):
        lead2 = None  # a second lead is read sample for sample beside the first
    return {"fs": float(rates[lead]), "n": int(lengths[lead]), "lead": lead, "lead2": lead2} | {
        "names": [labels[lead], "" if lead2 is None else labels[lead2]]
    }


def read_span(
    path: Path, info: dict, t0: float, t1: float | None, lead: str = "lead"
) -> np.ndarray:
    """Samples [t0, t1) seconds of the recording's chosen lead (or of info[lead]: "lead2",
    the second), at its own rate (float64)."""
    fs, kind = info["fs"], path.suffix.lower()
    a = round(t0 * fs)
    b = info["n"] if t1 is None or info["n"] is None else min(info["n"], round(t1 * fs))
    try:
        if kind == ".hea":
            import wfdb

            rec = wfdb.rdrecord(
                str(path.with_suffix("")), sampfrom=a, sampto=b, channels=[info[lead]]
            )
            x = rec.p_signal[:, 0]
        elif kind == ".edf":
            import pyedflib

            with pyedflib.EdfReader(str(path)) as f:
                x = f.readSignal(info[lead], start=a, n=b - a)
        else:
            x = read_csv_samples(path)[a : None if t1 is None else round(t1 * fs)]
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: unreadable ({type(e).__name__}: {str(e)[:100]})") from None
    if b is not None and len(x) != b - a:
        raise DataError(f"{path}: holds {len(x)} samples from {a}, header says {b - a}")
    return np.asarray(x, dtype=np.float64)


def read_csv_samples(path: Path) -> np.ndarray:
    """One column of samples; a header row is allowed (with several columns, the ECG one)."""
    frame = pd.read_csv(path, header=None, dtype=str, skip_blank_lines=True)
    head = [str(v) for v in frame.iloc[0]] if len(frame) else []
    has_header = any(not is_number(v) for v in head)
    body = frame.iloc[1:] if has_header else frame
    col = pick_lead(head) if has_header else 0
    numeric = pd.to_numeric(body.iloc[:, col], errors="coerce")
    if numeric.isna().any():
        row = int(np.flatnonzero(numeric.isna().to_numpy())[0]) + (2 if has_header else 1)
        raise DataError(f"{path}: non-numeric sample on line {row}")
    return numeric.to_numpy(np.float64)


def is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def to_360(x: np.ndarray, fs: float) -> np.ndarray:
    """Resampled to MIT-BIH's 360 Hz (polyphase, as the build's 360 -> 125 Hz)."""
    from scipy.signal import resample_poly

    if fs == FS_RAW:
        return x
    r = Fraction(FS_RAW / fs).limit_denominator(1000)
    return resample_poly(x, r.numerator, r.denominator)


def check_signal(path: Path, x: np.ndarray, fs: float) -> None:
    """Refuse what no beat can be found in: too slow a rate, too short, NaN, flat, clipped."""
    if fs < MIN_FS:
        raise DataError(f"{path}: sampled at {fs:g} Hz, below the {MIN_FS} Hz a QRS needs")
    if len(x) < MIN_SECONDS * fs:
        raise DataError(
            f"{path}: {len(x) / fs:.1f} s long, too short for one beat (needs {MIN_SECONDS} s)"
        )
    if not np.isfinite(x).all():
        raise DataError(f"{path}: NaN or infinite sample at {int(np.argmin(np.isfinite(x)))}")
    lo, hi = x.min(), x.max()
    if hi - lo <= 1e-9 * max(1.0, abs(hi)) or np.std(x) < 1e-6:
        raise DataError(f"{path}: flat signal (no ECG)")
    rails = np.mean((x == lo) | (x == hi))
    if rails > 0.05:
        raise DataError(
            f"{path}: saturated signal ({100 * rails:.0f}% of samples at its minimum or maximum)"
        )


# ---------------------------------------------------------------- detection and beats


def detect_peaks(
    x: np.ndarray, fs: float, refine: bool = True, second: np.ndarray | None = None
) -> np.ndarray:
    """R-peak sample indices: wfdb's XQRS, its missed beats filled in by sleepecg's detector
    and, given a second lead, by XQRS on it (`add_second_lead`), each moved to the
    annotators' fiducial (`refine_peaks`; not with refine=False); given a second lead, the
    beats it does not confirm are dropped (`drop_lone_beats`) and its beats that show on
    both leads are added (`add_beats_on_both`).

    Measured on the 48 MIT-BIH records (bench/detectors.py; docs/recordings.md): XQRS alone
    misses premature ventricular beats (QRS Se 99.21%, +P 99.65%), sleepecg alone more so
    and adds more false beats (99.12%, 99.19%); sleepecg's beats that fall inside an XQRS gap
    longer than FILL_RATIO x the local RR reach 99.42% / 99.59% (ventricular flutter
    stretches excluded, as EC57 does); the second lead's, bench/second_lead.py.
    """
    import sleepecg

    extra = np.asarray(sleepecg.detect_heartbeats(x, fs), dtype=np.int64)
    main = xqrs(x, fs)
    peaks = np.sort(extra) if main is None else fill_gaps(main, np.sort(extra), fs)
    if second is None or len(peaks) < 3:
        return refine_peaks(x, peaks, fs) if refine else peaks
    other = second_lead_beats(second, fs)
    if len(second) < 64 or peaks[-1] >= len(second):  # too short, or not aligned
        return refine_peaks(x, peaks, fs) if refine else peaks
    # each lead band-passed once and handed to the four steps below (each would filter again)
    mag, mag2 = band_magnitude(x, fs), band_magnitude(second, fs)
    sizes = (qrs_size(x, fs, mag), qrs_size(second, fs, mag2))
    peaks = add_second_lead(peaks, second, fs, other=other, size2=sizes[1])
    peaks = refine_peaks(x, peaks, fs, mag=mag) if refine else peaks
    peaks = drop_lone_beats(peaks, x, second, other, fs, sizes=sizes)
    return add_beats_on_both(peaks, x, second, other, fs, refine=refine, sizes=sizes, mag=mag)


def xqrs(x: np.ndarray, fs: float) -> np.ndarray | None:
    """wfdb's XQRS beats (sorted); None where it cannot learn (some short or odd signals)."""
    from wfdb import processing

    try:
        with fast_local_peaks():
            return np.sort(np.asarray(processing.xqrs_detect(x, fs, verbose=False), np.int64))
    except Exception:
        return None


# a second lead's beats that fill the first's gaps: gap and size chosen by leave-records-out
# CV on the 48 MIT-BIH records (bench/second_lead.py)
SECOND_RATIO = 1.4
SECOND_SIZE = 0.9
SECOND_WINDOW_S = 600.0


def add_second_lead(
    peaks: np.ndarray,
    x2: np.ndarray,
    fs: float,
    ratio=SECOND_RATIO,
    size=SECOND_SIZE,
    other: np.ndarray | None = None,
    size2: np.ndarray | None = None,
) -> np.ndarray:
    """peaks plus the beats XQRS finds on a second lead (`other`, else `second_lead_beats`)
    that split a gap of peaks (fill_gaps' rule, at `ratio`) and are at least `size` x as
    large there as the first lead's beats are: premature ventricular beats XQRS misses on
    MLII stand out on V1, T waves and noise do not. `size2`: the second lead's `qrs_size`,
    if already computed."""
    if len(x2) < 64 or len(peaks) == 0 or peaks[-1] >= len(x2):  # too short, or not aligned
        return peaks
    other = second_lead_beats(x2, fs) if other is None else other
    if len(other) == 0:
        return peaks
    new = np.setdiff1d(fill_gaps(peaks, other, fs, ratio), peaks)
    if len(new) == 0:
        return peaks
    band = qrs_size(x2, fs) if size2 is None else size2
    return np.sort(np.r_[peaks, new[band[new] >= size * np.median(band[peaks])]])


def second_lead_beats(x2: np.ndarray, fs: float) -> np.ndarray:
    """XQRS's beats on a second lead, sorted. XQRS's backsearch turns quadratic over a long
    stretch it finds no beat in (8 s for an hour of a lead that changes at a record's seam):
    the lead is searched 10 min at a time."""
    if len(x2) < 64:
        return np.zeros(0, np.int64)
    n = round(SECOND_WINDOW_S * fs)
    found = [(xqrs(x2[i : i + n], fs), i) for i in range(0, len(x2), n)]
    return np.concatenate([np.zeros(0, np.int64)] + [b + i for b, i in found if b is not None])


# a beat the second lead does not confirm, chosen by leave-records-out CV on the 48 MIT-BIH
# records (bench/second_lead.py --lone): no second-lead beat within LONE_NEAR_S though one
# within LONE_FAR_S (the lead is beating there), and small on both leads
LONE_NEAR_S = 0.08
LONE_FAR_S = 0.6
LONE_SIZE2 = 0.5
LONE_SIZE1 = 0.7


def lone_features(peaks, x, x2, other, fs, sizes=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per peak: seconds to the nearest beat of `other`, and its size (`qrs_size`, or
    `sizes` = both leads' if already computed) on the first and on the second lead over
    that lead's median at the peaks."""
    j = np.searchsorted(other, peaks)
    before, after = other[np.clip(j - 1, 0, None)], other[np.clip(j, None, len(other) - 1)]
    dist = np.minimum(np.abs(peaks - before), np.abs(after - peaks)) / fs
    sizes = sizes or (qrs_size(x, fs), qrs_size(x2, fs))
    s1, s2 = sizes[0][peaks], sizes[1][peaks]
    return dist, s1 / max(np.median(s1), 1e-12), s2 / max(np.median(s2), 1e-12)


def drop_lone_beats(
    peaks,
    x,
    x2,
    other,
    fs,
    near=LONE_NEAR_S,
    far=LONE_FAR_S,
    size2=LONE_SIZE2,
    size1=LONE_SIZE1,
    sizes=None,
) -> np.ndarray:
    """peaks less the lone ones: a real beat shows on both leads at once, while a tall T or
    P wave or a burst of noise on the first lead (most of record 108's extra beats) has no
    second-lead beat at its time, though the second lead beats nearby, and is small on
    both. Beats where the second lead finds nothing within `far` stay (it may be off)."""
    if len(peaks) < 3 or len(other) == 0 or peaks[-1] >= len(x2):
        return peaks
    dist, s1, s2 = lone_features(peaks, x, x2, other, fs, sizes)
    lone = (dist > near) & (dist < far) & (s2 < size2) & (s1 < size1)
    return peaks[~lone]


def band_magnitude(x: np.ndarray, fs: float) -> np.ndarray:
    """|x| band-passed to FIDUCIAL_BAND (zero phase): what the fiducial and sizes read."""
    from scipy.signal import butter, sosfiltfilt

    sos = butter(2, FIDUCIAL_BAND, btype="band", fs=fs, output="sos")
    return np.abs(sosfiltfilt(sos, np.asarray(x, dtype=np.float64)))


def qrs_size(x: np.ndarray, fs: float, mag: np.ndarray | None = None) -> np.ndarray:
    """Per sample, the largest 1-40 Hz band magnitude within +-50 ms: a beat's size
    (`mag`: x's `band_magnitude`, if already computed)."""
    from scipy.ndimage import maximum_filter1d

    mag = band_magnitude(x, fs) if mag is None else mag
    return maximum_filter1d(mag, size=round(0.1 * fs) + 1)


# a second-lead beat that shows on both leads though the first lead's detectors passed over
# it, chosen by leave-records-out CV on the 48 MIT-BIH records (bench/second_lead.py --both)
BOTH_SIZE1 = 0.2
BOTH_SIZE2 = 0.2
BOTH_APART_S = 0.4


def add_beats_on_both(
    peaks,
    x,
    x2,
    other,
    fs,
    size1=BOTH_SIZE1,
    size2=BOTH_SIZE2,
    apart=BOTH_APART_S,
    refine=True,
    sizes=None,
    mag=None,
) -> np.ndarray:
    """peaks plus the beats of `other` (XQRS on the second lead) at least `apart` s from
    every peak and at least size2 / size1 x the median beat on the second / first lead
    there, moved to the fiducial: V beats XQRS passes over on MLII (203, 207, 208) and S
    runs (201) that no gap rule catches, because their neighbours are missed too. A T wave
    on the second lead is small on the first, where its QRS is not. `sizes` (both leads'
    `qrs_size`) and `mag` (the first's `band_magnitude`): if already computed."""
    if len(peaks) < 3 or len(other) == 0 or peaks[-1] >= len(x2):
        return peaks
    j = np.searchsorted(peaks, other)
    prev = np.where(j > 0, other - peaks[np.clip(j - 1, 0, None)], len(x))
    after = np.where(j < len(peaks), peaks[np.clip(j, None, len(peaks) - 1)] - other, len(x))
    s1, s2 = sizes or (qrs_size(x, fs), qrs_size(x2, fs))
    new = other[
        (np.minimum(prev, after) > apart * fs)
        & (s1[other] >= size1 * np.median(s1[peaks]))
        & (s2[other] >= size2 * np.median(s2[peaks]))
    ]
    return np.unique(np.r_[peaks, refine_peaks(x, new, fs, mag=mag) if refine else new])


@contextmanager
def fast_local_peaks():
    """XQRS with `local_peaks` in place of wfdb's find_local_peaks: the same peaks, ~50x
    sooner. wfdb's is a Python loop calling max() once per sample, 96% of XQRS's time (1.9 s
    of a 30-min record; bench/predict_scale.py --day 24 times the whole path)."""
    from wfdb.processing import qrs

    original = qrs.find_local_peaks
    qrs.find_local_peaks = local_peaks
    try:
        yield
    finally:
        qrs.find_local_peaks = original


def local_peaks(sig: np.ndarray, radius: int) -> np.ndarray:
    """wfdb.processing.find_local_peaks, vectorised: a sample is a peak when it equals the
    maximum of sig[i - radius : i + radius] (clipped at the edges); scanning left to right,
    a peak skips the next radius - 1 samples. Only the skip is a loop, over candidates."""
    from scipy.ndimage import maximum_filter1d

    sig = np.asarray(sig)
    if np.min(sig) == np.max(sig):
        return np.empty(0)
    # window [i - radius, i + radius); "nearest" repeats an edge sample, which leaves a max as is
    top = maximum_filter1d(sig, size=2 * radius, mode="nearest")
    peaks, next_free = [], 0
    for i in np.flatnonzero(sig == top):
        if i >= next_free:
            peaks.append(int(i))
            next_free = i + radius
    return np.array(peaks)


# R-peak refinement to the annotators' fiducial, chosen by leave-records-out CV on the 48
# MIT-BIH records (bench/fiducial.py: 3 of 4 folds chose it): 1-40 Hz band, +-65 ms, the first
# peak >= 0.6 x the top
FIDUCIAL_BAND = (1.0, 40.0)
FIDUCIAL_HALF_S = 0.065
FIDUCIAL_FRAC = 0.6


def refine_peaks(
    x: np.ndarray,
    peaks: np.ndarray,
    fs: float,
    half_s: float = FIDUCIAL_HALF_S,
    frac: float = FIDUCIAL_FRAC,
    mag: np.ndarray | None = None,
) -> np.ndarray:
    """Each detection moved to the fiducial the annotators mark: in the band-passed signal's
    magnitude within +-half_s, the first local peak reaching frac x the window's top (a wide
    V beat's first big deflection, not wherever XQRS's filter peaked: 46% of matched V beats
    sat > 25 ms from the mark, and the classifier was trained on beats cut at the mark).
    Detections that land on one sample become one; on a flat stretch a detection stays.
    Signals under 64 samples are returned as given. `mag`: x's `band_magnitude`, if
    already computed."""
    peaks = np.asarray(peaks, dtype=np.int64)
    if len(peaks) == 0 or len(x) < 64:
        return peaks
    mag = band_magnitude(x, fs) if mag is None else mag
    half = round(half_s * fs)
    where = peaks[:, None] + np.arange(-half, half + 1)
    inside = (where >= 0) & (where < len(x))  # a window over the signal's edge: no padding
    idx = np.clip(where, 0, len(x) - 1)
    seg = np.where(inside, mag[idx], -1.0)
    rows = np.arange(len(peaks))
    top = seg.argmax(axis=1)
    ok = np.zeros_like(seg, dtype=bool)
    ok[:, 1:-1] = (seg[:, 1:-1] >= seg[:, :-2]) & (seg[:, 1:-1] >= seg[:, 2:])
    ok &= seg >= frac * seg[rows, top][:, None]
    ok[rows, top] = True  # the top itself always qualifies (also at a window's edge)
    moved = idx[rows, ok.argmax(axis=1)]
    flat = seg[rows, top] <= 0  # nothing to go by (a flat line): stay
    return np.unique(np.where(flat, peaks, moved))


FILL_RATIO = 1.2
PRE_MAX = 1.1  # a missed beat comes no later than the next normal one would (not in a pause)


def fill_gaps(
    main: np.ndarray, extra: np.ndarray, fs: float, ratio: float = FILL_RATIO
) -> np.ndarray:
    """main plus the beats of extra that split a gap of main longer than `ratio` x the
    median of the 9 RR intervals around it (a missed beat), at least 200 ms from both ends
    and less than PRE_MAX x that median after the previous beat."""
    from scipy.ndimage import median_filter

    if len(main) < 3 or len(extra) == 0:
        return main if len(main) >= len(extra) else extra
    rr = np.diff(main)
    local = median_filter(rr, size=9, mode="nearest")
    k = np.searchsorted(main, extra)
    inside = (k > 0) & (k < len(main))
    k, cand = k[inside], extra[inside]
    near = np.minimum(cand - main[k - 1], main[k] - cand)
    pre = cand - main[k - 1]
    add = cand[
        (near > REFRACTORY_S * fs)
        & (rr[k - 1] > ratio * local[k - 1])
        & (pre < PRE_MAX * local[k - 1])
    ]
    return np.sort(np.r_[main, add])


def plan_chunks(name: str, path: Path, info: dict, chunk_s: float) -> list[dict]:
    """Rows for pass 1: [t0, t1) per chunk, t0 on the 10-s window grid of the build."""
    chunk_s = max(WINDOW_S, WINDOW_S * round(chunk_s / WINDOW_S))
    seconds = None if info["n"] is None else info["n"] / info["fs"]
    if seconds is None or seconds <= chunk_s:
        return [{"name": name, "path": str(path), "info": info, "t0": 0.0, "t1": None}]
    starts = np.arange(0, seconds, chunk_s)
    return [
        {
            "name": name,
            "path": str(path),
            "info": info,
            "t0": float(t),
            "t1": float(t + chunk_s) if t + chunk_s < seconds else None,
        }
        for t in starts
    ]


def chunk_signal(row: dict) -> tuple[np.ndarray, int, int, int]:
    """(360 Hz signal with margins, its first sample, the chunk's [a, b) in 360 Hz samples)."""
    path, info, t0, t1 = Path(row["path"]), row["info"], row["t0"], row["t1"]
    lo = max(0.0, t0 - MARGIN_S)
    hi = None if t1 is None else t1 + MARGIN_S
    raw = read_span(path, info, lo, hi)
    if t0 == 0 and t1 is None:
        check_signal(path, raw, info["fs"])
    x = to_360(raw, info["fs"])
    start = round(lo * FS_RAW)
    b = start + len(x) if t1 is None else round(t1 * FS_RAW)
    return x, start, round(t0 * FS_RAW), b


def chunk_second(row: dict, n: int) -> np.ndarray | None:
    """The chunk's second lead at 360 Hz, as long as the first (None: none, or unusable)."""
    path, info, t0, t1 = Path(row["path"]), row["info"], row["t0"], row["t1"]
    if info.get("lead2") is None:
        return None
    lo, hi = max(0.0, t0 - MARGIN_S), None if t1 is None else t1 + MARGIN_S
    try:
        x2 = to_360(read_span(path, info, lo, hi, lead="lead2"), info["fs"])
    except DataError:  # the first lead decides whether the recording is readable
        return None
    flat = len(x2) == 0 or np.ptp(x2) == 0 or not np.isfinite(x2).all()
    return None if flat or len(x2) != n else x2


def reference_peaks(row: dict) -> np.ndarray:
    """The .atr beat positions at 360 Hz (--peaks atr: classification without detection)."""
    from raytasks.recordings.score import read_annotations

    path = Path(row["path"])
    if path.suffix != ".hea" or not path.with_suffix(".atr").exists():
        raise DataError(f"{path}: --peaks atr needs a WFDB record with a .atr")
    samples, _ = read_annotations(path.parent, path.stem)
    return np.rint(samples * FS_RAW / row["info"]["fs"]).astype(np.int64)


def detect_chunk(row: dict) -> dict:
    """Pass 1 (one Ray task per chunk): R-peaks in the chunk, their training-exact beats and
    the quality stats of its 10-s windows; whether a second lead's beats filled gaps."""
    row = row | {"second_used": False}
    try:
        x, start, a, b = chunk_signal(row)
        if row.get("mode") == "atr":
            peaks = reference_peaks(row) - start
        else:
            second = chunk_second(row, len(x))
            row = row | {"second_used": second is not None}
            peaks = detect_peaks(x, FS_RAW, second=second)
        peaks = peaks[(peaks + start >= a) & (peaks + start < b) & (peaks >= 0) & (peaks < len(x))]
        beats = extract_beats(x, peaks) if len(peaks) else np.zeros((0, BEAT_LEN), np.float32)
        windows = window_stats(x, a - start, b - start)  # signal quality, judged on the driver
        return row | {"peaks": peaks + start, "beats": beats, "windows": windows, "error": ""}
    except DataError as e:
        return row | {
            "peaks": np.zeros(0, np.int64),
            "beats": np.zeros((0, BEAT_LEN), np.float32),
            "windows": np.zeros((0, len(STATS)), np.float32),
            "error": str(e),
        }


def classify(row: dict, model_dir: str, traced: bool = False) -> dict:
    """Pass 2 (a Ray Data task): a piece of one recording's beats through the model, traced
    for inference if asked (`traced_model`), in batches of TRACE_BATCH (the last padded)."""
    import torch

    torch.set_num_threads(1)  # one core per task: `workers` tasks share the machine
    x = np.ascontiguousarray(row["x"], dtype=np.float32)  # what the model reads
    model = loaded_model(model_dir, model_stamp(model_dir), traced)
    pad = np.zeros((-len(x) % TRACE_BATCH, x.shape[1]), np.float32)
    logits = saved.predict_logits(model, np.concatenate([x, pad]), batch=TRACE_BATCH)[: len(x)]
    return {"name": row["name"], "t0": row["t0"], "logits": logits.astype(np.float32)}


TRACE_BATCH = 256  # predict_logits' batch: the traced graph is fixed to it
TRACE_FROM = 20000  # beats to classify (~4 h of ECG) from which tracing (~2 s) pays


@lru_cache(maxsize=2)
def loaded_model(model_dir: str, stamp: tuple, traced: bool = False):
    """The model, loaded once per worker process and kept: pass 2's tasks run in the
    processes pass 1 warmed up (a fresh actor pool's processes import everything again).
    `stamp` (model_stamp) makes a model rewritten in place load anew."""
    model = saved.load_model(Path(model_dir))[0]
    return traced_model(model) if traced else model


def traced_model(model, tol: float = 1e-3):
    """The model traced and frozen for CPU inference (torch.jit.optimize_for_inference folds
    batch norms into convolutions): x1.2 the beats/s of the eager `ensemble-intra` on a core,
    logits within 1e-5, the same classes (bench/predict_scale.py --batches). The eager model
    where tracing fails or a second batch disagrees (a graph that depends on its trace)."""
    import warnings

    import torch

    gen = torch.Generator().manual_seed(0)
    shape = (TRACE_BATCH, saved.inputs_width(model))
    first, second = torch.randn(*shape, generator=gen), torch.randn(*shape, generator=gen)
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # TracerWarnings on shapes: fixed by TRACE_BATCH
            fast = torch.jit.optimize_for_inference(torch.jit.trace(model, first))
            if (fast(second) - model(second)).abs().max() <= tol:
                return fast
    except Exception:
        pass
    return model


def model_stamp(model_dir: str) -> tuple:
    """Every file of a saved model (members included) with its size and change time."""
    files = sorted(f for f in Path(model_dir).rglob("*") if f.is_file())
    return tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)


# ---------------------------------------------------------------- choosing the model


def default_model(models_dir: Path, rr: bool = True) -> Path:
    """The shipped model with the best valid macro F2 among those the input can feed:
    RR models need a recording's RR intervals, beat-only models take single beats."""
    best, best_f2 = None, -1.0
    for f in sorted(Path(models_dir).glob(f"*/{saved.INFO}")):
        try:
            info = saved.read_info(f.parent)
        except (OSError, ValueError):
            continue
        f2 = info.get("valid_metrics", {}).get("F2scoremacro", -1.0)
        if saved.valid_in_sample(info):  # its valid figures flatter it
            continue
        if (rr or not saved.reads_rr(info)) and f2 > best_f2:
            best, best_f2 = f.parent, f2
    if best is None:
        raise DataError(f"{models_dir}: no exported model to predict with (--model)")
    return best


# ---------------------------------------------------------------- summaries and outputs


def longest_run(classes: np.ndarray, c: int, times: np.ndarray) -> tuple[int, float]:
    """Length and start time (s) of the longest run of consecutive beats of class c."""
    best, start, run = 0, float("nan"), 0
    for i, k in enumerate(classes):
        run = run + 1 if k == c else 0
        if run > best:
            best, start = run, float(times[i - run + 1])
    return best, start


def summarise(name: str, path: Path, beats: pd.DataFrame, seconds: float) -> dict:
    """Beats per class, ectopic (S, V) beats per hour, longest S and V runs."""
    y, t = beats["class"].to_numpy(), beats["time_s"].to_numpy()
    counts = np.bincount(y, minlength=NUM_CLASSES)
    hours = seconds / 3600
    out = {
        "recording": name,
        "file": str(path),
        "duration_s": round(seconds, 1),
        "beats": len(y),
        "mean_hr_bpm": round(60 * (len(t) - 1) / (t[-1] - t[0]), 1) if len(t) > 1 else 0.0,
    }
    out |= {f"n_{c}": int(counts[i]) for i, c in enumerate(CLASS_SHORT)}
    out |= {
        "S_per_hour": round(counts[1] / hours, 1),
        "V_per_hour": round(counts[2] / hours, 1),
        "ectopic_per_hour": round(counts[list(ECTOPIC)].sum() / hours, 1),
    }
    for c in ECTOPIC:
        n, start = longest_run(y, c, t)
        out |= {f"longest_{CLASS_SHORT[c]}_run": n, f"longest_{CLASS_SHORT[c]}_run_at_s": start}
    return out


def most_ectopic_stretch(beats: pd.DataFrame, span: float = 20.0) -> float:
    """Start (s) of the span-second stretch holding the most non-normal beats."""
    t = beats["time_s"].to_numpy()
    sick = np.r_[0, np.cumsum(beats["class"].to_numpy() != 0)]
    ends = np.searchsorted(t, t + span)
    counts = sick[ends] - sick[np.arange(len(t))]
    i = int(np.argmax(counts)) if len(t) else 0
    return max(0.0, float(t[i]) - 1.0) if len(t) else 0.0


def plot_strip(path: Path, info: dict, beats: pd.DataFrame, dest: Path, span: float = 20.0):
    """A rhythm strip of the most ectopic stretch, beats marked and coloured by class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = most_ectopic_stretch(beats, span)
    x = read_span(path, info, t0, t0 + span)
    tt = t0 + np.arange(len(x)) / info["fs"]
    fig, ax = plt.subplots(figsize=(16, 3.2))
    ax.plot(tt, x, color="0.3", lw=0.7)
    inside = beats[(beats["time_s"] >= t0) & (beats["time_s"] < t0 + span)]
    for c, short in enumerate(CLASS_SHORT):
        sel = inside[inside["class"] == c]
        idx = np.clip(((sel["time_s"] - t0) * info["fs"]).round().astype(int), 0, len(x) - 1)
        ax.scatter(
            sel["time_s"],
            x[idx] if len(x) else [],
            color=CLASS_COLOURS[c],
            s=28,
            zorder=3,
            label=f"{short} ({len(sel)})",
        )
    ax.set_xlabel("time (s)")
    ax.set_title(f"{path.name}: {span:.0f} s with the most ectopic beats")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)  # off the trace
    fig.tight_layout()
    fig.savefig(dest, dpi=90)
    plt.close(fig)


def beats_table(
    peaks: np.ndarray, logits: np.ndarray, offsets: np.ndarray, fs: float
) -> pd.DataFrame:
    """time_s, sample (at the recording's own rate), class, class name, probabilities."""
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    classes = (logits + offsets).argmax(axis=1)
    frame = pd.DataFrame(
        {
            "time_s": np.round(peaks / FS_RAW, 4),
            "sample": np.rint(peaks * fs / FS_RAW).astype(np.int64),
            "class": classes,
            "label": np.asarray(CLASS_SHORT)[classes],
        }
    )
    for c, short in enumerate(CLASS_SHORT):
        frame[f"p_{short}"] = np.round(probs[:, c], 5)
    return frame


def write_recording(out: Path, rec: dict, beats: pd.DataFrame, summary: dict) -> None:
    """OUT/<name>/{beats.csv, summary.json, strip.png, report.html}: staged, then swapped in
    whole."""
    from raytasks.recordings.report import write_report

    with staged_dir(out / rec["name"]) as tmp:
        beats.to_csv(tmp / "beats.csv", index=False)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
        plot_strip(Path(rec["path"]), rec["info"], beats, tmp / "strip.png")
        write_report(tmp / "report.html", rec, beats, summary, tmp / "strip.png")


# ---------------------------------------------------------------- the pipeline


def run_detection(jobs: list[dict], workers: int) -> list[dict]:
    """Pass 1 on Ray Data: one task per chunk, at most `workers` at a time."""
    import ray

    rows = [{"job": json.dumps(j)} for j in jobs]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    out = ds.map(
        lambda r: detected_row(json.loads(r["job"])),
        num_cpus=1,
        compute=ray.data.TaskPoolStrategy(size=min(workers, len(rows))),
    ).take_all()
    return [json.loads(r["job"]) | {k: r[k] for k in PASS1} for r in out]


PASS1 = ("peaks", "beats", "windows", "second_used", "error")  # what pass 1 sends the driver


def detected_row(job: dict) -> dict:
    res = detect_chunk(job)
    return {"job": json.dumps(job)} | {k: res[k] for k in PASS1}


def leads(rec: dict) -> dict:
    """The lead classified, and the second lead whose beats filled its gaps ("" if none)."""
    names = rec["info"].get("names") or ["", ""]
    return {"lead": names[0], "second_lead": names[1] if rec["second"] else ""}


def merge_chunks(chunks: list[dict]) -> dict:
    """One recording's chunks in order: peaks and beats joined, seam duplicates dropped;
    the windows' quality stats joined (chunks hold whole 10-s windows, so they tile)."""
    chunks = sorted(chunks, key=lambda c: c["t0"])
    windows = np.concatenate(
        [np.asarray(c["windows"], np.float32).reshape(-1, len(STATS)) for c in chunks]
    )
    peaks = np.concatenate([np.asarray(c["peaks"], np.int64) for c in chunks])
    beats = np.concatenate(
        [np.asarray(c["beats"], np.float32).reshape(-1, BEAT_LEN) for c in chunks]
    )
    # a chunk's first peak within REFRACTORY_S of the chunk before's last one is that beat
    # again (chunks hold [t0, t1), so only one can be); inside a chunk the detector's own
    # refractory rules stand (a blanket 200-ms rule there dropped real beats behind a
    # P-wave detection once they were refined)
    chunk = np.repeat(np.arange(len(chunks)), [len(np.ravel(c["peaks"])) for c in chunks])
    seam = np.r_[False, np.diff(chunk) > 0]
    keep = ~(seam & (np.diff(peaks, prepend=peaks[:1]) < REFRACTORY_S * FS_RAW))
    second = any(c.get("second_used", False) for c in chunks)
    return (
        chunks[0]
        | {"peaks": peaks[keep], "beats": beats[keep], "windows": windows}
        | {
            "t0": 0.0,
            "second": second,
        }
    )


def run_classification(
    recs: list[dict], model_dir: Path, workers: int, rows_per_task: int = 20000
) -> dict[str, np.ndarray]:
    """Pass 2 on Ray Data: logits per recording, in pieces of at most rows_per_task beats,
    as many pieces as keep every worker equally busy."""
    import ray

    model, _ = saved.load_model(model_dir)  # what it reads: a prefix of x, record features
    inputs = {rec["name"]: recording_inputs(model, rec) for rec in recs}
    total = sum(len(x) for x in inputs.values())
    size = even_pieces(total, workers, rows_per_task)
    pieces = [
        {"name": name, "t0": float(k), "x": x[k : k + size]}
        for name, x in inputs.items()
        for k in range(0, len(x), size)
    ]
    ds = ray.data.from_items(pieces, override_num_blocks=max(1, len(pieces)))
    out = ds.map(
        classify,
        fn_kwargs={"model_dir": str(model_dir), "traced": total >= TRACE_FROM},
        num_cpus=1,
        compute=ray.data.TaskPoolStrategy(size=max(1, min(workers, len(pieces)))),
    ).take_all()
    logits: dict[str, list] = {}
    for r in sorted(out, key=lambda r: (r["name"], r["t0"])):
        logits.setdefault(r["name"], []).append(np.asarray(r["logits"]).reshape(-1, NUM_CLASSES))
    return {name: np.concatenate(parts) for name, parts in logits.items()}


def even_pieces(total: int, workers: int, most: int) -> int:
    """Rows per piece: at most `most`, and (given enough rows) a multiple of `workers` pieces
    in all, so that no worker is left with one more piece than the others (one long
    recording: 109,286 beats in 6 pieces of 18,215, not 5 of 20,000 and one of 9,286)."""
    rounds = -(-total // (max(1, workers) * most))  # ceil
    return max(1, -(-total // (max(1, workers) * max(1, rounds))))


def recording_inputs(model, rec: dict) -> np.ndarray:
    """What the model reads for every beat of a whole (merged) recording: beat, RR features,
    and, as the model needs them, the deviation from the recording's own template and the
    trees' record features, all from the recording itself, without labels."""
    x = np.concatenate([rec["beats"], rr_features(rec["peaks"])], axis=1)
    if model.input_width > x.shape[1]:
        x = with_deviations(x, np.full(len(x), rec["name"]), rec["peaks"])
    context = pd.DataFrame({"record": rec["name"], "sample": rec["peaks"]})
    return saved.model_inputs(model, x, context)


def plan(paths: list[Path], fs_csv: float | None, chunk_s: float, mode: str) -> list[dict]:
    """Chunk jobs for every readable recording; an unreadable one is reported and skipped."""
    jobs, names = [], set()
    for p in paths:
        name = p.stem if p.stem not in names else f"{p.stem}{p.suffix.replace('.', '_')}"
        names.add(name)
        try:
            info = probe(p, fs_csv)
        except DataError as e:
            print(f"skipped: {e}", flush=True)
            continue
        jobs += [j | {"mode": mode} for j in plan_chunks(name, p, info, chunk_s)]
    return jobs


def predict(
    paths: list[Path],
    model_dir: Path,
    out: Path,
    fs_csv: float | None = None,
    workers: int = 2,
    chunk_s: float = CHUNK_S,
    mode: str = "detect",
) -> pd.DataFrame:
    """Detect, classify and write every recording; returns the summary.csv frame."""
    from raytasks.core.ray_connect import init_ray

    _, info = saved.load_model(model_dir)  # a bad model fails here, before any work
    offsets = saved.offsets_of(info).astype(np.float32)
    jobs = plan(paths, fs_csv, chunk_s, mode)
    if not jobs:
        raise DataError("no readable recording among " + ", ".join(str(p) for p in paths))
    init_ray()
    by_name: dict[str, list] = {}
    for c in run_detection(jobs, workers):
        by_name.setdefault(c["name"], []).append(c)
    recs = []
    for chunks in by_name.values():
        errors = [c["error"] for c in chunks if c["error"]]
        rec = None if errors else merge_chunks(chunks)
        if errors or len(rec["peaks"]) == 0:
            print(
                f"skipped: {errors[0] if errors else chunks[0]['path'] + ': no beat found'}",
                flush=True,
            )
            continue
        recs.append(rec)
    logits = run_classification(recs, model_dir, workers) if recs else {}
    return write_outputs(recs, logits, offsets, Path(out), model_dir)


def write_outputs(recs, logits, offsets, out: Path, model_dir: Path) -> pd.DataFrame:
    """Per-recording folders, then summary.csv (replaced atomically) over all of them."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for rec in sorted(recs, key=lambda r: r["name"]):
        beats = beats_table(rec["peaks"], logits[rec["name"]], offsets, rec["info"]["fs"])
        n = rec["info"]["n"]
        seconds = n / rec["info"]["fs"] if n else float(rec["peaks"][-1] / FS_RAW)
        summary = summarise(rec["name"], Path(rec["path"]), beats, seconds)
        summary |= assess(rec["windows"], rec["peaks"], seconds)
        summary["model"] = Path(model_dir).name
        summary |= leads(rec)
        write_recording(out, rec, beats, summary)
        rows.append(summary)
        print(
            f"{rec['name']}: {len(beats)} beats, "
            + ", ".join(f"{c} {summary[f'n_{c}']}" for c in CLASS_SHORT)
            + f" -> {out / rec['name']}",
            flush=True,
        )
    frame = pd.DataFrame(rows)
    if rows:  # one cell per reason list: "a; b"
        frame["quality_reasons"] = frame["quality_reasons"].map("; ".join)
        with staged_file(out / "summary.csv") as tmp:
            frame.to_csv(tmp, index=False)
    return frame
