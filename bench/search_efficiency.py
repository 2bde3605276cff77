"""ASHA + HyperOpt vs random search without early stopping, same slice, budget and seeds.

Prints, side by side, the best objective each reached and the trial-epochs it consumed.
Run inside `unshare -n`; it uses the built shards of RAYTASKS_PROCESSED/<scheme>.

    unshare -n sh -c 'ip link set lo up; .venv/bin/python bench/search_efficiency.py \
        --space cnn1d --samples 8 --max-epochs 4'
"""

import os
import tempfile

import click

from raytasks.core import config
from raytasks.core.metrics import OBJECTIVE
from raytasks.tune.search import MODE, conditional_hyperopt, trial_fn
from raytasks.tune.spaces import load_space, to_tune


def search(kind: str, space, base: dict, samples: int, max_epochs: int, seed: int, storage):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    from raytasks.training.train import open_datasets

    datasets = open_datasets(base["data"], seed=seed)  # once, shared by the trials, as tune's
    trainable = tune.with_resources(
        tune.with_parameters(trial_fn, space=space, base=base, datasets=datasets), {"CPU": 0.5}
    )
    if kind == "asha+hyperopt":
        search_alg = ConcurrencyLimiter(
            conditional_hyperopt(space, OBJECTIVE, samples, seed), max_concurrent=2
        )
        scheduler = ASHAScheduler(
            metric=OBJECTIVE, mode=MODE, max_t=max_epochs, grace_period=1, reduction_factor=2
        )
        param_space = {}
    else:
        search_alg = BasicVariantGenerator(random_state=seed, max_concurrent=2)
        scheduler = FIFOScheduler()
        param_space = to_tune(space)
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        run_config=tune.RunConfig(name=kind, storage_path=storage, verbose=0),
        tune_config=tune.TuneConfig(
            search_alg=search_alg, scheduler=scheduler, num_samples=samples
        ),
    )
    grid = tuner.fit()
    best = max(
        r.metrics_dataframe[OBJECTIVE].max() for r in grid if r.metrics_dataframe is not None
    )
    epochs = sum(int(r.metrics["training_iteration"]) for r in grid)
    return best, epochs


@click.command()
@click.option("--space", default="cnn1d", help="A single-architecture space.")
@click.option("--samples", default=8)
@click.option("--max-epochs", default=4)
@click.option("--seed", default=0)
def main(space, samples, max_epochs, seed):
    import ray  # after raytasks, which sets Ray's auth/usage environment

    cfg = config.load()
    data = config.scheme_dir(cfg)
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
    with tempfile.TemporaryDirectory() as storage:
        rows = [
            (k, *search(k, sp, base, samples, max_epochs, seed, storage))
            for k in ("asha+hyperopt", "random (no stopping)")
        ]
    print(f"space {space}, {samples} trials, up to {max_epochs} epochs, data {data}")
    print(f"  {'search':<22}{'best ' + OBJECTIVE:>20}{'trial-epochs':>14}{'best per 10 ep':>16}")
    for kind, best, epochs in rows:
        print(f"  {kind:<22}{best:>20.4f}{epochs:>14d}{10 * best / epochs:>16.4f}")
    (_, b1, e1), (_, b2, e2) = rows
    print(
        f"  ASHA+HyperOpt used {e1 / e2:.2f}x the trial-epochs of random search and reached "
        f"{b1 - b2:+.4f} {OBJECTIVE}"
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
