"""Recordings per minute through `raytasks predict` (Ray Data) with 1 vs 2 workers, side by
side in one run on the same records (default: the first 8 MIT-BIH records, 30 min each).

    flock /tmp/raytasks-cpu.lock unshare -n sh -c 'ip link set lo up; \
        .venv/bin/python bench/predict_scale.py --records 8'
"""

import argparse
import tempfile
import time
from pathlib import Path

from raytasks.core import config
from raytasks.data.mitdb import list_records, resolve_records
from raytasks.recordings.predict import default_model, predict


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=8, help="how many records")
    ap.add_argument("--model", default=None, help="model dir (default: predict's default)")
    args = ap.parse_args()
    import ray

    cfg = config.load()
    src = resolve_records(cfg["records"], config.where(cfg, "raw_download"))
    paths = [src / f"{n}.hea" for n in list_records(src)[: args.records]]
    model = Path(args.model) if args.model else default_model(config.where(cfg, "models"))
    ray.init(num_cpus=2, log_to_driver=False, configure_logging=False)
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
