"""An independent reader of MIT-format .atr files (no wfdb), to check the build against."""

from pathlib import Path

import numpy as np

# MIT annotation codes -> AAMI class, for the beat codes only
CODE_TO_AAMI = {
    1: 0,
    2: 0,
    3: 0,
    34: 0,
    11: 0,  # N L R e j
    8: 1,
    4: 1,
    7: 1,
    9: 1,  # A a J S
    5: 2,
    10: 2,  # V E
    6: 3,  # F
    12: 4,
    38: 4,
    13: 4,
}  # / f Q
SKIP, NUM, SUB, CHN, AUX = 59, 60, 61, 62, 63


def read_atr(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(sample, AAMI class) of every beat annotation in an .atr file."""
    words = np.fromfile(path, dtype="<u2")
    t, i = 0, 0
    samples, classes = [], []
    while i < len(words):
        w = int(words[i])
        code, val = w >> 10, w & 0x3FF
        i += 1
        if code == 0 and val == 0:
            break
        if code == SKIP:
            hi, lo = int(words[i]), int(words[i + 1])
            t += (hi << 16) | lo
            i += 2
        elif code in (NUM, SUB, CHN):
            pass
        elif code == AUX:
            i += (val + 1) // 2
        else:
            t += val
            if code in CODE_TO_AAMI:
                samples.append(t)
                classes.append(CODE_TO_AAMI[code])
    return np.array(samples), np.array(classes)
