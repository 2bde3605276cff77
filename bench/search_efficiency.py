"""ASHA + HyperOpt vs random search without early stopping, at an equal trial-epoch budget.

Both searches get the same budget of trial-epochs (one epoch of one trial = one unit), the
same data, seed, space, starting point and 2 trials at a time. Random search spends it on
budget / max-epochs full trials; ASHA + HyperOpt draws trials until the budget is spent
(a stopper ends the search there), cutting weak ones at 1, 2, 4... epochs. Prints the best
valid objective each found (over every report, which is what an export picks from, and
over full trials only), the trials and trial-epochs used, and writes the best-so-far curve
of each against trial-epochs spent (--plot). Run inside `unshare -n`; it uses the built
shards of RAYTASKS_PROCESSED/<scheme>.

    unshare -n sh -c 'ip link set lo up; .venv/bin/python bench/search_efficiency.py \
        --space cnn1d --budget 120 --max-epochs 4 --plot results/search_efficiency.png'
"""

import json
import os
import tempfile
import time
from pathlib import Path

import click

from raytasks.core import config
from raytasks.core.metrics import OBJECTIVE
from raytasks.tune.search import MODE, conditional_hyperopt, trial_fn
from raytasks.tune.spaces import load_space

KINDS = ("asha+hyperopt", "random (no stopping)")


def budget_stopper(budget: int, log: Path):
    """Ends the whole search once `budget` trial-epochs have reported; logs every report in
    the order the driver saw it (a file: Tune may copy the stopper)."""
    from ray import tune

    class TrialEpochBudget(tune.Stopper):
        def __init__(self):
            self.seen = set()  # (trial, epoch): a finished trial's last result comes again

        def __call__(self, trial_id, result):
            if (trial_id, result["training_iteration"]) in self.seen:
                return False
            self.seen.add((trial_id, result["training_iteration"]))
            with log.open("a") as f:
                f.write(json.dumps([trial_id, result["training_iteration"], result[OBJECTIVE]]))
                f.write("\n")
            return False

        def stop_all(self):
            return len(self.seen) >= budget

    return TrialEpochBudget()


def searcher(kind: str, space, budget: int, max_epochs: int, seed: int):
    """Both draw from one HyperOpt space, the space's starting point first: random search is
    HyperOpt that never leaves its random start (the same draws, no TPE, no stopping)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    if kind == "asha+hyperopt":  # TPE after a quarter of the ~budget/2 trials ASHA runs
        alg = conditional_hyperopt(space, OBJECTIVE, budget // 2, seed)
        scheduler = ASHAScheduler(
            metric=OBJECTIVE, mode=MODE, max_t=max_epochs, grace_period=1, reduction_factor=2
        )
        return ConcurrencyLimiter(alg, max_concurrent=2), scheduler, budget
    samples = budget // max_epochs
    alg = conditional_hyperopt(space, OBJECTIVE, samples, seed, random_start=samples)
    return ConcurrencyLimiter(alg, max_concurrent=2), FIFOScheduler(), samples


def search(kind: str, space, base: dict, budget: int, max_epochs: int, datasets, storage):
    from ray import tune

    trainable = tune.with_resources(
        tune.with_parameters(trial_fn, space=space, base=base, datasets=datasets), {"CPU": 0.5}
    )
    alg, scheduler, samples = searcher(kind, space, budget, max_epochs, base["seed"])
    log = Path(storage) / f"{kind.split()[0]}.jsonl"
    t0 = time.monotonic()
    grid = tune.Tuner(
        trainable,
        run_config=tune.RunConfig(
            name=kind.split()[0],
            storage_path=storage,
            verbose=0,
            stop=budget_stopper(budget, log),
        ),
        tune_config=tune.TuneConfig(search_alg=alg, scheduler=scheduler, num_samples=samples),
    ).fit()
    reports = [json.loads(line) for line in log.read_text().splitlines()]
    return summary(kind, grid, reports, max_epochs, time.monotonic() - t0)


def summary(kind: str, grid, reports: list, max_epochs: int, seconds: float) -> dict:
    best_of = {}  # trial -> (best objective over its reports, epochs it ran)
    for trial, epoch, value in reports:
        b, _ = best_of.get(trial, (float("-inf"), 0))
        best_of[trial] = (max(b, value), epoch)
    full = [b for b, e in best_of.values() if e >= max_epochs]
    top = max(best_of, key=lambda t: best_of[t][0])
    configs = {r.metrics.get("trial_id"): r.config for r in grid}
    curve, best = [], float("-inf")
    for _, _, value in reports:
        best = max(best, value)
        curve.append(best)
    return {
        "kind": kind,
        "best": curve[-1],
        "best_full": max(full, default=float("nan")),
        "trials": len(best_of),
        "full": len(full),
        "epochs": len(reports),
        "curve": curve,
        "minutes": seconds / 60,
        "config": configs.get(top),
    }


def plot(rows: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in rows:
        ax.step(
            range(1, len(r["curve"]) + 1),
            r["curve"],
            where="post",
            label=f"{r['kind']}: {r['trials']} trials, best {r['best']:.3f}",
        )
    ax.set_xlabel("trial-epochs spent")
    ax.set_ylabel(f"best valid {OBJECTIVE} so far")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


@click.command()
@click.option("--space", default="cnn1d", help="A single-architecture space.")
@click.option("--scheme", default=None, help="Built scheme to search on (default: the setting).")
@click.option("--budget", default=32, help="Trial-epochs each search may spend.")
@click.option("--max-epochs", default=4, help="Epochs a trial may run (ASHA max_t).")
@click.option("--seed", default=0, help="Searcher and training seed (one for both searches).")
@click.option("--plot", "plot_path", default=None, help="Write the best-so-far curves here.")
def main(space, scheme, budget, max_epochs, seed, plot_path):
    import ray  # after raytasks, which sets Ray's auth/usage environment

    from raytasks.training.train import open_datasets

    data = config.scheme_dir(config.load(), scheme)
    sp = load_space(space)
    base = {
        "data": str(data),
        "epochs": max_epochs,
        "seed": seed,
        "workers": 1,
        "cpus_per_worker": 0.5,
        "metric": OBJECTIVE,
        "max_failures": 0,
        "_storage": "",
    }
    ray.init(num_cpus=os.cpu_count(), log_to_driver=False)
    datasets = open_datasets(base["data"], seed=seed)  # once, shared by the trials, as tune's
    with tempfile.TemporaryDirectory() as storage:
        rows = [search(k, sp, base, budget, max_epochs, datasets, storage) for k in KINDS]
    ray.shutdown()
    print(
        f"space {space}, budget {budget} trial-epochs, up to {max_epochs} epochs, "
        f"seed {seed}, data {data}"
    )
    report(rows)
    if plot_path:
        title = f"{space} on {Path(data).name}, {budget} trial-epochs each, "
        plot(rows, plot_path, title + f"≤ {max_epochs} epochs per trial")
        print(f"  curves: {plot_path}")


def report(rows: list[dict]) -> None:
    """The two searches side by side, the difference, and each one's best configuration."""
    print(
        f"  {'search':<22}{'best ' + OBJECTIVE:>20}{'best full':>11}{'trials':>8}"
        f"{'full':>6}{'trial-epochs':>14}{'minutes':>9}"
    )
    for r in rows:
        print(
            f"  {r['kind']:<22}{r['best']:>20.4f}{r['best_full']:>11.4f}{r['trials']:>8d}"
            f"{r['full']:>6d}{r['epochs']:>14d}{r['minutes']:>9.1f}"
        )
    a, b = rows
    print(
        f"  ASHA+HyperOpt spent {a['epochs'] / b['epochs']:.2f}x random search's trial-epochs "
        f"on {a['trials'] / b['trials']:.1f}x the trials and reached {a['best'] - b['best']:+.4f} "
        f"{OBJECTIVE} ({a['best_full'] - b['best_full']:+.4f} among full trials)"
    )
    for r in rows:
        print(f"  best {r['kind']}: {json.dumps(r['config'], default=str)}")


if __name__ == "__main__":
    main()
