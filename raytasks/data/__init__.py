"""Data: raw MIT-BIH records -> beat shards (build) -> class-balanced Ray Data stream (stream).

Classes are the five AAMI groups; `CLASS_NAMES[i]` names class i.
"""

CLASS_NAMES = ["Normal", "Supraventricular", "Ventricular", "Fusion", "Unknown"]
CLASS_SHORT = ["N", "S", "V", "F", "Q"]
NUM_CLASSES = 5
BEAT_LEN = 187
FEATURES = [str(i) for i in range(BEAT_LEN)]  # the hackathon/Kaggle files' beat columns
# Shards hold the beat as one tensor column, BEAT: FixedSizeList<float32>[187]. LAYOUT is the
# shard layout version build.json records (1: 187 scalar columns, before it was recorded);
# readers refuse any other, so an old build is rebuilt, never misread.
BEAT = "beat"
LAYOUT = 2
SPLITS = ("train", "valid", "test")
# Each built beat's RR-interval context (the 187-sample window starts at its own R-peak, so
# it hides how premature the beat is, the classic cue for S beats): previous and next RR
# over the local RR (mean of the 30 around it), the local RR in seconds, and the previous
# RR over the record's mean RR. Models trained with `rr = true` read them after the beat.
RR_FEATURES = ["rr_pre", "rr_post", "rr_local", "rr_record"]


class DataError(ValueError):
    """Bad input data; the message names the file and what is wrong with it."""
