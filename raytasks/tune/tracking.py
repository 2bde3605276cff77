"""Weights & Biases for a search: one run per trial, comparable across a team.

    project <wandb_project> > group <experiment> > run <arch>-<trial id>

Each run's config holds every setting the trial trained with (the sampled ones and the
search's fixed ones: max epochs, seed, scheme, metric, dev, space, experiment), so a 2-epoch
trial never looks like an 8-epoch one; its tags are [dev, space, arch] without repeats. Metrics
are logged as train/* (loss, lr, beats/s) and valid/* (loss, every metric of
raytasks.core.metrics). With --export, the exported best model is logged as an artifact of its
trial's run, with its confusion matrix on the valid split.

Runs are offline (under <wandb dir>/wandb/, for `wandb sync`) unless WANDB_API_KEY is set or
WANDB_MODE=online; the logging actors are silent (no banners, no run summary in job logs)
and close their W&B service before Ray ends them (no teardown traceback).
"""

import os
import time
from pathlib import Path

from raytasks.core.metrics import METRIC_NAMES, RECALL_NAMES

# reported metric -> W&B key; every valid metric of raytasks.core.metrics goes to valid/<name>
RENAME = {
    "train_loss": "train/loss",
    "lr": "train/lr",
    "train_beats_per_s": "train/beats_per_s",
    "data_wait_s": "train/data_wait_s",
    "valid_loss": "valid/loss",
    **{m: f"valid/{m}" for m in METRIC_NAMES + RECALL_NAMES},
}
SETTLE_S = 2.0  # a finished logging actor's task events reach the GCS within this
QUIET_ENV = {"WANDB_SILENT": "true", "WANDB_CONSOLE": "off"}


def wandb_mode() -> str:
    online = os.environ.get("WANDB_MODE") == "online" or (
        os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE") != "offline"
    )
    return "online" if online else "offline"


def run_name(arch: str, trial_id: str) -> str:
    return f"{arch}-{trial_id}"


def run_tags(dev: str, space: str, arch: str) -> list[str]:
    return list(dict.fromkeys([dev, space, arch]))


def logged(result: dict) -> dict:
    """A Tune result as W&B keys: train/* and valid/* (other keys as they are)."""
    return {RENAME.get(k, k): v for k, v in result.items() if k != "config"}


def quiet_actor():
    """Ray's W&B logging actor, silent, logging train/* and valid/* keys, closing its
    W&B service itself (else Ray's kill leaves an atexit traceback in the job log)."""
    from ray.air.integrations.wandb import _WandbLoggingActor

    class QuietLoggingActor(_WandbLoggingActor):
        def __init__(self, *args, **kwargs):
            os.environ.update(QUIET_ENV)
            super().__init__(*args, **kwargs)

        def _handle_result(self, result):
            log, _ = super()._handle_result(logged(result))
            return log, {}  # the config was complete at wandb.init

        def run(self):
            super().run()
            self._wandb.teardown()

    return QuietLoggingActor


def callback(project: str, experiment: dict, settings_of, wandb_dir: Path):
    """Ray's WandbLoggerCallback with RaytasksWandb's names, config, tags and quiet actors.

    `experiment` holds the search's fixed settings (dev, space, experiment, ...);
    settings_of(trial config) gives every training setting a trial runs with.
    """
    from ray.air.integrations.wandb import WandbLoggerCallback

    mode = wandb_mode()
    os.environ["WANDB_MODE"] = mode
    wandb_dir.mkdir(parents=True, exist_ok=True)
    # made here: importing Ray's W&B integration costs every raytasks command ~1 s
    cls = type("RaytasksWandbLoggerCallback", (RaytasksWandb, WandbLoggerCallback), {})
    return cls(
        experiment,
        settings_of,
        project=project,
        group=experiment["experiment"],
        mode=mode,
        dir=str(wandb_dir),
    )


class RaytasksWandb:
    """What raytasks changes of Ray's WandbLoggerCallback (a mixin before it)."""

    def __init__(self, experiment: dict, settings_of, **kwargs):
        super().__init__(**kwargs)
        self.experiment, self.settings_of = experiment, settings_of

    def setup(self, *args, **kwargs):
        import ray
        from ray.air.util.node import _force_on_current_node

        super().setup(*args, **kwargs)
        env = {k: os.environ[k] for k in ("WANDB_API_KEY",) if k in os.environ}
        # as Ray's, on the driver's node (where the run's folder is), without
        # max_restarts: a restartable actor with its arguments in the object store
        # makes Ray's core worker print an error line into every job log
        self._remote_logger_class = ray.remote(
            num_cpus=0, **_force_on_current_node(), runtime_env={"env_vars": env}
        )(quiet_actor())

    def log_trial_end(self, trial, failed=False):
        if trial in self._trial_queues:  # a trial that never reported has no actor
            super().log_trial_end(trial, failed)

    def _cleanup_logging_actors(self, timeout: int = 0, kill_on_timeout: bool = False):
        settle(self, timeout, kill_on_timeout)

    def on_experiment_end(self, trials, **info):
        # a trial the --time-budget ends gets no log_trial_end: its logging actor would wait
        # for an end that never comes, and Ray's callback for it (upload_timeout, 30 min)
        for trial in list(self._trial_queues):
            self._signal_logging_actor_stop(trial=trial)
        super().on_experiment_end(trials, **info)

    def log_trial_start(self, trial):
        settings, exp = self.settings_of(trial.config), self.experiment
        self.kwargs.update(
            name=run_name(settings["arch"], trial.trial_id),
            reinit="finish_previous",
            tags=run_tags(exp["dev"], exp["space"], settings["arch"]),
            config={**exp, **flat(settings), "trial_id": trial.trial_id},
        )
        super().log_trial_start(trial)


def settle(cb, timeout: float, kill_on_timeout: bool) -> None:
    """WandbLoggerCallback._cleanup_logging_actors, but a logging actor (and its queue)
    goes only once its run has been done for SETTLE_S. Ray's kills them the moment the run
    returns, before the queue's last `get` has reported FINISHED (Ray sends task events
    about once a second): the dashboard then counts that `get` as a failed task."""
    import ray

    done_at = cb.__dict__.setdefault("done_at", {})  # run future -> first seen done
    futures = list(cb._trial_logging_futures.values())
    done, left = ray.wait(futures, num_returns=len(futures), timeout=timeout)
    for f in done:
        done_at.setdefault(f, time.monotonic())
    if kill_on_timeout and done_at:  # the experiment's end: let the last ones settle
        time.sleep(max(0.0, SETTLE_S - (time.monotonic() - max(done_at.values()))))
    now = time.monotonic()
    for f in [f for f, t in done_at.items() if now - t >= SETTLE_S]:
        del done_at[f]
        cb._cleanup_logging_actor(cb._logging_future_to_trial.pop(f))
    for f in left if kill_on_timeout else []:
        cb._cleanup_logging_actor(cb._logging_future_to_trial.pop(f))


def flat(settings: dict) -> dict:
    """{'model': {'kernel': 7}} -> {'model.kernel': 7}: every field its own column."""
    out = {k: v for k, v in settings.items() if k != "model"}
    out.update({f"model.{k}": v for k, v in settings.get("model", {}).items()})
    return out


def log_export(
    run: dict, trial_id: str, model_dir: Path, confusion_png: Path, wandb_dir: Path
) -> None:
    """The exported model as an artifact of its trial's run, and its valid confusion plot
    (the run is resumed by id: offline, `wandb sync` merges both parts into one run).
    `run`: the trial run's project, group, name and tags (as its first part has them)."""
    import wandb

    os.environ.update(QUIET_ENV)
    group = run["group"]
    run = wandb.init(
        **run,
        id=trial_id,
        resume="allow",
        mode=wandb_mode(),
        dir=str(wandb_dir),
        reinit="create_new",
    )
    artifact = wandb.Artifact(
        model_dir.name, type="model", metadata={"trial_id": trial_id, "experiment": group}
    )
    artifact.add_dir(str(model_dir))
    run.log_artifact(artifact)
    run.log({"valid/confusion": wandb.Image(str(confusion_png))})
    run.finish()
    wandb.teardown()
