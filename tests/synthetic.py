"""A synthetic WFDB record with known beats: fast tests that need a record, not MIT-BIH.

Sinus beats (narrow QRS, P and T waves) at 75 bpm, every 7th beat a premature ventricular
one (wide, tall, no P wave, a compensatory pause) and every 11th a premature atrial one
(normal shape, 30% early): written as MLII at 360 Hz with a .atr naming each beat N, V or A.
"""

from pathlib import Path

import numpy as np

FS = 360


def wave(t: np.ndarray, centre: float, width: float, height: float) -> np.ndarray:
    return height * np.exp(-0.5 * ((t - centre) / width) ** 2)


def beat_shape(t: np.ndarray, kind: str) -> np.ndarray:
    """One beat around t = 0 (its R peak), in mV."""
    if kind == "V":  # wide and tall, no P wave, a discordant T
        return wave(t, 0, 0.045, 1.6) - wave(t, 0.25, 0.08, 0.35)
    p = wave(t, -0.16, 0.02, 0.12)
    qrs = wave(t, 0, 0.012, 1.0) - wave(t, -0.025, 0.01, 0.15) - wave(t, 0.03, 0.012, 0.25)
    return p + qrs + wave(t, 0.28, 0.05, 0.3)


def beats_plan(seconds: float, seed: int) -> tuple[np.ndarray, list[str]]:
    """(R-peak times in s, symbols): sinus at ~0.8 s; an ectopic beat comes 35% early, and
    a V beat is followed by a compensatory pause."""
    rng = np.random.default_rng(seed)
    times, symbols, t, i = [], [], 0.6, 0
    while t < seconds - 1.0:
        kind = "V" if i % 7 == 6 else "A" if i % 11 == 10 else "N"
        rr = 0.8 + rng.normal(0, 0.02)
        if times:
            t = times[-1] + rr * (0.65 if kind != "N" else 1.0) + (0.3 if symbols[-1] == "V" else 0)
        times.append(t)
        symbols.append(kind)
        i += 1
    return np.asarray(times[:-1]), symbols[:-1]


def write_record(dest: Path, name: str = "900", seconds: float = 120, seed: int = 0) -> Path:
    """dest/<name>.{hea,dat,atr}; returns dest."""
    import wfdb

    times, symbols = beats_plan(seconds, seed)
    t = np.arange(int(seconds * FS)) / FS
    signal = np.zeros_like(t)
    for when, kind in zip(times, symbols):
        near = np.abs(t - when) < 0.6
        signal[near] += beat_shape(t[near] - when, kind)
    rng = np.random.default_rng(seed + 1)
    signal += 0.1 * np.sin(2 * np.pi * 0.3 * t) + rng.normal(0, 0.01, len(t))  # wander, noise
    dest.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(
        name,
        fs=FS,
        units=["mV"],
        sig_name=["MLII"],
        p_signal=signal[:, None],
        fmt=["212"],
        write_dir=str(dest),
    )
    samples = np.rint(times * FS).astype(np.int64)
    wfdb.wrann(name, "atr", samples, np.array(symbols), write_dir=str(dest))
    return dest
