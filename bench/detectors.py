"""R-peak detectors on MIT-BIH records: QRS Se / +P (150 ms matching against the .atr beats,
the `raytasks score` matcher) and seconds per 30-minute record, side by side in one run.

    MITDB_DIR=../shared/data/mitdb .venv/bin/python bench/detectors.py 100 105 208 232
    .venv/bin/python bench/detectors.py --all --detectors sleepecg,xqrs,raytasks  # 48 records
    .venv/bin/python bench/detectors.py --all --detectors raytasks-1lead,raytasks-wfdb-loop
    .venv/bin/python bench/detectors.py --all --detectors raytasks,raytasks-keep-lone

`raytasks-wfdb-loop` is the one-lead detector with wfdb's own find_local_peaks, as it ran
before `predict.local_peaks`: the same beats as `raytasks-1lead`, its time side by side.

`raytasks` is predict's detector (XQRS with sleepecg filling its gaps, XQRS on the record's
second lead filling them too, and the beats the second lead does not confirm dropped);
`raytasks-keep-lone` the same keeping those; `raytasks-1lead` the same on MLII alone.
neurokit2 is measured only where installed: it is not a project dependency (it requires
pandas < 3). Scored over whole records, ventricular flutter left out (as EC57 and
`raytasks score` do).
"""

import argparse
import time
from pathlib import Path

import numpy as np

from raytasks.core import config
from raytasks.data.mitdb import list_records, resolve_records
from raytasks.recordings.score import match_beats, outside, read_annotations


def read_lead(records: Path, name: str) -> tuple[np.ndarray, np.ndarray, float]:
    """MLII (else the first channel), the other channel, the rate."""
    import wfdb

    rec = wfdb.rdrecord(str(records / name))
    lead = rec.sig_name.index("MLII") if "MLII" in rec.sig_name else 0
    return rec.p_signal[:, lead], rec.p_signal[:, 1 - lead], float(rec.fs)


def sleepecg_peaks(x, fs, x2):
    import sleepecg

    return sleepecg.detect_heartbeats(x, fs)


def xqrs_peaks(x, fs, x2):
    from wfdb import processing

    return processing.xqrs_detect(x, fs, verbose=False)


def neurokit_peaks(x, fs, x2):
    import neurokit2 as nk

    _, info = nk.ecg_peaks(nk.ecg_clean(x, sampling_rate=fs), sampling_rate=fs)
    return info["ECG_R_Peaks"]


def predict_peaks(x, fs, x2):
    from raytasks.recordings.predict import detect_peaks

    return detect_peaks(x, fs, second=x2)


def predict_peaks_one_lead(x, fs, x2):
    return predict_peaks(x, fs, None)


def predict_peaks_wfdb_loop(x, fs, x2):
    """The one-lead detector with wfdb's own find_local_peaks (a Python loop): the same
    peaks, for the time it took before predict.local_peaks."""
    import contextlib
    from unittest import mock

    with mock.patch("raytasks.recordings.predict.fast_local_peaks", contextlib.nullcontext):
        return predict_peaks_one_lead(x, fs, x2)


def predict_peaks_keep_lone(x, fs, x2):
    """Two leads as `raytasks`, without dropping the beats the second lead does not confirm
    (`predict.drop_lone_beats`): the detector before it."""
    from raytasks.recordings.predict import add_second_lead, detect_peaks, refine_peaks

    return refine_peaks(x, add_second_lead(detect_peaks(x, fs, refine=False), x2, fs), fs)


def predict_peaks_filter_each(x, fs, x2):
    """Two leads as `raytasks`, each second-lead step band-passing both leads itself (7
    filters instead of 2): the same peaks, for the time sharing them saves."""
    from raytasks.recordings import predict as p

    peaks = p.detect_peaks(x, fs, refine=False)
    other = p.second_lead_beats(x2, fs)
    peaks = p.refine_peaks(x, p.add_second_lead(peaks, x2, fs, other=other), fs)
    peaks = p.drop_lone_beats(peaks, x, x2, other, fs)
    return p.add_beats_on_both(peaks, x, x2, other, fs)


DETECTORS = {
    "sleepecg": sleepecg_peaks,
    "xqrs": xqrs_peaks,
    "neurokit2": neurokit_peaks,
    "raytasks": predict_peaks,
    "raytasks-1lead": predict_peaks_one_lead,
    "raytasks-wfdb-loop": predict_peaks_wfdb_loop,
    "raytasks-keep-lone": predict_peaks_keep_lone,
    "raytasks-filter-each": predict_peaks_filter_each,
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("records", nargs="*", default=["100", "105", "208", "232"])
    ap.add_argument("--all", action="store_true", help="every record of the directory")
    ap.add_argument("--detectors", default="sleepecg,xqrs,raytasks-1lead,raytasks")
    args = ap.parse_args()
    cfg = config.load()
    records = resolve_records(cfg["records"], config.where(cfg, "raw_download"))
    names = list_records(records) if args.all else args.records
    totals = {}
    for name in names:
        x, x2, fs = read_lead(records, name)
        ref, _, flutter = read_annotations(records, name, spans=True)
        ref = ref[outside(ref, flutter)]  # EC57 leaves ventricular flutter out (record 207)
        for det in args.detectors.split(","):
            t0 = time.perf_counter()
            peaks = np.sort(np.asarray(DETECTORS[det](x, fs, x2), dtype=np.int64))
            peaks = peaks[outside(peaks, flutter)]
            sec = time.perf_counter() - t0
            ri, di = match_beats(ref / fs, peaks / fs, 0.150)
            tp, fn, fp = len(ri), len(ref) - len(ri), len(peaks) - len(di)
            off = np.median(peaks[di] - ref[ri]) if len(ri) else 0
            t = totals.setdefault(det, np.zeros(4))
            t += (tp, fn, fp, sec)
            print(
                f"{name} {det:<18} Se {100 * tp / (tp + fn):6.2f}  +P "
                f"{100 * tp / max(tp + fp, 1):6.2f}  missed {fn:4d} extra {fp:4d}  "
                f"median offset {off / fs * 1e3:+.0f} ms  {sec:5.2f} s",
                flush=True,
            )
    for det, (tp, fn, fp, sec) in totals.items():
        print(
            f"TOTAL {det:<18} {len(names)} records: Se {100 * tp / (tp + fn):.2f}  +P "
            f"{100 * tp / (tp + fp):.2f}  missed {fn:.0f} extra {fp:.0f}  "
            f"{sec / len(names):.2f} s/record"
        )


if __name__ == "__main__":
    main()
