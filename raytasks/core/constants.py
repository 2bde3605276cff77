"""The numbers every module shares: the five AAMI classes, the beat's length and rates.

`raytasks.data` re-exports them; import them from either, never write them as literals.
"""

CLASS_NAMES = ["Normal", "Supraventricular", "Ventricular", "Fusion", "Unknown"]
CLASS_SHORT = ["N", "S", "V", "F", "Q"]
NUM_CLASSES = 5
FS_RAW = 360  # MIT-BIH's sampling rate (Hz)
FS = 125  # the beats' sampling rate after the build's resampling (Hz)
BEAT_LEN = 187  # samples per beat (1.5 s at FS)
# Each built beat's RR-interval context (the 187-sample window starts at its own R-peak, so
# it hides how premature the beat is, the classic cue for S beats): previous and next RR
# over the local RR (mean of the 30 around it), the local RR in seconds, and the previous
# RR over the record's mean RR. Models trained with `rr = true` read them after the beat.
RR_FEATURES = ["rr_pre", "rr_post", "rr_local", "rr_record"]
# the beats the record features' `rhythm` group looks across, centred on the beat (~25 s):
# a median over them ignores lone early beats (raytasks.data.features.rhythm)
RHYTHM_BEATS = 33
# the data build's seed (which beats go to which split, shard order): config.toml `seed`;
# a training run's seed is a training setting (raytasks.training.settings.TrainSettings.seed)
SPLIT_SEED = 42
# UTC times: in names (run names, submission ids) a path component without colons; in file
# contents (model.json `exported`, build.json `created`, leaderboard `finished`, job.json)
# ISO 8601
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_stamp() -> str:
    """Now, for a name: 20261129T111800Z."""
    import time

    return time.strftime(STAMP_FORMAT, time.gmtime())


def utc_iso() -> str:
    """Now, for a file's contents: 2026-11-29T11:18:00Z."""
    import time

    return time.strftime(ISO_FORMAT, time.gmtime())
