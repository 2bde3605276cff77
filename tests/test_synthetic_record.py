"""The synthetic record (tests/synthetic.py) through the real reading, beat cutting and
R-peak detection code: quick checks of those steps that need no MIT-BIH download."""

import numpy as np
import pytest

from raytasks.data import CLASS_SHORT, RR_FEATURES
from raytasks.data.beats import record_beats
from raytasks.data.mitdb import read_record
from raytasks.recordings.predict import detect_peaks
from tests.synthetic import FS, beats_plan, write_record


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_record(tmp_path_factory.mktemp("synthetic"))


def test_its_beats_come_back_with_their_classes_and_prematurity(synthetic):
    times, symbols = beats_plan(120, 0)
    frame = record_beats(synthetic, "900")
    assert len(frame) == len(times)
    labels = [CLASS_SHORT[c] for c in frame["target"]]
    assert labels == [{"A": "S"}.get(s, s) for s in symbols]  # A is supraventricular
    pre = frame[RR_FEATURES[0]].to_numpy()  # the RR before each beat over the local RR
    target = frame["target"].to_numpy()
    after_v = np.r_[False, target[:-1] == 2]  # (an ectopic beat after a V's pause is not early)
    ectopic = (target > 0) & ~after_v
    assert pre[ectopic].max() < 0.85 < pre[(target == 0) & ~after_v][1:].min()
    # a beat starts at its R peak: a V beat's wide QRS takes longer to fall to half of it
    beats = frame.iloc[:, :187].to_numpy()
    fall = (beats < 0.5 * beats[:, :1]).argmax(axis=1)
    assert fall[target == 2].min() > fall[target == 0].max()


def test_the_detector_finds_the_beats_within_50_ms_and_adds_none(synthetic):
    signal, samples, _ = read_record(synthetic, "900")
    found = detect_peaks(signal, FS)
    to_found = np.abs(samples[:, None] - found[None, :]).min(axis=1)
    to_beat = np.abs(found[:, None] - samples[None, :]).min(axis=1)
    assert (to_found <= 0.05 * FS).mean() >= 0.98  # QRS sensitivity
    assert (to_beat <= 0.05 * FS).all()  # no extra beat
