"""The patient-level floor (issue 15): HistGradientBoosting on the built inter shards' own
columns, DS1 (train + valid) -> DS2 (test), one shot per feature row, printed in the issue's
columns with 95% intervals from bootstrapping DS2's records.

    python bench/inter_floor.py [--processed data/processed] [--boot 1000]

Rows: every 3rd beat sample + the 4 RR columns; then + the beat minus its record's median
beat (every 3rd sample, L1, L2) + the local RR over the record's mean (raytasks.data.features).
Whatever ships for `inter` must beat the second row's S F1 and V F1 on DS2.
"""

import argparse
import time
from pathlib import Path

from raytasks import boost  # raytasks before ray, as in the other benches
from raytasks.core.metrics import FIELD_COLUMNS, field_table, record_bootstrap
from raytasks.data.features import FLOOR_ROWS, record_features

ROOT = Path(__file__).resolve().parents[1]
# the floor: 300 iterations with scikit-learn's default early stopping (on > 10k
# rows: 10% of DS1 beats held out); class weights ~ count^-0.5
FLOOR_HGB = boost.HGB | {"early_stopping": "auto"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processed", default=str(ROOT / "data" / "processed"))
    ap.add_argument("--boot", type=int, default=1000, help="record bootstrap draws")
    args = ap.parse_args()
    x, y, ctx = boost.load(args.processed, "inter", ("train", "valid"))
    xt, yt, ctxt = boost.load(args.processed, "inter", ("test",))
    print(
        f"DS1 {len(y)} beats ({ctx['record'].nunique()} records) -> DS2 {len(yt)} beats "
        f"({ctxt['record'].nunique()} records)"
    )
    rows, points = {}, {}
    for name, params in FLOOR_ROWS.items():
        t0 = time.perf_counter()
        est = boost.fit(record_features(x, ctx, params), y, FLOOR_HGB)
        pred = boost.raw_logits(est, record_features(xt, ctxt, params)).argmax(axis=1)
        seconds = time.perf_counter() - t0
        rows[name] = record_bootstrap(yt, pred, ctxt["record"].to_numpy(), n_boot=args.boot)
        points[name] = {k: v[0] for k, v in rows[name].items()}
        print(
            f"{name}: {est.n_features_in_} features, {est.n_iter_} iterations, "
            f"{seconds:.0f} s (features, fit, predict)"
        )
    print("\nDS2, one shot each:\n")
    print(field_table(points, FIELD_COLUMNS))
    print(f"\nwith 95% intervals over DS2's records ({args.boot} bootstrap draws):\n")
    print(field_table(rows, FIELD_COLUMNS))


if __name__ == "__main__":
    main()
