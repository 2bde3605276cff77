"""Data: raw MIT-BIH records -> beat shards (build) -> class-balanced Ray Data stream (stream).

Classes are the five AAMI groups; `CLASS_NAMES[i]` names class i.
"""

CLASS_NAMES = ["Normal", "Supraventricular", "Ventricular", "Fusion", "Unknown"]
CLASS_SHORT = ["N", "S", "V", "F", "Q"]
NUM_CLASSES = 5
BEAT_LEN = 187
FEATURES = [str(i) for i in range(BEAT_LEN)]
SPLITS = ("train", "valid", "test")


class DataError(ValueError):
    """Bad input data; the message names the file and what is wrong with it."""
