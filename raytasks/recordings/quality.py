"""Signal quality of a recording, without labels: what a Holter analyst checks before trusting
its beat counts.

Pass 1 measures every 10-s window of its chunk (`window_stats`: a few numbers per window,
never the signal); the driver joins the chunks' windows and judges them against the whole
recording, together with the detected beats (`assess`). Every figure is a share in percent;
docs/recordings.md describes each one.
"""

import numpy as np

from raytasks.data import FS_RAW
from raytasks.data.beats import WINDOW_S

MIN_WINDOW_S = 5  # a shorter tail window says too little to judge
BLOCK_S = 0.5  # baseline = median of each half second (a QRS fills less than a fifth of it)
HF_HZ = 40  # above the QRS band: muscle noise, mains, electrode motion
# thresholds, chosen on the 48 MIT-BIH records (docs/recordings.md, "Signal quality")
FLAT_RATIO = 0.05  # peak-to-peak under 5% of the recording's median window
RAIL_TOL = 0.005  # "at the rail": within 0.5% of the window's range from its min or max
RAIL_SHARE = 0.015  # more than 1.5% of the samples at a rail (a clean window: < 0.7%)
HF_RATIO = 0.15  # power above 40 Hz over the power in 0.7-40 Hz
WANDER_RATIO = 2.0  # baseline moves more than twice the QRS height within the window
RR_MIN_S, RR_MAX_S = 0.2, 3.0  # RR intervals outside these are not physiological
JUMP_RATIO = 0.4  # a minute's beat count this far from the local median: a rate jump
JUMP_SPAN_MIN = 11  # the local median's span, in minutes
STATS = ("amplitude", "rail_share", "hf_ratio", "wander_ratio")
FLAGS = ("flat", "saturated", "noisy", "wander")


def window_stats(x: np.ndarray, a: int, b: int) -> np.ndarray:
    """(n, len(STATS)) float32: the stats of each 10-s window of x[a:b] (360 Hz; a on the
    recording's 10-s grid, so chunks' windows join into the recording's)."""
    win = WINDOW_S * FS_RAW
    full = (b - a) // win
    parts = [stats_of(x[a : a + full * win].reshape(full, win))]
    tail = x[a + full * win : b]
    if len(tail) >= MIN_WINDOW_S * FS_RAW:
        parts.append(stats_of(tail[None, :]))
    return np.concatenate(parts).astype(np.float32)


def stats_of(segs: np.ndarray) -> np.ndarray:
    """STATS of each row of segs (windows of equal length), all rows at once (numpy-fast)."""
    if len(segs) == 0:
        return np.zeros((0, len(STATS)))
    lo, hi = segs.min(axis=1, keepdims=True), segs.max(axis=1, keepdims=True)
    amp = hi - lo
    rail = np.mean((segs <= lo + RAIL_TOL * amp) | (segs >= hi - RAIL_TOL * amp), axis=1)
    spec = (
        np.abs(np.fft.rfft((segs - segs.mean(axis=1, keepdims=True)) * np.hanning(segs.shape[1])))
        ** 2
    )
    f = np.fft.rfftfreq(segs.shape[1], 1 / FS_RAW)
    hf = spec[:, f >= HF_HZ].sum(axis=1) / np.maximum(
        spec[:, (f >= 0.7) & (f < HF_HZ)].sum(axis=1), 1e-30
    )
    wander = wander_of(segs)
    flat = amp[:, 0] <= 1e-9 * np.maximum(1.0, np.abs(hi[:, 0]))
    out = np.stack([amp[:, 0], rail, hf, wander], axis=1)
    out[flat] = (0.0, 1.0, 0.0, 0.0)  # constant: flat, and the other stats mean nothing
    return out


def wander_of(segs: np.ndarray) -> np.ndarray:
    """Range of the baseline (medians of half seconds, interpolated) over the QRS height
    (99.5th - 0.5th percentile of the signal minus that baseline), per row."""
    block = int(BLOCK_S * FS_RAW)
    n = segs.shape[1] // block * block
    base = np.median(segs[:, :n].reshape(len(segs), -1, block), axis=2)
    centres = np.arange(base.shape[1]) * block + block / 2
    t = np.arange(n)
    ecg = segs[:, :n] - np.stack([np.interp(t, centres, row) for row in base])
    qrs = np.percentile(ecg, 99.5, axis=1) - np.percentile(ecg, 0.5, axis=1)
    return (base.max(axis=1) - base.min(axis=1)) / np.maximum(qrs, 1e-12)


def window_flags(stats: np.ndarray) -> dict[str, np.ndarray]:
    """Per window, one boolean per FLAGS; a flat window carries no other flag."""
    amp = stats[:, 0]
    typical = float(np.median(amp)) if len(amp) else 0.0
    flat = amp <= FLAT_RATIO * typical
    live = ~flat
    return {
        "flat": flat,
        "saturated": live & (stats[:, 1] > RAIL_SHARE),
        "noisy": live & (stats[:, 2] > HF_RATIO),
        "wander": live & (stats[:, 3] > WANDER_RATIO),
    }


def unusable(stats: np.ndarray) -> np.ndarray:
    """Per window: flat, saturated, noisy or wandering (any flag)."""
    return np.logical_or.reduce(list(window_flags(stats).values()), axis=0).reshape(-1)


def rr_implausible(peaks: np.ndarray) -> float:
    """Share of RR intervals below 0.2 s or above 3 s (peaks: 360 Hz samples)."""
    rr = np.diff(peaks) / FS_RAW
    return float(np.mean((rr < RR_MIN_S) | (rr > RR_MAX_S))) if len(rr) else 0.0


def rate_jumps(peaks: np.ndarray, seconds: float) -> float:
    """Share of whole minutes whose detected-beat count is more than JUMP_RATIO away from
    the median of the JUMP_SPAN_MIN minutes around it (detector dropouts, noise bursts)."""
    from scipy.ndimage import median_filter

    minutes = int(seconds // 60)
    if minutes < 3:  # too few minutes for a local median
        return 0.0
    counts = np.bincount(peaks // (60 * FS_RAW), minlength=minutes)[:minutes].astype(float)
    local = median_filter(counts, size=min(JUMP_SPAN_MIN, minutes), mode="nearest")
    return float(np.mean(np.abs(counts - local) > JUMP_RATIO * np.maximum(local, 1.0)))


def pct(share: float) -> float:
    return round(100 * share, 2)


def assess(stats: np.ndarray, peaks: np.ndarray, seconds: float) -> dict:
    """summary.json's quality figures, `quality` (good / fair / poor) and its reasons."""
    flags = window_flags(stats)
    share = {k: float(v.mean()) if len(v) else 0.0 for k, v in flags.items()}
    bad = float(unusable(stats).mean()) if len(stats) else 0.0
    rr, jumps = rr_implausible(peaks), rate_jumps(peaks, seconds)
    out: dict = {"windows_10s": len(stats)}
    out |= {f"{k}_windows_pct": pct(v) for k, v in share.items()}
    out |= {
        "unusable_windows_pct": pct(bad),
        "rr_implausible_pct": pct(rr),
        "rate_jump_minutes_pct": pct(jumps),
    }
    grade, reasons = grade_quality(share, bad, rr, jumps)
    return out | {"quality": grade, "quality_reasons": reasons}


# what each window flag means, as a reason a person reads
WHY = {
    "flat": "10-s windows flat (lead off?)",
    "saturated": "10-s windows saturated (clipped at the amplifier's range)",
    "noisy": "10-s windows very noisy (high-frequency power: muscle, mains, motion)",
    "wander": "10-s windows with baseline wander larger than twice the QRS",
}
FAIR, POOR = 0.05, 0.20  # shares of unusable windows (or of minutes with rate jumps)
RR_FAIR, RR_POOR = 0.01, 0.05  # shares of implausible RR intervals


def grade_quality(share: dict, bad: float, rr: float, jumps: float) -> tuple[str, list[str]]:
    """poor: over POOR of the windows unusable or of the minutes with rate jumps, or over
    RR_POOR of RR intervals implausible; fair: over the FAIR bounds; else good. Reasons: each
    window flag on over FAIR / 2 of the windows (several together make a grade), else their
    union when it makes one, and the RR and rate figures over their FAIR bounds."""
    reasons = [f"{pct(v):g}% of {WHY[k]}" for k, v in share.items() if v > FAIR / 2]
    if bad > FAIR and not reasons:
        reasons.append(f"{pct(bad):g}% of 10-s windows unusable (flat, saturated, noisy, wander)")
    if rr > RR_FAIR:
        reasons.append(f"{pct(rr):g}% of RR intervals implausible (< 0.2 s or > 3 s)")
    if jumps > FAIR:
        reasons.append(f"{pct(jumps):g}% of minutes with a jump in the detected beat rate")
    if bad > POOR or rr > RR_POOR or jumps > POOR:
        return "poor", reasons
    if bad > FAIR or rr > RR_FAIR or jumps > FAIR:
        return "fair", reasons
    return "good", reasons
