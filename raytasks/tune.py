"""Hyper-parameter search: Ray Tune with HyperOpt + ASHA over searchspaces/<space>.toml.

    python -m raytasks.tune --space gru                 # (also: raytasks tune)
    ray job submit --working-dir . -- python -m raytasks.tune --space all --samples 30

Each trial trains with the same loop as `raytasks train`: a TorchTrainer per trial reporting
through TuneReportCallback (--workers > 1), or the loop in the trial's own process
(--workers 1, the default: cheapest on a laptop). HyperOpt proposes configs (the space's
points_to_evaluate first); ASHA stops weak trials early, one epoch = one Tune iteration.

Sizing: trials x workers x cpus-per-trial must leave 1 CPU of the cluster free, a margin for
the tasks and actors Tune and Ray Train start besides the trials (the training stream no
longer needs one: it reads a split once into the object store, see data/stream.py). On 2
cores: 2 trials x 0.5 CPU (the CPU count is Ray's bookkeeping: each trial still trains on a
whole core).

Everything is tagged with the dev tag: experiment <dev>-<space>-<utc>, W&B group <dev> with
tags [space, arch]; runs, exported models and leaderboard rows go to <storage>/<dev>/ (see
raytasks/storage.py), and outside a job the team leaderboard in results/ is refreshed.
"""

import fcntl
import json
import os
import tempfile
from pathlib import Path

import click
import numpy as np
import pandas as pd

from raytasks import config
from raytasks.constants import utc_iso, utc_stamp
from raytasks.data import CLASS_SHORT, NUM_CLASSES, DataError
from raytasks.metrics import METRIC_NAMES, OBJECTIVE, RECALL_NAMES
from raytasks.paths import PathError, check_name
from raytasks.settings import TrainConfigError, TrainSettings
from raytasks.spaces import SpaceError, hyperopt_points, load_space, to_hyperopt, trial_settings
from raytasks.storage import Storage, for_job, in_job, merge_rows, team_rows, write_results

MODE = "max"  # every metric in raytasks.metrics is better when larger
LEADERBOARD_COLUMNS = (["dev", "experiment", "trial_id", "arch", "epochs", "best_epoch"]
                       + METRIC_NAMES + RECALL_NAMES + ["config", "finished"])


def conditional_hyperopt(space, metric: str, samples: int, seed: int):
    """HyperOptSearch over the native conditional space, points_to_evaluate first.

    HyperOpt records a point only under the labels it sets (its architecture's); TPE then
    fails looking up the other architectures' labels. Those are filled with empty entries,
    which is what HyperOpt itself writes for a parameter that was not active in a trial.
    """
    from ray.tune.search.hyperopt import HyperOptSearch

    class ConditionalHyperOptSearch(HyperOptSearch):
        def _setup_hyperopt(self):
            super()._setup_hyperopt()
            labels = list(self.domain.params)
            for trial in self._hpopt_trials._dynamic_trials:
                for key in ("idxs", "vals"):
                    for label in labels:
                        trial["misc"][key].setdefault(label, [])
            self._hpopt_trials.refresh()

    return ConditionalHyperOptSearch(
        to_hyperopt(space), metric=metric, mode=MODE,
        points_to_evaluate=hyperopt_points(space) or None,
        n_initial_points=max(2, samples // 4), random_state_seed=seed)


def trial_fn(sampled: dict, space, base: dict, fs=None):
    """One Tune trial: sampled config -> training settings -> train, reporting each epoch."""
    from ray import tune

    settings = run_settings(space, sampled, base)
    if base["workers"] > 1:
        from ray.tune.integration.ray_train import TuneReportCallback

        from raytasks.train import build_trainer

        ctx = tune.get_context()
        trainer = build_trainer(settings,
                                name=f"train-{ctx.get_trial_id()}",
                                storage=f"{base['_storage']}/train", filesystem=fs,
                                callbacks=[TuneReportCallback()])
        trainer.fit()
        return
    from raytasks.train import fit_local

    def report(metrics, state_dir):
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(state_dir))

    fit_local(settings, report, checkpoint=tune.get_checkpoint())


def run_settings(space, sampled: dict, base: dict) -> TrainSettings:
    """A trial's training settings: its sampled values over the search's fixed ones."""
    fixed = {k: v for k, v in base.items() if not k.startswith("_")}  # _storage: not a setting
    return TrainSettings.from_dict({**trial_settings(space, sampled), **fixed})


def wandb_callback(cfg: dict, dev: str, space_name: str, wandb_dir: Path):
    """W&B through Ray's WandbLoggerCallback: offline (wandb/ for `wandb sync`) unless
    WANDB_API_KEY is set or WANDB_MODE=online. Each run also gets its architecture tag."""
    from ray.air.integrations.wandb import WandbLoggerCallback

    online = os.environ.get("WANDB_MODE") == "online" or (
        os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE") != "offline")
    mode = "online" if online else "offline"
    os.environ["WANDB_MODE"] = mode

    class ArchTaggedWandb(WandbLoggerCallback):
        def log_trial_start(self, trial):
            arch = trial.config.get("trial", trial.config).get("arch")
            self.kwargs["tags"] = [space_name, arch]
            super().log_trial_start(trial)

    wandb_dir.mkdir(parents=True, exist_ok=True)
    return ArchTaggedWandb(project=cfg["wandb_project"], group=dev, mode=mode,
                           dir=str(wandb_dir), tags=[space_name])


def wandb_home(store: Storage, dev: str) -> Path:
    """Where offline W&B runs go: WANDB_DIR, else this checkout; in a job (whose working dir
    is deleted afterwards) <storage>/<dev>/ when the storage is a folder."""
    if os.environ.get("WANDB_DIR"):
        return Path(os.environ["WANDB_DIR"])
    if in_job() and store.local_path(dev):
        return Path(store.local_path(dev))
    return config.ROOT


def leaderboard_rows(grid, dev: str, experiment: str, space, metric: str) -> pd.DataFrame:
    """One row per trial that reported: its best epoch's metrics and its settings."""
    rows = []
    for result in grid:
        df = result.metrics_dataframe
        if df is None or df.empty or metric not in df:
            continue
        best = df.loc[df[metric].idxmax()]
        settings = trial_settings(space, result.config)
        rows.append({
            "dev": dev, "experiment": experiment, "trial_id": best.get("trial_id"),
            "arch": settings["arch"], "epochs": int(df["training_iteration"].max()),
            "best_epoch": int(best["epoch"]),
            **{m: float(best[m]) for m in METRIC_NAMES + RECALL_NAMES if m in best},
            "config": json.dumps(settings, default=list),
            "finished": utc_iso(),
        })
    return pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS)


def sync_leaderboard(rows: pd.DataFrame, results: Path) -> pd.DataFrame:
    """Merge rows into results/leaderboard.csv (one row per experiment and trial; rows
    already there stay) and redraw leaderboard.png. Under a file lock, written atomically:
    several searches on this machine may finish at once."""
    path = results / "leaderboard.csv"
    results.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = pd.read_csv(path) if path.exists() and path.stat().st_size else pd.DataFrame()
        board = merge_rows(old, rows)
        if board.empty:
            return board
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        board.to_csv(tmp, index=False)
        os.replace(tmp, path)
        plot_leaderboard(path, results / "leaderboard.png")
    return board


def plot_leaderboard(path: Path, out: Path, metric: str = "F1scoremacro") -> None:
    """Per architecture: its best trial's macro F1, and that trial's per-class recall."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    board = pd.read_csv(path)
    best = board.loc[board.groupby("arch")[metric].idxmax()].sort_values(metric, ascending=False)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4), gridspec_kw={"width_ratios": [1, 2]})
    labels = (best["arch"] + " (" + best["dev"].astype(str) + ")" if "dev" in best
              else best["arch"])
    ax1.barh(labels, best[metric], color="tab:blue")
    for y, (v, epochs) in enumerate(zip(best[metric], best["epochs"])):
        ax1.text(v, y, f" {v:.3f} ({epochs} ep)", va="center", fontsize=8)
    ax1.invert_yaxis()
    ax1.set_xlim(0, 1.1)
    ax1.set_xlabel(f"best {metric} (valid)")
    width = 0.8 / max(len(best), 1)
    for i, (_, row) in enumerate(best.iterrows()):
        ax2.bar(np.arange(NUM_CLASSES) + i * width, [row[f"TP_{c}"] for c in range(NUM_CLASSES)],
                width, label=f"{row['arch']} ({row.get('dev', '')})")
    ax2.set_xticks(np.arange(NUM_CLASSES) + 0.4 - width / 2, CLASS_SHORT)
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("recall of that trial (valid)")
    ax2.legend(fontsize=8, ncol=4, loc="lower left")
    searches, devs = board["experiment"].nunique(), board["dev"].nunique()
    fig.suptitle(f"leaderboard: {len(board)} trials, {searches} search{'es' * (searches != 1)}, "
                 f"{devs} dev{'s' * (devs != 1)}")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def best_table(rows: pd.DataFrame, metric: str) -> str:
    if rows.empty:
        return "no trial reported a result"
    best = rows.loc[rows.groupby("arch")[metric].idxmax()].sort_values(metric, ascending=False)
    cols = ["arch", "trial_id", "epochs", "F1scoremacro", "Recallmacro", OBJECTIVE, "TP_1",
            "TP_3"]
    return best[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}")


def board_table(board: pd.DataFrame, top: int, metric: str = OBJECTIVE) -> str:
    if board.empty:
        return "no leaderboard rows yet"
    cols = ["dev", "experiment", "arch", "epochs", "F1scoremacro", "Recallmacro", OBJECTIVE,
            "TP_1", "TP_3"]
    best = board.sort_values(metric, ascending=False).head(top)
    return best[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}")


def latest_experiment(store: Storage, dev: str, space_name: str) -> str:
    prefix = f"{dev}-{space_name}-"
    names = [n for n in store.listdir(dev, "runs") if n.startswith(prefix)]
    if not names:
        raise click.ClickException(f"nothing to resume: no {prefix}* experiment in "
                                   f"{store.path(dev, 'runs')}")
    return names[-1]


@click.command("tune", context_settings={"help_option_names": ["-h", "--help"],
                                         "show_default": True})
@click.option("--space", "space_name", required=True,
              help="searchspaces/<SPACE>.toml (gru, lstm, cnn1d, cnn2d, resnet1d, transformer, "
                   "inception1d, all) or a path to a .toml.")
@click.option("--archs", default=None, help="Restrict a conditional space: e.g. gru,cnn1d.")
@click.option("--samples", type=int, default=8, help="Trials to run.")
@click.option("--max-epochs", type=int, default=8, help="Epochs of a trial ASHA lets finish.")
@click.option("--grace", type=int, default=2, help="Epochs before ASHA may stop a trial.")
@click.option("--time-budget", type=float, default=None, help="Stop the search after S seconds.")
@click.option("--concurrency", type=int, default=2, help="Trials at once.")
@click.option("--cpus-per-trial", type=float, default=0.5,
              help="CPUs per trial (per worker with --workers > 1); leave 1 CPU of the "
                   "cluster free.")
@click.option("--gpus-per-trial", type=click.FloatRange(0), default=0.0, show_default=True,
              help="GPUs per trial (per worker with --workers > 1); a fraction shares a GPU, "
                   "e.g. 0.25 runs 4 trials on one.")
@click.option("--workers", type=int, default=1,
              help="1: train in the trial's process; >1: a TorchTrainer per trial.")
@click.option("--placement", type=click.Choice(["PACK", "SPREAD"]), default="PACK",
              help="With --workers > 1: SPREAD puts a trial's workers on different nodes.")
@click.option("--metric", default=OBJECTIVE, help="Valid metric to maximise.")
@click.option("--scheme", default=None, help="Data scheme (default intra).")
@click.option("--seed", type=int, default=TrainSettings.seed, help="Searcher and training seed.")
@click.option("--dev", default=None, help="Your dev tag (default: config.toml / RAYTASKS_DEV).")
@click.option("--resume", is_flag=True, help="Continue the latest interrupted search of this "
                                             "dev and space (or --experiment).")
@click.option("--experiment", default=None, help="Experiment name to resume.")
@click.option("--export", is_flag=True,
              help="Export the best trial to <storage>/<dev>/models/<dev>-<space>/ (and "
                   "models/, outside a job) and, for a space of several architectures, each "
                   "one's best to ...-<arch>/.")
@click.option("--export-only", is_flag=True,
              help="Search nothing: export from a finished search (--experiment, default the "
                   "latest of this dev and space).")
@click.option("--no-wandb", is_flag=True, help="Do not log to Weights & Biases.")
@click.option("--storage", default=None,
              help="Team storage: a folder or a pyarrow.fs URI (default: config.toml "
                   "'storage' / RAYTASKS_STORAGE).")
def tune_cmd(space_name, archs, samples, max_epochs, grace, time_budget, concurrency,
             cpus_per_trial, gpus_per_trial, workers, placement, metric, scheme, seed, dev,
             resume, experiment, export, export_only, no_wandb, storage):
    """Search a space with HyperOpt + ASHA on Ray Tune; leaderboard, plots, optional export."""
    try:
        run(space_name, archs, samples, max_epochs, grace, time_budget, concurrency,
            cpus_per_trial, workers, metric, scheme, seed, dev, resume, experiment, export,
            no_wandb, placement, export_only, gpus_per_trial, storage)
    except (SpaceError, DataError, config.ConfigError, PathError, TrainConfigError) as e:
        raise click.ClickException(" ".join(str(e).split())) from None


def run(space_name, archs, samples, max_epochs, grace, time_budget, concurrency,
        cpus_per_trial, workers, metric, scheme, seed, dev, resume, experiment, export,
        no_wandb, placement="PACK", export_only=False, gpus_per_trial=0.0, storage=None,
        store=None):
    # everything that can be wrong with the request is checked before Ray starts
    space = load_space(space_name, archs.split(",") if archs else None)
    cfg = for_job(config.load(dev=dev, scheme=scheme, storage=storage))
    dev = require_dev(cfg)
    if metric not in METRIC_NAMES + RECALL_NAMES:
        raise click.BadParameter(f"unknown metric {metric!r}; one of "
                                 f"{METRIC_NAMES + RECALL_NAMES}", param_hint="--metric")
    if grace > max_epochs:
        raise click.BadParameter("--grace must not exceed --max-epochs", param_hint="--grace")
    data_dir = config.scheme_dir(cfg)
    from raytasks.data.stream import split_files

    split_files(data_dir, "train")
    store = store or Storage.from_setting(cfg["storage"])
    name = experiment_name(store, dev, space.name, experiment, resume or export_only)
    # `raytasks jobs` finds a raw `ray job submit` by this line (the tag the job ran under)
    click.echo(f"raytasks: dev {dev}, experiment {name}, storage {store.uri}")

    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    from raytasks.ray_connect import init_ray

    init_ray()
    total = ray.cluster_resources().get("CPU", 0)
    if concurrency * cpus_per_trial * workers > total - 1:
        raise click.BadParameter(
            f"{concurrency} trials x {workers} worker(s) x {cpus_per_trial} CPU leaves less "
            f"than 1 of the cluster's {total:g} CPUs free; lower --concurrency or "
            f"--cpus-per-trial", param_hint="--cpus-per-trial")
    gpus = ray.cluster_resources().get("GPU", 0)
    if gpus_per_trial and gpus_per_trial * workers > gpus:
        raise click.BadParameter(f"a trial asks for {gpus_per_trial * workers:g} GPU(s), the "
                                 f"cluster has {gpus:g}", param_hint="--gpus-per-trial")
    base = search_settings(store, dev, name, resume or export_only, {
        "data": str(data_dir), "epochs": max_epochs, "seed": seed, "workers": workers,
        "cpus_per_worker": cpus_per_trial, "metric": metric, "max_failures": 0,
        "placement": placement, "gpu": gpus_per_trial > 0,
        "gpus_per_worker": gpus_per_trial or 1.0})
    # with --workers > 1 the trial process only drives its TorchTrainer (Tune refuses 0 CPU)
    resources = {"CPU": 0.05} if workers > 1 else {"CPU": cpus_per_trial} | (
        {"GPU": gpus_per_trial} if gpus_per_trial else {})
    trainable = tune.with_resources(
        tune.with_parameters(trial_fn, space=space, base=base, fs=store.fs), resources)
    local_models = None if in_job() else config.where(cfg, "models")
    tag = f"{dev}-{space.name}"
    if export_only:
        grid = tune.Tuner.restore(store.path(dev, "runs", name), trainable,
                                  storage_filesystem=store.fs).get_results()
        return grid, export_models(grid, space, base, metric, store, dev, tag, local_models)
    callbacks = [] if no_wandb else [wandb_callback(cfg, dev, space.name,
                                                    wandb_home(store, dev))]
    run_config = tune.RunConfig(
        name=name, storage_path=store.path(dev, "runs"), storage_filesystem=store.fs,
        callbacks=callbacks,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=metric,
                                                checkpoint_score_order=MODE))
    if resume:
        click.echo(f"resuming {store.path(dev, 'runs', name)}")
        tuner = tune.Tuner.restore(store.path(dev, "runs", name), trainable,
                                   resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=store.fs)
    else:
        # metric/mode live in the searcher and the scheduler, not in TuneConfig: HyperOpt
        # gets a native (conditional) space, so it never reads them from TuneConfig
        searcher = conditional_hyperopt(space, metric, samples, seed)
        scheduler = ASHAScheduler(metric=metric, mode=MODE, time_attr="training_iteration",
                                  max_t=max_epochs, grace_period=grace, reduction_factor=2)
        tuner = tune.Tuner(trainable, run_config=run_config, tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrency),
            scheduler=scheduler, num_samples=samples, time_budget_s=time_budget))
    grid = tuner.fit()

    rows = leaderboard_rows(grid, dev, name, space, metric)
    click.echo(f"\nexperiment {name}: {len(rows)} trial(s) reported; best per architecture:")
    click.echo(best_table(rows, metric))
    exported = (export_models(grid, space, base, metric, store, dev, tag, local_models)
                if export else [])
    publish(rows, store, dev, name, space.name, [p.name for p in exported], cfg)
    return grid, rows


def require_dev(cfg: dict) -> str:
    try:
        return config.require_dev(cfg)
    except config.ConfigError as e:
        if in_job():  # say where the job's settings come from
            raise config.ConfigError(f"{e} in the config.toml of the checkout you submit from "
                                     f"(ray job submit --working-dir . -- ...)") from None
        raise


def experiment_name(store: Storage, dev: str, space_name: str, experiment, existing: bool):
    """A new <dev>-<space>-<utc> (or the submission id `raytasks submit` chose), or for
    --resume / --export-only the given or latest experiment of this dev and space."""
    if experiment is not None:  # an experiment of this dev: <storage>/<dev>/runs/<name>
        check_name(experiment, "--experiment")
    if not existing:
        return check_name(os.environ.get("RAYTASKS_EXPERIMENT") or (
            f"{dev}-{space_name}-{utc_stamp()}"),
            "experiment (from the space's file name)")
    name = check_name(experiment or latest_experiment(store, dev, space_name), "--experiment")
    if not store.exists(dev, "runs", name):
        raise click.BadParameter(f"no experiment {name!r} in {store.path(dev, 'runs')}",
                                 param_hint="--experiment")
    return name


def search_settings(store: Storage, dev: str, name: str, existing: bool, base: dict) -> dict:
    """The trials' fixed settings are saved with the search, so that --resume and
    --export-only use (and record in model.json) what the trials ran with, not new flags."""
    where = store.path(dev, "runs", name)
    if existing and store.exists(dev, "runs", name, "search.json"):
        base = json.loads(store.read_bytes(dev, "runs", name, "search.json"))
    elif not existing:
        store.write_bytes(json.dumps(base, indent=2).encode(), dev, "runs", name, "search.json")
    return {**base, "_storage": where}


def export_models(grid, space, base: dict, metric: str, store: Storage, dev: str, tag: str,
                  local_models: Path | None) -> list[Path]:
    """Export into <storage>/<dev>/models/ (and, outside a job, into the local models/ too,
    where `make run` and `raytasks evaluate` find them)."""
    with tempfile.TemporaryDirectory() as tmp:
        written = export_best(grid, space, base, metric, Path(tmp) / tag)
        for path in written:
            store.put_dir(path, dev, "models", path.name)
        if local_models is None:
            return [Path(store.path(dev, "models", p.name)) for p in written]
        return [store.get_dir(local_models / p.name, dev, "models", p.name) for p in written]


def publish(rows: pd.DataFrame, store: Storage, dev: str, name: str, space_name: str,
            models: list[str], cfg: dict) -> None:
    """This search's rows, plot and summary into <storage>/<dev>/results/<name>/; outside a
    job, the team leaderboard (every dev's rows) is also refreshed in the local results/."""
    info = {"dev": dev, "experiment": name, "space": space_name, "models": models,
            "trials": len(rows), "storage": store.uri,
            "finished": utc_iso()}
    with tempfile.TemporaryDirectory() as tmp:
        plot = Path(tmp) / "leaderboard.png"
        if not rows.empty:
            rows.to_csv(Path(tmp) / "rows.csv", index=False)
            plot_leaderboard(Path(tmp) / "rows.csv", plot)
        write_results(store, dev, name, rows, plot, info)
    click.echo(f"results: {store.path(dev, 'results', name)}")
    if not in_job():
        results = config.where(cfg, "results")
        sync_leaderboard(team_rows(store), results)
        click.echo(f"team leaderboard: {results / 'leaderboard.csv'} (+ leaderboard.png)")


def export_best(grid, space, base: dict, metric: str, out: Path) -> list[Path]:
    """The best checkpoint overall -> out; with several architectures in the space, also
    each architecture's best -> out-<arch> (the per-family comparison ships with it)."""
    from raytasks.saved import export_checkpoint
    from raytasks.settings import derive

    best: dict[str, tuple] = {}  # arch -> (metric value, checkpoint, metrics, result)
    for result in grid:
        if result.error or not result.best_checkpoints:
            continue
        ckpt, metrics = max(result.best_checkpoints, key=lambda cm: cm[1].get(metric, -1))
        arch = trial_settings(space, result.config)["arch"]
        if metric in metrics and (arch not in best or metrics[metric] > best[arch][0]):
            best[arch] = (metrics[metric], ckpt, metrics, result)
    if not best:
        raise click.ClickException("no trial left a checkpoint to export")
    targets = [(out, max(best.values(), key=lambda b: b[0]))]
    if len(space.archs) > 1:
        targets += [(out.with_name(f"{out.name}-{arch}"), b) for arch, b in sorted(best.items())]
    written = []
    for path, (value, ckpt, metrics, result) in targets:
        settings = run_settings(space, result.config, base)
        export_checkpoint(ckpt, metrics, settings, derive(settings), path,
                          source=str(result.path))
        click.echo(f"exported {settings.arch} trial {metrics.get('trial_id', '')} "
                   f"({metric} {value:.4f}) to {path}")
        written.append(path)
    return written


if __name__ == "__main__":
    tune_cmd()
