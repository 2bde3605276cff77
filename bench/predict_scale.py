"""Recordings per minute through `raytasks predict` (Ray Data) with 1 vs 2 workers, side by
side in one run on the same records (default: the first 8 MIT-BIH records, 30 min each).
With --day, one long two-channel recording made by concatenating records (48 x 30 min =
24 h at 360 Hz): seconds and beats/s at 1 and 2 workers, and the ratio to detection alone
(pass 1 at 2 workers: what classification, the driver and the outputs add to it).

    flock /tmp/raytasks-cpu.lock unshare -n sh -c 'ip link set lo up; \
        .venv/bin/python bench/predict_scale.py --records 8'
    ... bench/predict_scale.py --day 24      # the issue's 24-hour recording (goal: <= 60 s)
    .venv/bin/python bench/predict_scale.py --batches   # the model alone: batches, traced

--batches times the model alone on one core on 19,968 built beats (the intra test split),
side by side: in batches of 256 (predict_logits' default) and of 4,096 (its default before),
and traced for inference (predict's pass 2 on long jobs: recordings.predict.traced_model).
"""

import argparse
import tempfile
import time
from pathlib import Path

from raytasks.core import config
from raytasks.data.mitdb import list_records, resolve_records
from raytasks.recordings.predict import CHUNK_S, default_model, plan, predict, run_detection


def make_day(src: Path, names: list[str], dest: Path, hours: float) -> Path:
    """dest/day.{hea,dat}: the records' two channels end to end until `hours` of ECG."""
    import numpy as np
    import wfdb

    parts, total = [], 0
    for name in names:
        rec = wfdb.rdrecord(str(src / name))
        parts.append(rec.p_signal[:, :2].astype(np.float32))
        total += len(parts[-1])
        if total >= hours * 3600 * rec.fs:
            break
    signal = np.concatenate(parts)[: int(hours * 3600 * 360)]
    wfdb.wrsamp(
        "day",
        fs=360,
        units=["mV", "mV"],
        sig_name=["MLII", "V1"],
        p_signal=signal.astype(np.float64),
        fmt=["212", "212"],
        write_dir=str(dest),
    )
    return dest / "day.hea"


def day(src: Path, names: list[str], model: Path, hours: float) -> None:
    """One long recording at 1 and 2 workers, and detection alone."""
    with tempfile.TemporaryDirectory() as tmp:
        path = make_day(src, names, Path(tmp), hours)
        seconds = {}
        for workers in (1, 2):
            t0 = time.perf_counter()
            frame = predict([path], model, Path(tmp) / f"out{workers}", workers=workers)
            seconds[workers] = time.perf_counter() - t0
            beats = int(frame["beats"].sum())
            print(
                f"{workers} worker(s): {frame['duration_s'].sum() / 3600:.1f} h, {beats} beats in "
                f"{seconds[workers]:.1f} s = {beats / seconds[workers]:,.0f} beats/s",
                flush=True,
            )
        t0 = time.perf_counter()
        run_detection(plan([path], None, CHUNK_S, "detect"), 2)
        detect = time.perf_counter() - t0
    print(
        f"detection alone (2 workers): {detect:.1f} s; predict / detection at 2 workers: "
        f"x{seconds[2] / detect:.2f}; 2 vs 1 workers: x{seconds[1] / seconds[2]:.2f}; "
        f"goal <= 60 s for 24 h: {'met' if seconds[2] * 24 / hours <= 60 else 'missed'}"
    )


def batches(model_dir: Path, processed: Path, rows: int = 19968) -> None:
    """Beats/s of the model on one core: eager in batches of 256 and of 4096, and traced for
    inference (what predict's pass 2 runs on long jobs) in batches of 256; their logits."""
    import numpy as np
    import torch

    from raytasks.data.stream import load_split, split_files
    from raytasks.models import saved
    from raytasks.recordings.predict import TRACE_BATCH, traced_model

    torch.set_num_threads(1)
    model, info = saved.load_model(model_dir)
    x, _ = load_split(split_files(processed / "intra", "test"), rr=True, template=False)
    x = saved.model_inputs(model, x[:rows])  # rows: a multiple of TRACE_BATCH
    fast = traced_model(model)
    runs = [("eager 256", model, 256), ("eager 4096", model, 4096)]
    runs += [("traced 256", fast, TRACE_BATCH)]
    rate, logits = {}, {}
    for label, net, size in runs + runs:  # the first round warms up (the traced graph too)
        t0 = time.perf_counter()
        logits[label] = saved.predict_logits(net, x, batch=size)
        rate[label] = len(x) / (time.perf_counter() - t0)
    off = saved.offsets_of(info)
    same = ((logits["traced 256"] + off).argmax(1) == (logits["eager 256"] + off).argmax(1)).mean()
    print(
        f"{model_dir.name}, {len(x)} beats, 1 core, beats/s: "
        + ", ".join(f"{k} {v:,.0f}" for k, v in rate.items())
        + f"\n  eager 256 / 4096: x{rate['eager 256'] / rate['eager 4096']:.2f}, same logits: "
        f"{np.array_equal(logits['eager 256'], logits['eager 4096'])}"
        f"\n  traced / eager (256): x{rate['traced 256'] / rate['eager 256']:.2f} (traced: "
        f"{fast is not model}), logits within "
        f"{np.abs(logits['traced 256'] - logits['eager 256']).max():.1e}, same class: {same:.2%}"
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=8, help="how many records")
    ap.add_argument("--model", default=None, help="model dir (default: predict's default)")
    ap.add_argument("--day", type=float, default=None, help="HOURS: one concatenated recording")
    ap.add_argument("--batches", action="store_true", help="the model alone: batches, traced")
    args = ap.parse_args()
    import ray

    cfg = config.load()
    src = resolve_records(cfg["records"], config.where(cfg, "raw_download"))
    paths = [src / f"{n}.hea" for n in list_records(src)[: args.records]]
    model = Path(args.model) if args.model else default_model(config.where(cfg, "models"))
    if args.batches:
        batches(model, config.where(cfg, "processed"))
        return
    ray.init(num_cpus=2, log_to_driver=False, configure_logging=False)
    if args.day:
        day(src, list_records(src), model, args.day)
        return
    rates = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            frame = predict(paths, model, Path(out), workers=workers)
            seconds = time.perf_counter() - t0
        rates[workers] = len(frame) / seconds * 60
        print(
            f"{workers} worker(s): {len(frame)} recordings ({frame['beats'].sum()} beats, "
            f"{frame['duration_s'].sum() / 3600:.1f} h of ECG) in {seconds:.1f} s = "
            f"{rates[workers]:.1f} recordings/min",
            flush=True,
        )
    print(f"model {model.name}: 2 vs 1 workers: x{rates[2] / rates[1]:.2f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
