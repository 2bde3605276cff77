"""raytasks tune (also run alone: python -m raytasks.tune)."""

from dataclasses import fields

import click

from raytasks.cli.common import main, one_line, user_errors
from raytasks.core.metrics import METRIC_NAMES, OBJECTIVE, RECALL_NAMES
from raytasks.training.settings import TrainSettings

# ------------------------------------------------- tune (also run alone: python -m raytasks.tune)

TUNE_EXAMPLES = """
\b
Examples:
  raytasks tune --space cnn1d --samples 4 --max-epochs 3
  raytasks tune --space all --archs gru,cnn1d --samples 20 --export
  raytasks tune --space gru --resume
  raytasks tune --space adaptive --scheme inter --cv-folds 3 --grace 1 --export
  raytasks tune --space cnn1d --samples 40 --grace 1 --export --retrain-epochs 20
  raytasks submit --space gru -- --samples 20     # the same search as a cluster job
"""


@click.command(
    "tune",
    epilog=TUNE_EXAMPLES,
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
)
@click.option(
    "--space",
    required=True,
    help="searchspaces/<SPACE>.toml (gru, lstm, cnn1d, cnn2d, resnet1d, transformer, "
    "inception1d, all, all-rr, adaptive, boost) or a path to a .toml.",
)
@click.option(
    "--archs",
    default=None,
    help="Restrict a conditional space: e.g. gru,cnn1d (with --export-only: export only "
    "those architectures' best).",
)
@click.option("--samples", type=click.IntRange(1), default=8, help="Trials to run.")
@click.option(
    "--max-epochs", type=click.IntRange(1), default=8, help="Epochs of a trial ASHA lets finish."
)
@click.option(
    "--grace", type=click.IntRange(1), default=2, help="Epochs before ASHA may stop a trial."
)
@click.option(
    "--time-budget",
    type=click.FloatRange(0, min_open=True),
    default=None,
    show_default="none",
    help="Stop the search after S seconds.",
)
@click.option("--concurrency", type=click.IntRange(1), default=2, help="Trials at once.")
@click.option(
    "--cpus-per-trial",
    type=click.FloatRange(0.01),
    default=0.5,
    help="CPUs per trial (per worker with --workers > 1); leave 1 CPU of the cluster free.",
)
@click.option(
    "--gpus-per-trial",
    type=click.FloatRange(0),
    default=0.0,
    help="GPUs per trial (per worker with --workers > 1); a fraction shares a GPU, "
    "e.g. 0.25 runs 4 trials on one.",
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=1,
    help="1: train in the trial's process; >1: a TorchTrainer per trial.",
)
@click.option(
    "--placement",
    type=click.Choice(["PACK", "SPREAD"]),
    default="PACK",
    help="With --workers > 1: SPREAD puts a trial's workers on different nodes.",
)
@click.option(
    "--metric",
    type=click.Choice(METRIC_NAMES + RECALL_NAMES),
    default=OBJECTIVE,
    help="Valid metric to maximise (ranks trials, checkpoints and the export).",
)
@click.option(
    "--scheme",
    default=None,
    show_default="intra",
    help="Built data scheme under the processed dir.",
)
@click.option("--seed", type=int, default=TrainSettings.seed, help="Searcher and training seed.")
@click.option(
    "--dev", default=None, show_default="config.toml / RAYTASKS_DEV", help="Your dev tag."
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the latest interrupted search of this dev and space (or --experiment).",
)
@click.option(
    "--experiment",
    default=None,
    show_default="the latest",
    help="Experiment name to resume or export from.",
)
@click.option(
    "--export",
    is_flag=True,
    help="Export the best trial to <storage>/<dev>/models/<dev>-<space>/ (and "
    "models/, outside a job) and, for a space of several architectures, each "
    "one's best to ...-<arch>/.",
)
@click.option(
    "--export-only",
    is_flag=True,
    help="Search nothing: export from a finished search (--experiment, default the "
    "latest of this dev and space).",
)
@click.option(
    "--wandb/--no-wandb",
    default=True,
    help="Log each trial to Weights & Biases (offline unless WANDB_API_KEY).",
)
@click.option(
    "--storage",
    default=None,
    show_default="config.toml / RAYTASKS_STORAGE",
    help="Team storage: a folder or a pyarrow.fs URI.",
)
@click.option(
    "--cv-folds",
    type=click.IntRange(0),
    default=0,
    show_default="0: rank by the valid split",
    help="Rank trials by leave-records-out CV over the scheme's train + valid records (DS1 "
    "for inter), K folds, each trained --max-epochs epochs; ASHA steps per fold; --export "
    "then retrains the best settings on the train split.",
)
@click.option(
    "--retrain-epochs",
    type=click.IntRange(0),
    default=0,
    show_default="0: export the trial's own checkpoint",
    help="With --export/--export-only: train each exported best's settings for N epochs on "
    "the train split (the valid split picks the epoch): short search trials to convergence.",
)
@click.option(
    "--threads",
    type=click.IntRange(0),
    default=0,
    show_default="0: the trial's CPUs, rounded, at least 1",
    help="Torch threads per trial and per retraining; e.g. --concurrency 1 --threads 2 "
    "retrains on both cores of a 2-core machine.",
)
def tune_cmd(**flags):
    """Search a space with HyperOpt + ASHA on Ray Tune; leaderboard, plots, optional export."""
    # imported here: the search pulls in torch (~1.3 s), which every other command can skip
    from raytasks.tune.search import SearchRequest, run

    flags["archs"] = flags["archs"].split(",") if flags["archs"] else None
    req = SearchRequest(**{f.name: flags[f.name] for f in fields(SearchRequest)})
    try:  # also run alone, as `python -m raytasks.tune`: no Group around it then
        run(req)
    except user_errors() as e:
        raise click.ClickException(one_line(e)) from None


main.add_command(tune_cmd, "tune")
