"""Hyper-parameter search: Ray Tune with HyperOpt + ASHA over searchspaces/<space>.toml.

    python -m raytasks.tune --space gru                 # (also: raytasks tune)
    ray job submit --working-dir . -- python -m raytasks.tune --space all --samples 30

A search is a `SearchRequest` (one field per flag of `raytasks tune`) run in steps:
`plan` (everything checkable before Ray starts), `search` (Tune's fit, or a resume),
`record` (leaderboard rows), `export` (the best checkpoints, optional) and `publish` (rows,
plot and summary into storage). Errors are `SearchError`s (or the data/space/config errors
of the modules below); only the command (raytasks.cli.tune_cmd) turns them into one line.

Each trial trains with the same loop as `raytasks train`: a TorchTrainer per trial reporting
through TuneReportCallback (--workers > 1), or the loop in the trial's own process
(--workers 1, the default: cheapest on a laptop). HyperOpt proposes configs (the space's
points_to_evaluate first); ASHA stops weak trials early, one epoch = one Tune iteration.

What a person reads: Tune's live table (legacy CLIReporter: Ray 2.60's default output
cannot choose its columns) shows each trial's architecture and searched settings, the
search's metric, the validation loss and per-class recall, every 30 s in a job log (10 s at
a terminal); trial processes print an epoch's progress every 25% when it runs long.

Sizing: trials x workers x cpus-per-trial must leave 1 CPU of the cluster free, a margin for
the tasks and actors Tune, Ray Train and Ray Data start besides the trials (a split that
fits is read once into the object store and needs no task after; a streamed one reads its
shards with tasks of STREAM_TASK_CPUS, see data/stream.py). On 2
cores: 2 trials x 0.5 CPU (the CPU count is Ray's bookkeeping: each trial still trains on a
whole core).

Everything is tagged with the dev tag: experiment <dev>-<space>-<utc> (the submission id of
`raytasks submit`), W&B group = experiment (raytasks/tune/tracking.py); runs, exported models and
leaderboard rows go to <storage>/<dev>/ (see raytasks/core/storage.py), and outside a job the team
leaderboard in results/ is refreshed.
"""

import json
import logging
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from raytasks.core import config
from raytasks.core.constants import utc_iso, utc_stamp
from raytasks.core.errors import RaytasksError
from raytasks.core.metrics import METRIC_NAMES, OBJECTIVE, RECALL_NAMES
from raytasks.core.paths import check_name
from raytasks.core.ray_connect import quiet_sigterm_exit
from raytasks.core.storage import (
    DevArea,
    Storage,
    for_job,
    in_job,
    run_dev,
    team_rows,
    write_results,
)
from raytasks.data import CLASS_SHORT
from raytasks.training.settings import TrainSettings
from raytasks.tune import leaderboard, tracking
from raytasks.tune.spaces import (
    Space,
    hyperopt_points,
    load_space,
    to_hyperopt,
    trial_settings,
)

MODE = "max"  # every metric in raytasks.core.metrics is better when larger


class SearchError(RaytasksError):
    """A search request that cannot run; the message names the flag to change."""


@dataclass
class SearchRequest:
    """What `raytasks tune` is asked to do: one field per flag (defaults = the flags')."""

    space: str
    archs: list[str] | None = None  # restrict a conditional space
    samples: int = 8
    max_epochs: int = 8
    grace: int = 2
    time_budget: float | None = None
    concurrency: int = 2
    cpus_per_trial: float = 0.5
    gpus_per_trial: float = 0.0
    workers: int = 1
    placement: str = "PACK"
    metric: str = OBJECTIVE
    scheme: str | None = None
    seed: int = TrainSettings.seed
    dev: str | None = None
    resume: bool = False
    experiment: str | None = None  # the one to resume / export from
    export: bool = False
    export_only: bool = False
    wandb: bool = True
    storage: str | None = None
    cv_folds: int = 0  # networks: score trials by leave-records-out CV (0: the valid split)
    retrain_epochs: int = 0  # export: train each best's settings this long (0: its checkpoint)
    threads: int = 0  # torch threads per trial / retraining (0: its CPUs, rounded, at least 1)

    @property
    def existing(self) -> bool:
        """Continues or reads a search that exists (not a new one)."""
        return self.resume or self.export_only


@dataclass
class Plan:
    """A checked request with everything resolved before Ray starts."""

    request: SearchRequest
    space: Space
    cfg: dict
    dev: str
    store: Storage
    name: str  # the experiment: <dev>-<space>-<utc>
    data_dir: Path

    @property
    def area(self) -> DevArea:  # <storage>/<dev>/: this dev's runs, models, results
        return self.store.dev(self.dev)

    @property
    def tag(self) -> str:  # exported models: <dev>-<space>[-<arch>]
        return f"{self.dev}-{self.space.name}"

    @property
    def local_models(self) -> Path | None:  # a job's working dir is deleted afterwards
        return None if in_job() else config.where(self.cfg, "models")


@dataclass
class SearchOutcome:
    grid: object  # ray.tune.ResultGrid
    rows: object  # pandas.DataFrame of leaderboard rows (None for --export-only)
    exported: list[Path]


def conditional_hyperopt(space, metric: str, samples: int, seed: int, random_start=None):
    """HyperOptSearch over the native conditional space, points_to_evaluate first; TPE
    after `random_start` random draws (default a quarter of the samples; `samples`: random
    search over the same space, as bench/search_efficiency.py compares).

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
        to_hyperopt(space),
        metric=metric,
        mode=MODE,
        points_to_evaluate=hyperopt_points(space) or None,
        n_initial_points=random_start or max(2, samples // 4),
        random_state_seed=seed,
    )


def trial_fn(sampled: dict, space, base: dict, fs=None, datasets=None):
    """One Tune trial: sampled config -> training settings -> train, reporting each epoch.
    `datasets`: the search's Ray Data splits, opened once on the driver (see `trainable`)."""
    from ray import tune

    quiet_sigterm_exit()
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # a line per checkpoint saved
    settings = run_settings(space, sampled, base)
    if space.boost:  # one CV fold per report (raytasks.training.boost)
        from raytasks.training.boost import search_trial

        def report_fold(metrics, oof_dir):
            ckpt = oof_dir and tune.Checkpoint.from_directory(oof_dir)
            tune.report(metrics, checkpoint=ckpt or None)

        search_trial(settings, report_fold)
        return
    if base.get("_cv_folds"):  # one CV fold per report (raytasks.training.cv)
        cv_trial(settings, base["_cv_folds"], datasets["cv"])
        return
    if base["workers"] > 1:
        from ray.tune.integration.ray_train import TuneReportCallback

        from raytasks.training.train import build_trainer

        ctx = tune.get_context()
        trainer = build_trainer(
            settings,
            name=f"train-{ctx.get_trial_id()}",
            storage=f"{base['_storage']}/train",
            filesystem=fs,
            callbacks=[TuneReportCallback()],
            datasets=datasets,
        )
        trainer.fit()
        return
    from raytasks.training.train import fit_local

    def report(metrics, state_dir):
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(state_dir))

    label = tracking.run_name(settings.arch, tune.get_context().get_trial_id())
    fit_local(settings, report, checkpoint=tune.get_checkpoint(), label=label, datasets=datasets)


def cv_trial(settings, folds: int, dataset) -> None:
    """A CV trial: a report per fold, the last with a checkpoint holding its CV metrics and
    out-of-fold logits (the export retrains its settings on the train split: `export_best`)."""
    from ray import tune

    from raytasks.training.cv import cross_validate

    def report(metrics, oof):
        if oof is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:  # what a blend with the trees would read
            np.save(Path(d) / "oof.npy", oof)
            (Path(d) / "cv.json").write_text(json.dumps(metrics, default=float))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    label = tracking.run_name(settings.arch, tune.get_context().get_trial_id())
    cross_validate(settings, folds, dataset, report, label)


def run_settings(space, sampled: dict, base: dict):
    """A trial's settings: its sampled values over the search's fixed ones (TrainSettings;
    BoostSettings for the trees, which take the data, seed and metric)."""
    fixed = {k: v for k, v in base.items() if not k.startswith("_")}  # _storage: not a setting
    if space.boost:
        from raytasks.training.boost import BoostSettings

        shared = {k: fixed[k] for k in ("data", "seed", "metric") if k in fixed}
        return BoostSettings.from_dict({**trial_settings(space, sampled), **shared})
    return TrainSettings.from_dict({**trial_settings(space, sampled), **fixed})


# ---------------------------------------------------------------- plan: no Ray yet


def plan(req: SearchRequest, store: Storage | None = None) -> Plan:
    """Check everything about the request that can be checked before Ray starts."""
    space = load_space(req.space, req.archs)
    cfg = for_job(config.load(dev=req.dev, scheme=req.scheme, storage=req.storage))
    dev = run_dev(cfg)  # a job's message says where its settings come from
    if req.metric not in METRIC_NAMES + RECALL_NAMES:
        raise SearchError(
            f"--metric: unknown metric {req.metric!r}; one of "
            f"{', '.join(METRIC_NAMES + RECALL_NAMES)}"
        )
    if req.grace > req.max_epochs and not req.cv_folds:  # a CV trial's steps: its folds
        raise SearchError("--grace must not exceed --max-epochs")
    check_boost(req, space)
    check_cv(req, space)
    check_retrain(req, space)
    data_dir = config.scheme_dir(cfg)
    from raytasks.data.stream import split_files

    split_files(data_dir, "train")
    if req.cv_folds:
        check_cv_records(data_dir, req.cv_folds)
    store = store or Storage.from_setting(cfg["storage"])
    name = experiment_name(store.dev(dev), space.name, req.experiment, req.existing)
    return Plan(req, space, cfg, dev, store, name, data_dir)


def check_boost(req: SearchRequest, space: Space) -> None:
    """A boost trial reports a CV fold per iteration and is exported after its last one."""
    if not space.boost:
        return
    folds = space.archs["boost"].fixed.get("folds", 5)
    if folds < 2:
        raise SearchError(f"{space.name}: a boost search scores trials by CV: folds >= 2")
    if req.max_epochs < folds:
        raise SearchError(
            f"--max-epochs: a boost trial reports one of its {folds} CV folds per "
            f"iteration; --max-epochs {req.max_epochs} would stop every trial before its "
            f"last fold (set it to {folds})"
        )
    if req.workers > 1:
        raise SearchError("--workers: boosted trees fit in one process; use --workers 1")


def check_cv(req: SearchRequest, space: Space) -> None:
    """--cv-folds: networks trained in the trial's process, at least 2 folds, and ASHA's
    grace within the folds (a CV trial's iterations are its folds)."""
    if not req.cv_folds:
        return
    if space.boost:
        raise SearchError("--cv-folds: a boost space sets its CV folds itself (folds = ...)")
    if req.cv_folds < 2:
        raise SearchError("--cv-folds: leave-records-out CV needs at least 2 folds")
    if req.workers > 1:
        raise SearchError(
            "--cv-folds: a CV trial trains its folds in its own process; use --workers 1"
        )
    if req.grace > req.cv_folds:
        raise SearchError(
            f"--grace: a CV trial reports once per fold; at most --cv-folds ({req.cv_folds})"
        )


def check_retrain(req: SearchRequest, space: Space) -> None:
    """--retrain-epochs trains the exported networks' settings anew: it needs an export."""
    if not req.retrain_epochs:
        return
    if not (req.export or req.export_only):
        raise SearchError("--retrain-epochs: it retrains what is exported; add --export")
    if space.boost:
        raise SearchError("--retrain-epochs: boosted trees have no epochs; leave it out")
    if req.workers > 1:
        raise SearchError("--retrain-epochs: the export retrains in one process; --workers 1")


def check_cv_records(data_dir: Path, folds: int) -> None:
    """K folds of whole records need at least K records in the scheme's train + valid."""
    import pyarrow.parquet as pq

    from raytasks.training.cv import cv_files

    records = pq.ParquetDataset(cv_files(data_dir)).read(columns=["record"]).column("record")
    have = len(records.unique())
    if have < folds:
        raise SearchError(
            f"--cv-folds {folds}: {data_dir.name}'s train + valid splits hold {have} "
            f"record(s); leave-records-out CV needs at least as many records as folds"
        )


def latest_experiment(area: DevArea, space_name: str) -> str:
    prefix = f"{area.dev}-{space_name}-"
    names = [n for n in area.listdir("runs") if n.startswith(prefix)]
    if not names:
        raise SearchError(f"nothing to resume: no {prefix}* experiment in {area.runs()}")
    return names[-1]


def experiment_name(area: DevArea, space_name: str, experiment, existing: bool):
    """A new <dev>-<space>-<utc> (or the submission id `raytasks submit` chose), or for
    --resume / --export-only the given or latest experiment of this dev and space."""
    if experiment is not None:  # an experiment of this dev: <storage>/<dev>/runs/<name>
        check_name(experiment, "--experiment")
    if not existing:
        return check_name(
            os.environ.get("RAYTASKS_EXPERIMENT") or (f"{area.dev}-{space_name}-{utc_stamp()}"),
            "experiment (from the space's file name)",
        )
    name = check_name(experiment or latest_experiment(area, space_name), "--experiment")
    if not area.exists("runs", name):
        raise SearchError(f"--experiment: no experiment {name!r} in {area.runs()}")
    return name


# ---------------------------------------------------------------- search: Ray from here


def check_cluster(req: SearchRequest) -> None:
    """The cluster can hold `concurrency` trials and leave 1 CPU free; it has the GPUs."""
    import ray

    total = ray.cluster_resources().get("CPU", 0)
    if req.concurrency * req.cpus_per_trial * req.workers > total - 1:
        raise SearchError(
            f"--cpus-per-trial: {req.concurrency} trials x {req.workers} worker(s) x "
            f"{req.cpus_per_trial} CPU leaves less than 1 of the cluster's {total:g} CPUs "
            f"free; lower --concurrency or --cpus-per-trial"
        )
    gpus = ray.cluster_resources().get("GPU", 0)
    if req.gpus_per_trial and req.gpus_per_trial * req.workers > gpus:
        raise SearchError(
            f"--gpus-per-trial: a trial asks for "
            f"{req.gpus_per_trial * req.workers:g} GPU(s), the cluster has "
            f"{gpus:g}"
        )


def search_settings(p: Plan) -> dict:
    """The trials' fixed settings are saved with the search, so that --resume and
    --export-only use (and record in model.json) what the trials ran with, not new flags."""
    req, area = p.request, p.area
    base = {
        "data": str(p.data_dir),
        "epochs": req.max_epochs,
        "seed": req.seed,
        "workers": req.workers,
        "cpus_per_worker": req.cpus_per_trial,
        "metric": req.metric,
        "max_failures": 0,
        "placement": req.placement,
        "gpu": req.gpus_per_trial > 0,
        "gpus_per_worker": req.gpus_per_trial or 1.0,
        **({"_cv_folds": req.cv_folds} if req.cv_folds else {}),
    }
    if req.existing and area.exists("runs", p.name, "search.json"):
        base = json.loads(area.read_bytes("runs", p.name, "search.json"))
    elif not req.existing:
        area.write_bytes(json.dumps(base, indent=2).encode(), "runs", p.name, "search.json")
    # how long the export retrains and on how many threads are this call's choices, not the
    # search's (not saved): a retraining on a quiet machine may use every core
    return {
        **base,
        "threads": req.threads,
        "_storage": area.runs(p.name),
        "_retrain_epochs": req.retrain_epochs,
    }


def trainable(p: Plan, base: dict):
    """The trial function with its resources; the splits are opened here, once per search
    (read into the object store when they fit), and shared by every trial."""
    from ray import tune

    from raytasks.training.train import open_datasets

    req = p.request
    # the trees read their features in the trial (each trial chooses its own)
    template = p.space.may_set("template")
    if p.space.boost:
        datasets = None
    elif base.get("_cv_folds"):
        from raytasks.training.cv import open_cv_dataset

        datasets = {"cv": open_cv_dataset(base["data"], seed=base["seed"], template=template)}
    else:
        datasets = open_datasets(base["data"], seed=base["seed"], template=template)
    # with --workers > 1 the trial process only drives its TorchTrainer (Tune refuses 0 CPU)
    resources = (
        {"CPU": 0.05}
        if req.workers > 1
        else {"CPU": req.cpus_per_trial}
        | ({"GPU": req.gpus_per_trial} if req.gpus_per_trial else {})
    )
    return tune.with_resources(
        tune.with_parameters(trial_fn, space=p.space, base=base, fs=p.store.fs, datasets=datasets),
        resources,
    )


def reporter(p: Plan):
    """Tune's live table: each trial's architecture and searched settings, the search's
    metric, validation loss and per-class recall (best trials first)."""
    from ray.tune import CLIReporter

    metric = p.request.metric
    metrics = {"training_iteration": "epochs", metric: metric, "valid_loss": "valid_loss"}
    metrics |= {f"TP_{c}": f"recall_{s}" for c, s in enumerate(CLASS_SHORT) if f"TP_{c}" != metric}
    params = {"trial/arch": "arch"} | {
        f"trial/{k}": k.removeprefix("model.") for k in table_keys(p.space)
    }

    class Reporter(CLIReporter):
        """Best trials first while every finished trial has the metric: Ray's sort cannot
        compare two without it, and a --time-budget ends trials before their first report
        (the search's last table then raised TypeError and nothing was recorded)."""

        def report(self, trials, done, *sys_info):
            self._sort_by_metric = all_reported(trials, metric)
            super().report(trials, done, *sys_info)

    return Reporter(
        metric_columns=metrics,
        parameter_columns=params,
        metric=metric,
        mode=MODE,
        sort_by_metric=True,
        max_column_length=16,
        max_report_frequency=10 if sys.stdout.isatty() else 30,
    )


def all_reported(trials, metric: str) -> bool:
    """Whether every finished trial reported `metric` (Ray's table can sort them then)."""
    return all(
        (t.last_result or {}).get(metric) is not None for t in trials if t.status == "TERMINATED"
    )


def table_keys(space, width: int = 6) -> list[str]:
    """The searched settings the live table shows: those most architectures search first
    (for `all`: lr, balance, loss... before one net's fields), at most `width`."""
    searched = [
        k for a in space.archs.values() for k in [*a.space, *(f"model.{m}" for m in a.model)]
    ]
    counts = {k: searched.count(k) for k in searched}  # first-seen order breaks ties
    return sorted(counts, key=lambda k: -counts[k])[:width]


def run_config(p: Plan, base: dict):
    from ray import tune

    req = p.request
    callbacks = (
        []
        if not req.wandb
        else [
            tracking.callback(
                p.cfg["wandb_project"],
                wandb_settings(p, base),
                lambda c: asdict(run_settings(p.space, c, base)),
                wandb_home(p.area),
            )
        ]
    )
    return tune.RunConfig(
        name=p.name,
        storage_path=p.area.runs(),
        storage_filesystem=p.store.fs,
        callbacks=callbacks,
        progress_reporter=reporter(p),
        verbose=1,
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=2, checkpoint_score_attribute=req.metric, checkpoint_score_order=MODE
        ),
    )


def wandb_settings(p: Plan, base: dict) -> dict:
    """What every W&B run of this search shares: the search's own fixed settings."""
    req = p.request
    fixed = {k: v for k, v in base.items() if not k.startswith("_") and k != "epochs"}
    return {
        "experiment": p.name,
        "dev": p.dev,
        "space": p.space.name,
        "scheme": p.cfg["scheme"],
        **fixed,
        "max_epochs": req.max_epochs,
        "grace": req.grace,
        "samples": req.samples,
        "concurrency": req.concurrency,
    }


def wandb_home(area: DevArea) -> Path:
    """Where offline W&B runs go: WANDB_DIR, else this checkout; in a job (whose working dir
    is deleted afterwards) <storage>/<dev>/ when the storage is a folder."""
    if os.environ.get("WANDB_DIR"):
        return Path(os.environ["WANDB_DIR"])
    if in_job() and area.local_path():
        return Path(area.local_path())
    return config.ROOT


def search(p: Plan, base: dict):
    """Tune's fit: a new search, or the rest of an interrupted one (--resume)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    req, where = p.request, p.area.runs(p.name)
    # Ray 2.60's default output cannot choose its table's columns; the legacy one can
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    # short epochs checkpoint often: Tune's 3-line advice about it is noise in a job log
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if req.resume:
        print(f"resuming {where}", flush=True)
        return tune.Tuner.restore(
            where,
            trainable(p, base),
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=p.store.fs,
        ).fit()
    # metric/mode live in the searcher and the scheduler, not in TuneConfig: HyperOpt
    # gets a native (conditional) space, so it never reads them from TuneConfig
    searcher = conditional_hyperopt(p.space, req.metric, req.samples, req.seed)
    scheduler = ASHAScheduler(
        metric=req.metric,
        mode=MODE,
        time_attr="training_iteration",
        max_t=base.get("_cv_folds") or req.max_epochs,  # a CV trial's iterations: its folds
        grace_period=req.grace,
        reduction_factor=2,
    )
    return tune.Tuner(
        trainable(p, base),
        run_config=run_config(p, base),
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=req.concurrency),
            scheduler=scheduler,
            num_samples=req.samples,
            time_budget_s=req.time_budget,
            trial_name_creator=trial_name,
        ),
    ).fit()


def trial_name(trial) -> str:
    """<arch>-<trial id>, as its W&B run is named (Tune's default: trial_fn_<id>)."""
    return tracking.run_name(trial.config.get("trial", {}).get("arch", "trial"), trial.trial_id)


def run(req: SearchRequest, store: Storage | None = None) -> SearchOutcome:
    """plan -> search -> record -> export -> publish (or, --export-only, restore -> export)."""
    p = plan(req, store)
    # `raytasks jobs` finds a raw `ray job submit` by this line (the tag the job ran under)
    print(f"raytasks: dev {p.dev}, experiment {p.name}, storage {p.store.uri}", flush=True)
    from raytasks.core.ray_connect import init_ray

    init_ray()
    check_cluster(req)
    base = search_settings(p)
    if req.export_only:
        from ray import tune

        grid = tune.Tuner.restore(
            p.area.runs(p.name), trainable(p, base), storage_filesystem=p.store.fs
        ).get_results()
        return SearchOutcome(grid, None, export(p, grid, base))
    grid = search(p, base)
    rows = record(p, grid, base)
    exported = export(p, grid, base) if req.export else []
    publish(p, base, rows, [path.name for path in exported])
    return SearchOutcome(grid, rows, exported)


# ---------------------------------------------------------------- record, export, publish


def record(p: Plan, grid, base: dict):
    """Leaderboard rows of this search, and its best trial per architecture printed.
    Scheme, metric and max epochs are the search's saved ones (search.json): a --resume
    with other flags still records what the trials ran with."""
    metric = saved_metric(p, base)
    rows = leaderboard.rows_of(
        grid,
        p.dev,
        p.name,
        p.space,
        {
            "scheme": Path(base["data"]).name,
            "metric": metric,
            "max_epochs": base.get("_cv_folds") or base["epochs"],
            "cv": {"cv_folds": base["_cv_folds"], "epochs": base["epochs"]}
            if base.get("_cv_folds")
            else None,
        },
    )
    print(
        f"\nexperiment {p.name}: {len(rows)} trial(s) reported; best per architecture "
        f"by {metric} ({'leave-records-out CV' if base.get('_cv_folds') else 'valid'}):",
        flush=True,
    )
    print(leaderboard.best_table(rows, metric), flush=True)
    return rows


def saved_metric(p: Plan, base: dict) -> str:
    """The search's own metric (search.json), the flag's for a search saved without one."""
    return base.get("metric", p.request.metric)


def export(p: Plan, grid, base: dict) -> list[Path]:
    """The best checkpoints into <storage>/<dev>/models/ (and, outside a job, into the
    local models/ too, where `make run` and `raytasks evaluate` find them); with W&B, the
    overall best as an artifact of its trial's run."""
    with tempfile.TemporaryDirectory() as tmp:
        written = export_best(
            grid, p.space, base, saved_metric(p, base), Path(tmp) / p.tag, p.store.fs
        )
        for path, _ in written:
            p.area.put_dir(path, "models", path.name)
            print(f"exported {path.name}: {p.area.models(path.name)}", flush=True)
        if p.request.wandb and not p.request.export_only:
            log_best(p, *written[0])
    if p.local_models is None:
        return [Path(p.area.models(path.name)) for path, _ in written]
    return [p.area.get_dir(p.local_models / path.name, "models", path.name) for path, _ in written]


def log_best(p: Plan, model_dir: Path, trial_id: str) -> None:
    """The exported best model and its valid confusion matrix into its trial's W&B run (the
    png beside the model, in export's temporary folder)."""
    from raytasks.evaluation.evaluate import load_eval_data, plot_confusion_png

    x, y, _, context = load_eval_data(config.where(p.cfg, "processed"), p.cfg["scheme"], "valid")
    where = f"{p.cfg['scheme']} valid"
    png = plot_confusion_png(model_dir, x, y, where, model_dir.parent, context)
    arch = json.loads((model_dir / "model.json").read_text())["arch"]
    run = {
        "project": p.cfg["wandb_project"],
        "group": p.name,
        "name": tracking.run_name(arch, trial_id),
        "tags": tracking.run_tags(p.dev, p.space.name, arch),
    }
    tracking.log_export(run, trial_id, model_dir, png, wandb_home(p.area))


def export_best(grid, space, base: dict, metric: str, out: Path, fs=None) -> list[tuple[Path, str]]:
    """The best checkpoint overall -> out; with several architectures in the space, also
    each architecture's best -> out-<arch>. [(model dir, trial id)], the overall best first."""
    from raytasks.models.saved import export_checkpoint
    from raytasks.training.settings import derive

    best = best_checkpoints(grid, space, metric)
    targets = [(out, max(best.values(), key=lambda b: b[0]))]
    if len(space.archs) > 1:
        targets += [(out.with_name(f"{out.name}-{arch}"), b) for arch, b in sorted(best.items())]
    written, retrained = [], {}
    epochs = base.get("_retrain_epochs")
    for path, (value, ckpt, metrics, result) in targets:
        settings = run_settings(space, result.config, base)
        trial_id = metrics.get("trial_id", "")
        # CV chose the settings, or a short trial's are to be trained to convergence:
        # train them on the train split, the valid split picking the epoch
        if base.get("_cv_folds") or epochs:
            settings = replace(settings, epochs=epochs) if epochs else settings
            if trial_id not in retrained:  # the overall best is also its arch's best
                retrained[trial_id] = retrain(settings, base, trial_id, fs)
            ckpt, metrics = retrained[trial_id]
            source = f"{result.path}, retrained: {ckpt.path}"
            export_checkpoint(ckpt, metrics, settings, derive(settings), path, source)
        elif space.boost:
            from raytasks.training.boost import export_trial

            with ckpt.as_directory() as oof_dir:
                export_trial(oof_dir, settings, path, source=str(result.path))
        else:
            export_checkpoint(
                ckpt, metrics, settings, derive(settings), path, source=str(result.path)
            )
        print(f"{path.name}: {settings.arch} trial {trial_id} ({metric} {value:.4f})", flush=True)
        written.append((path, trial_id))
    return written


def retrain(settings, base: dict, trial_id: str, fs=None):
    """A trial's settings trained as `raytasks train` trains them (train split, the valid
    split picking the epoch), beside the search's trials: (best checkpoint, metrics)."""
    from raytasks.training.train import build_trainer

    print(
        f"retraining trial {trial_id} ({settings.arch}) on the train split for "
        f"{settings.epochs} epochs",
        flush=True,
    )
    where = f"{base['_storage']}/train"
    # a run of its own: under a name used before, Ray Train would resume that run's
    # checkpoints (an interrupted retraining, or one of another length) instead of starting
    name = f"retrain-{trial_id}-{settings.epochs}e-{utc_stamp()}"
    result = build_trainer(settings, name, where, filesystem=fs).fit()
    if not result.best_checkpoints:
        raise SearchError(f"retraining trial {trial_id} reported no checkpoint ({result.error})")
    return max(result.best_checkpoints, key=lambda cm: cm[1][settings.metric])


def best_checkpoints(grid, space, metric: str) -> dict[str, tuple]:
    """arch -> (metric value, checkpoint, metrics, result) of its best checkpoint."""
    best: dict[str, tuple] = {}
    for result in grid:
        if result.error or not result.best_checkpoints:
            continue
        arch = result.config.get("trial", result.config).get("arch")
        if arch not in space.archs:  # --archs on an export keeps to those architectures'
            continue
        ckpt, metrics = max(result.best_checkpoints, key=lambda cm: cm[1].get(metric, -1))
        if metric in metrics and (arch not in best or metrics[metric] > best[arch][0]):
            best[arch] = (metrics[metric], ckpt, metrics, result)
    if not best:
        raise SearchError("no trial left a checkpoint to export")
    return best


def publish(p: Plan, base: dict, rows, models: list[str]) -> None:
    """This search's rows, plot and summary into <storage>/<dev>/results/<name>/; outside a
    job, the team leaderboard (every dev's rows) is also refreshed in the local results/."""
    info = {
        "dev": p.dev,
        "experiment": p.name,
        "space": p.space.name,
        "models": models,
        "trials": len(rows),
        "metric": saved_metric(p, base),
        "storage": p.store.uri,
        "finished": utc_iso(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        plot = Path(tmp) / "leaderboard.png"
        if not rows.empty:
            rows.to_csv(Path(tmp) / "rows.csv", index=False)
            leaderboard.plot(Path(tmp) / "rows.csv", plot)
        write_results(p.area, p.name, rows, plot, info)
    print(f"results: {p.area.results(p.name)}", flush=True)
    if not in_job():
        results = config.where(p.cfg, "results")
        leaderboard.sync(team_rows(p.store), results)
        print(f"team leaderboard: {results / 'leaderboard.csv'} (+ leaderboard.png)", flush=True)


if __name__ == "__main__":  # the entry point is the package: a job would do nothing here
    sys.exit("run a search as `python -m raytasks.tune` (or `raytasks tune`)")
