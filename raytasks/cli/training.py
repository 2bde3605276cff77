"""raytasks train | boost | calibrate | ensemble: models into models/."""

from pathlib import Path

import click

from raytasks.cli.common import examples, main, old_spelling
from raytasks.core import config, constants, paths


def train_options(fn):
    """One flag per field of raytasks.training.settings.TrainSettings (its help, choices, default);
    booleans are --x/--no-x."""
    from raytasks.training.settings import FIELDS, choices, defaults

    default = defaults()
    for f in reversed(FIELDS):
        key, help = f.name, f.metadata["help"]
        if key in ("model", "data"):
            continue
        # the real default is shown; only flags typed on the command line override --config
        flag = f"--{key.replace('_', '-')}"
        if isinstance(default[key], bool):  # --rr/--no-rr
            fn = click.option(f"{flag}/--no-{flag[2:]}", key, default=default[key], help=help)(fn)
            continue
        # a choice list (the metric's is long: checked by the settings, not listed here)
        named = f.metadata["choices"]
        kind = type(default[key])
        if named == "arch":
            kind = RegistryChoice(key)
        elif named not in (None, "metric"):
            kind = click.Choice(choices(key))
        fn = click.option(flag, key, type=kind, default=default[key], help=help)(fn)
    return fn


class RegistryChoice(click.Choice):
    """A setting's choices read from its registry when a command first needs them: the nets
    registry imports torch, which `raytasks cluster env` and the like need not load."""

    def __init__(self, key: str):  # no super().__init__: `choices` is read, not stored
        self.key, self.case_sensitive = key, True

    @property
    def choices(self):  # type: ignore[override]
        from raytasks.training.settings import choices

        return choices(self.key)


class OldBooleans(click.Command):
    """Accepts the old `--rr true` / `--gpu false` spelling of the --x/--no-x flags."""

    def parse_args(self, ctx, args):
        out, i = [], 0
        flags = {f"--{k.replace('_', '-')}" for k in bool_settings()}
        while i < len(args):
            word = args[i]
            value = args[i + 1].lower() if i + 1 < len(args) else ""
            if word in flags and value in ("true", "false"):
                out.append(word if value == "true" else f"--no-{word[2:]}")
                i += 2
                continue
            out.append(word)
            i += 1
        return super().parse_args(ctx, out)


def bool_settings() -> list[str]:
    from raytasks.training.settings import defaults

    return [k for k, v in defaults().items() if isinstance(v, bool)]


@main.command(
    "train",
    cls=OldBooleans,
    epilog=examples(
        "raytasks train --arch cnn1d --epochs 5 --rr",
        "raytasks train --config my.toml -m channels=[32,64] --tag mine",
    ),
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, exists=True),
    help="TOML of training settings (top-level keys as the flags, [model] table "
    "for the architecture); flags override it.",
)
@old_spelling("--model", "model_opts", multiple=True)
@old_spelling("--data", "data")
@click.option(
    "-m",
    "--model-field",
    "model_opts",
    multiple=True,
    metavar="KEY=VALUE",
    help="Architecture config field, e.g. -m channels=[32,64] -m se=false.",
)
@click.option(
    "--scheme-dir",
    "data",
    default=None,
    show_default="<processed>/<scheme>",
    help="A built scheme's shard folder.",
)
@click.option(
    "--scheme",
    default=None,
    metavar="SCHEME",
    show_default="intra",
    help="Built scheme under the processed dir (intra, inter or an imported name).",
)
@click.option("--tag", default=None, show_default="<arch>-<scheme>", help="Export to models/<TAG>.")
@click.option("--export/--no-export", default=True, help="Export the best epoch to models/.")
@train_options
def train_cmd(config_file, model_opts, data, scheme, tag, export, **flags):
    """Train one architecture with Ray Train (TorchTrainer), export the best checkpoint.

    Every setting is a flag, or a key in --config FILE.toml. The best epoch by --metric
    is exported to models/<tag>/ with everything needed to evaluate it.
    """
    from raytasks.core import ray_connect
    from raytasks.core.storage import local_runs
    from raytasks.training import train
    from raytasks.training.settings import TrainConfigError, layered

    cfg = config.load(scheme=scheme)
    ctx = click.get_current_context()
    typed = {
        k: v
        for k, v in flags.items()
        if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE
    }
    settings = layered(config_file, typed, model_opts, data, str(config.scheme_dir(cfg)))
    scheme_name = Path(settings.data).name
    tag = paths.check_name(tag or f"{settings.arch}-{scheme_name}", "--tag")
    ray_connect.init_ray()
    try:
        best, metrics, result = train.fit(
            settings, f"{tag}-{constants.utc_stamp()}", local_runs(cfg) / "train"
        )
    except TrainConfigError as e:  # e.g. --gpu without a GPU
        raise click.ClickException(str(e)) from None
    click.echo(
        f"best epoch {metrics['epoch']}: "
        + "  ".join(
            f"{k} {metrics[k]:.4f}" for k in ("F1scoremacro", "Recallmacro", "F2scoremacro")
        )
    )
    click.echo(
        "per-class recall: "
        + "  ".join(f"{c}={metrics[f'TP_{c}']:.3f}" for c in range(constants.NUM_CLASSES))
    )
    click.echo(f"run: {result.path}")
    if export:
        out = train.export(
            best, metrics, settings, config.model_dir(cfg, tag), source=str(result.path)
        )
        click.echo(f"exported: {out}")


@main.command("boost", epilog=examples("raytasks boost --scheme inter --folds 5"))
@click.option(
    "--scheme",
    default="inter",
    metavar="SCHEME",
    help="Built scheme to train on (its train + valid splits; the test split is never read).",
)
@click.option(
    "--groups",
    default="beat,rr,pace,template",
    help="Record feature groups (raytasks.data.features.GROUPS), comma-separated.",
)
@click.option("--step", type=int, default=3, help="Every STEP-th sample.")
@click.option(
    "--rhythm-beats",
    type=int,
    default=constants.RHYTHM_BEATS,
    show_default=True,
    help="Beats the `rhythm` group looks across, centred on the beat.",
)
@click.option(
    "--folds",
    type=int,
    default=5,
    help="Leave-records-out CV folds (figures and the recall-first offsets).",
)
@click.option(
    "--max-iter", type=int, default=300, help="Boosting iterations (each adds a tree per class)."
)
@click.option("--learning-rate", type=float, default=0.1, help="Shrinkage of each tree.")
@click.option("--l2", type=float, default=0.0, help="L2 regularisation of the leaf values.")
@click.option("--min-leaf", type=int, default=20, help="Fewest beats in a leaf.")
@click.option(
    "--early-stopping/--no-early-stopping",
    default=False,
    help="scikit-learn's: stop when 10% of the beats held out stop improving.",
)
@click.option(
    "--record-power",
    type=float,
    default=0.0,
    help="Record weights ~ (record's beats)^-P: 0 off, 1 every patient equal.",
)
@click.option("--tag", default=None, show_default="boost-<scheme>", help="models/<TAG>/.")
def boost_cmd(
    scheme,
    groups,
    step,
    rhythm_beats,
    folds,
    max_iter,
    learning_rate,
    l2,
    min_leaf,
    early_stopping,
    record_power,
    tag,
):
    """Patient-adaptive gradient boosting (record features), chosen by record-level CV."""
    from raytasks.models import saved
    from raytasks.training import boost

    cfg = config.load(scheme=scheme)
    settings = boost.BoostSettings.from_dict(
        {
            "data": str(config.scheme_dir(cfg)),
            "groups": groups,
            "step": step,
            "rhythm_beats": rhythm_beats,
            "folds": folds,
            "early_stopping": early_stopping,
            "record_power": record_power,
            "model": {
                "max_iter": max_iter,
                "learning_rate": learning_rate,
                "l2_regularization": l2,
                "min_samples_leaf": min_leaf,
            },
        }
    )
    out = config.model_dir(cfg, tag or f"boost-{scheme}")
    info = boost.train_and_export(settings, out, log=click.echo)
    click.echo(
        f"exported {out} ({(out / saved.WEIGHTS).stat().st_size / 1e6:.2f} MB, "
        f"{info['params']} tree values)"
    )


@main.command(
    "calibrate",
    epilog=examples(
        "raytasks calibrate --model models/resnet1d-intra",
        "raytasks calibrate --model models/resnet1d-intra --target-recall 0.9",
    ),
)
@click.option(
    "--model",
    "models",
    multiple=True,
    type=click.Path(file_okay=False),
    required=True,
    help="An exported model dir (repeatable).",
)
@click.option(
    "--target-recall",
    type=click.FloatRange(0, 1),
    default=None,
    show_default="none: maximise macro F2",
    help="Instead of maximising macro F2: reach this recall on every sick class "
    "with the best macro precision.",
)
def calibrate_cmd(models, target_recall):
    """Refit a model's recall-first decision offsets on its scheme's valid split."""
    from raytasks.evaluation.evaluate import calibrate

    cfg = config.load()
    for m in models:
        info = calibrate(Path(m), config.where(cfg, "processed"), target_recall)
        click.echo(
            f"{Path(m).name}: offsets "
            + " ".join(f"{v:+.2f}" for v in info["offsets"])
            + f" ({info['offsets_fit']['objective']})"
        )


@main.command(
    "ensemble",
    epilog=examples(
        "raytasks ensemble resnet1d-intra cnn2d-intra-rr --tag duo",
        "raytasks ensemble resnet1d-inter-adaptive-cv boost-inter --weights 0.75,0.25 "
        "--tag blend-inter",
    ),
)
@click.argument("members", nargs=-1, required=True)
@click.option("--tag", required=True, help="Write the ensemble to models/<TAG>/.")
@click.option(
    "--weights",
    default=None,
    help="Each member's weight in the average, in order, e.g. 0.75,0.25.  [default: equal]",
)
def ensemble_cmd(members, tag, weights):
    """Average MEMBERS (model tags in models/, or model dirs) into one model.

    The members' class probabilities are averaged (weighted with --weights); the ensemble's
    recall-first offsets and valid metrics are fitted on the valid split of the members'
    (common) scheme. Members may read different inputs (networks, `raytasks boost` trees).
    """
    from raytasks.models.ensemble import build_ensemble

    cfg = config.load()
    models = config.where(cfg, "models")
    out = config.model_dir(cfg, tag)
    dirs = [Path(m) if Path(m).is_dir() else models / m for m in members]
    if out in dirs:
        raise click.BadParameter(
            "the ensemble cannot replace one of its members", param_hint="--tag"
        )
    info = build_ensemble(dirs, out, config.where(cfg, "processed"), parse_weights(weights))
    m = info["valid_metrics"]
    click.echo(
        f"{out}: {len(dirs)} members, valid macro F1 {m['F1scoremacro']:.4f}, "
        f"macro recall {m['Recallmacro']:.4f}"
    )


def parse_weights(text: str | None) -> list[float] | None:
    """--weights 0.75,0.25 -> [0.75, 0.25]; a bad list is a usage error."""
    if text is None:
        return None
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"not a comma-separated list of numbers: {text!r}") from None
