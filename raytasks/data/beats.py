"""Beats from a signal, as in Kachuee et al. 2018, and each beat's RR-interval features.

Resampled 360 -> 125 Hz, cut into 10-second windows each min-max normalised to [0, 1];
every annotated beat becomes the 1.2 x (window's median RR) samples from its R-peak,
cropped/zero-padded to 187. `raytasks predict` applies the same functions to detected beats.
"""

from math import gcd
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.signal import resample_poly

from raytasks.data import BEAT_LEN, FEATURES, FS, FS_RAW, RR_FEATURES
from raytasks.data.mitdb import read_record

WINDOW_S = 10  # seconds per min-max normalised window
RR_FACTOR = 1.2  # a beat is RR_FACTOR x the window's median RR long (then cropped/padded)

PREPROCESSING = {
    "fs": FS,
    "window_s": WINDOW_S,
    "rr_factor": RR_FACTOR,
    "beat_len": BEAT_LEN,
    "lead": "MLII else first",
}


def extract_beats(signal: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Beats (n, 187) float32 from a 360 Hz signal and its beat R-peak sample indices."""
    g = gcd(FS, FS_RAW)
    sig = resample_poly(signal, FS // g, FS_RAW // g)
    peaks = np.rint(samples * FS / FS_RAW).astype(np.int64)
    win = WINDOW_S * FS
    rr_all = np.diff(peaks)
    record_rr = float(np.median(rr_all)) if len(rr_all) else float(BEAT_LEN / RR_FACTOR)
    beats = np.zeros((len(peaks), BEAT_LEN), dtype=np.float32)
    windows = peaks // win
    for w in np.unique(windows):
        idx = np.flatnonzero(windows == w)
        start = int(w) * win
        seg = sig[start : start + win]
        lo, hi = seg.min(), seg.max()
        seg = (seg - lo) / (hi - lo) if hi > lo else np.zeros_like(seg)
        rr = np.diff(peaks[idx])
        period = float(np.median(rr)) if len(rr) else record_rr
        length = min(BEAT_LEN, int(RR_FACTOR * period))
        for i in idx:
            p = int(peaks[i]) - start
            piece = seg[p : p + length]
            beats[i, : len(piece)] = piece
    return beats


def rr_features(samples: np.ndarray, local: int = 30) -> np.ndarray:
    """(n, 4) float32 RR_FEATURES of beats at these 360 Hz R-peak samples (one record).

    Local and record RR are means, not medians: where ectopic beats are the majority rhythm
    (DS2's record 232: frequent S beats between long pauses), a median takes them for the
    norm and their prematurity vanishes; the mean keeps the pauses in the reference.
    """
    n = len(samples)
    rr = np.diff(samples) / FS_RAW
    if len(rr) == 0:
        return np.ones((n, len(RR_FEATURES)), dtype=np.float32)
    pre = np.r_[rr[0], rr]
    post = np.r_[rr, rr[-1]]
    half = local // 2
    window = np.lib.stride_tricks.sliding_window_view(np.pad(pre, half, mode="edge"), local + 1)
    local_rr = window.mean(axis=1)
    return np.stack([pre / local_rr, post / local_rr, local_rr, pre / rr.mean()], axis=1).astype(
        np.float32
    )


def record_beats(records_dir: Path, name: str) -> pd.DataFrame:
    """All beats of one record: columns 0..186, target, record, sample, RR_FEATURES."""
    signal, samples, labels = read_record(records_dir, name)
    beats = extract_beats(signal, samples)
    frame = pd.DataFrame(beats, columns=FEATURES)
    frame["target"] = labels
    frame["record"] = name
    frame["sample"] = samples
    frame[RR_FEATURES] = rr_features(samples)
    return frame
