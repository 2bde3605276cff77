"""Data: raw MIT-BIH records -> beat shards (build) -> class-balanced Ray Data stream (stream).

Classes are the five AAMI groups; `CLASS_NAMES[i]` names class i.
"""

from raytasks.core.constants import (  # noqa: F401  (the data's numbers, re-exported)
    BEAT_LEN,
    CLASS_NAMES,
    CLASS_SHORT,
    FS,
    FS_RAW,
    NUM_CLASSES,
    RHYTHM_BEATS,
    RR_FEATURES,
)
from raytasks.core.errors import RaytasksError
from raytasks.core.paths import scheme_path  # noqa: F401  (re-exported)

FEATURES = [str(i) for i in range(BEAT_LEN)]  # the hackathon/Kaggle files' beat columns
# Shards hold the beat as one tensor column, BEAT: FixedSizeList<float32>[187]. LAYOUT is the
# shard layout version build.json records (1: 187 scalar columns, before it was recorded);
# readers refuse any other, so an old build is rebuilt, never misread.
BEAT = "beat"
LAYOUT = 2
SPLITS = ("train", "valid", "test")


class DataError(RaytasksError):
    """Bad input data; the message names the file and what is wrong with it."""
