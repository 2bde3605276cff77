"""The `raytasks` command: a thin click group over the modules that do the work."""

from dataclasses import fields
from pathlib import Path

import click

from raytasks import config, constants, paths
from raytasks.data import DataError
from raytasks.metrics import METRIC_NAMES, OBJECTIVE, RECALL_NAMES
from raytasks.settings import TrainSettings
from raytasks.tune import SearchRequest, run

DEBUG = False  # --debug: let the traceback of an expected error through
# one grammar for every command: -h, defaults shown as [default: ...], booleans as flags
SETTINGS = {"help_option_names": ["-h", "--help"], "show_default": True}


def examples(*lines: str) -> str:
    """An --help epilog: 'Examples:' and the command lines, kept as written (\b)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def user_errors() -> tuple:
    """The errors bad input raises: each message already names the file or setting."""
    from raytasks.settings import TrainConfigError
    from raytasks.spaces import SpaceError
    from raytasks.tune import SearchError

    return (
        DataError,
        config.ConfigError,
        paths.PathError,
        SpaceError,
        TrainConfigError,
        SearchError,
    )


def one_line(e: Exception) -> str:
    if isinstance(e, OSError) and e.filename:
        return (
            f"{e.filename}: {e.strerror or type(e).__name__}; check that the path exists "
            f"and is writable, or choose another one"
        )
    return " ".join(str(e).split())


def old_spelling(flag: str, dest: str, **kwargs):
    """The flag's old name (e.g. --data) as a hidden option merged into `dest`: it keeps
    working, and --help shows one meaning per name."""
    import functools

    def decorate(fn):
        @functools.wraps(fn)
        def merged(*args, **values):
            old = values.pop(f"old_{dest}")
            if old:  # a repeatable option adds to the new one's values
                values[dest] = (*values[dest], *old) if kwargs.get("multiple") else old
            return fn(*args, **values)

        return click.option(flag, f"old_{dest}", hidden=True, **kwargs)(merged)

    return decorate


class Group(click.Group):
    """Turns the project's expected errors (and unwritable paths) into one line, exit 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            if e.ctx is None:  # already one line (an inner group made it so)
                raise
            path = e.ctx.command_path
            raise click.UsageError(f"{e.format_message()} (see '{path} -h')") from None
        except click.ClickException:
            raise
        except (*user_errors(), OSError) as e:
            if DEBUG:
                raise
            raise click.ClickException(one_line(e)) from None


@click.group(
    cls=Group,
    context_settings=SETTINGS,
    epilog=examples(
        "raytasks data build --scheme all",
        "raytasks train --arch cnn1d --epochs 5",
        "raytasks tune --space cnn1d --samples 4",
        "raytasks evaluate",
    ),
)
@click.option("--debug", is_flag=True, help="Show the full traceback of an error.")
def main(debug):
    """raytasks: train, tune and ship MIT-BIH heartbeat classifiers on Ray.

    Start with `raytasks data build`, then `raytasks train`, `raytasks tune`,
    `raytasks evaluate`. Settings come from config.toml < environment < flags.
    """
    global DEBUG
    DEBUG = debug


@main.group(
    cls=Group, epilog=examples("raytasks data build --scheme all", "raytasks data describe")
)
def data():
    """Build, import and describe the beat shards."""


@data.command(
    "build",
    epilog=examples(
        "raytasks data build --scheme all",
        "raytasks data build --records ~/mitdb --out /tmp/shards",
    ),
)
@click.option(
    "--records",
    type=click.Path(file_okay=False),
    default=None,
    show_default="MITDB_DIR, config.toml 'records', else a PhysioNet download",
    help="Raw MIT-BIH directory (.dat/.hea/.atr).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    show_default="config.toml 'processed' (data/processed)",
    help="Output root; shards go to OUT/<scheme>/{train,valid,test}.",
)
@click.option(
    "--scheme",
    type=click.Choice(["intra", "inter", "all"]),
    default="intra",
    help="intra: beat-level stratified split (Kaggle-like); "
    "inter: patient-level DS1/DS2 (de Chazal 2004).",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    show_default=f"config.toml 'seed' ({constants.SPLIT_SEED})",
    help="Split/shuffle seed.",
)
@click.option("--shard-rows", type=click.IntRange(1), default=4000, help="Rows per parquet shard.")
@click.option("--force", is_flag=True, help="Rebuild even when the shards are current.")
def data_build(records, out, scheme, seed, shard_rows, force):
    """Turn raw records into parquet beat shards (Kachuee et al. 2018 beats)."""
    from raytasks.data.build import build
    from raytasks.data.mitdb import resolve_records
    from raytasks.data.shards import counts_table, missing_classes

    cfg = config.load(records=records, processed=out, seed=seed)
    records_dir = resolve_records(cfg["records"], config.where(cfg, "raw_download"))
    schemes = ("intra", "inter") if scheme == "all" else (scheme,)
    out_dir = config.where(cfg, "processed")
    metas = build(
        records_dir,
        out_dir,
        schemes,
        force=force,
        params={"seed": cfg["seed"], "shard_rows": shard_rows},
    )
    click.echo(counts_table(metas))
    click.echo(f"shards: {', '.join(str(out_dir / s) for s in schemes)}")
    for warning in (w for m in metas.values() for w in missing_classes(m)):
        click.echo(f"warning: {warning} (few or unusual records?)", err=True)


@data.command(
    "import",
    epilog=examples(
        "raytasks data import --train heart_big_train.parq --valid heart_big_valid.parq"
    ),
)
@click.option(
    "--train",
    "train",
    type=click.Path(dir_okay=False),
    required=True,
    help="heart_big_train.parq or mitbih_train.csv",
)
@click.option(
    "--valid",
    type=click.Path(dir_okay=False),
    default=None,
    show_default="a stratified 20% of train",
    help="heart_big_valid.parq",
)
@click.option(
    "--test",
    type=click.Path(dir_okay=False),
    default=None,
    help="mitbih_test.csv or another held-out file",
)
@click.option(
    "--name", default="hackathon", help="Scheme name: shards go to OUT/<name>/{train,valid,test}."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    show_default="config.toml 'processed' (data/processed)",
    help="Output root.",
)
def data_import(train, valid, test, name, out):
    """Turn hackathon parquet or Kaggle CSV files into the same shard layout."""
    from raytasks.data.imports import import_files
    from raytasks.data.shards import counts_table

    paths.check_name(name, "--name")
    if name in ("intra", "inter"):
        raise click.BadParameter(
            "'intra'/'inter' are built from records; pick another name", param_hint="--name"
        )
    cfg = config.load(processed=out)
    files = {"train": train, "valid": valid, "test": test}
    meta = import_files(
        {k: Path(v) if v else None for k, v in files.items()}, config.where(cfg, "processed"), name
    )
    click.echo(counts_table({name: meta}))


@data.command(
    "describe",
    epilog=examples("raytasks data describe", "raytasks data describe --processed /tmp/shards"),
)
@old_spelling("--data", "processed", type=click.Path(file_okay=False))
@click.option(
    "--processed",
    type=click.Path(file_okay=False),
    default=None,
    show_default="config.toml 'processed' (data/processed)",
    help="Shard root: <PROCESSED>/<scheme>/{train,valid,test}.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    show_default="results/data",
    help="Where the plots go.",
)
def data_describe(processed, out):
    """Class counts and percentages per split and scheme; example-beat and balance plots."""
    from raytasks.data.describe import describe

    cfg = config.load(processed=processed)
    out_dir = Path(out) if out else config.where(cfg, "results") / "data"
    table, plots = describe(config.where(cfg, "processed"), out_dir)
    click.echo(table)
    for p in plots:
        click.echo(f"plot: {p}")


def parse_value(text: str):
    """A flag value as TOML would read it (numbers, booleans, [lists]), else the string."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def train_options(fn):
    """One flag per field of raytasks.settings.TrainSettings (its help, choices, default);
    booleans are --x/--no-x."""
    from raytasks.settings import FIELDS, choices, defaults

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
        listed = f.metadata["choices"] not in (None, "metric")
        kind = click.Choice(choices(key)) if listed else type(default[key])
        fn = click.option(flag, key, type=kind, default=default[key], help=help)(fn)
    return fn


def train_settings(config_file, model_opts, flags: dict) -> dict:
    """--config FILE.toml, then the flags given, then -m KEY=VALUE architecture fields."""
    import tomllib

    settings = {}
    if config_file:
        try:
            with open(config_file, "rb") as f:
                settings = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise click.ClickException(f"{config_file}: not valid TOML ({e})") from None
        if not isinstance(settings.get("model", {}), dict):
            raise click.ClickException(f"{config_file}: 'model' must be a [model] table")
    settings.update({k: v for k, v in flags.items() if v is not None})
    model = dict(settings.get("model", {}))
    for opt in model_opts:
        if "=" not in opt:
            raise click.BadParameter(f"{opt!r} is not KEY=VALUE", param_hint="-m/--model-field")
        key, value = opt.split("=", 1)
        model[key.strip()] = parse_value(value.strip())
    settings["model"] = model
    return settings


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
    from raytasks.settings import defaults

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
    from raytasks import ray_connect, train
    from raytasks.settings import TrainConfigError, TrainSettings
    from raytasks.storage import local_runs

    cfg = config.load(scheme=scheme)
    ctx = click.get_current_context()
    typed = {
        k: v
        for k, v in flags.items()
        if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE
    }
    settings = train_settings(config_file, model_opts, typed)
    settings["data"] = data or settings.get("data") or str(config.scheme_dir(cfg))
    try:
        settings = TrainSettings.from_dict(settings)
    except TrainConfigError as e:
        where = f"{config_file} or flags" if config_file else "flags"
        raise click.ClickException(f"training settings ({where}): {e}") from None
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


@main.command(
    "evaluate",
    epilog=examples(
        "raytasks evaluate",
        "raytasks evaluate --split test",
        "raytasks evaluate --model models/cnn1d-intra --file heart_big_valid.parq",
    ),
)
@old_spelling("--data", "data_file", type=click.Path(dir_okay=False))
@click.option(
    "--model",
    "models",
    multiple=True,
    type=click.Path(file_okay=False),
    show_default="every model in models/ trained on --scheme",
    help="An exported model dir (repeatable).",
)
@click.option(
    "--split",
    type=click.Choice(["valid", "test"]),
    default="valid",
    help="Split of the built scheme.",
)
@click.option(
    "--scheme",
    default=None,
    metavar="SCHEME",
    show_default="intra",
    help="Built scheme to evaluate on (intra, inter or an imported name).",
)
@click.option(
    "--file",
    "data_file",
    type=click.Path(dir_okay=False),
    help="Evaluate on a hackathon parquet or Kaggle CSV instead.",
)
@click.option(
    "--records",
    type=click.Path(file_okay=False),
    help="Evaluate on a directory of WFDB records with beat annotations instead "
    "(preprocessed exactly as in training).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    show_default="results/, results/test/ or results/external/ (+ selected/ with --model)",
    help="Where output.csv and plots go: by split, or external for --file/--records; "
    "with --model, the selected/ folder inside that (the shipped table stays).",
)
@click.option(
    "--cache/--no-cache",
    default=True,
    help="Reuse rows of unchanged models and data (kept in <processed>/.cache/"
    "evaluate, keyed by content hashes); --no-cache recomputes every model.",
)
def evaluate_cmd(models, split, scheme, data_file, records, out, cache):
    """Evaluate models into OUT/output.csv, OUT/<tag>/{confusion,recall}.png, report.md."""
    from raytasks.evaluate import (
        default_out,
        evaluate,
        find_models,
        load_eval_data,
        models_for,
        table,
    )

    if data_file and records:
        raise click.UsageError("give --file or --records, not both")
    cfg = config.load(scheme=scheme)
    external = bool(data_file or records)
    out = out or default_out(config.where(cfg, "results"), split, external, bool(models))
    if models:
        dirs = [Path(m) for m in models]
    elif external:  # a file or recordings: every model meets them
        dirs = find_models(config.where(cfg, "models"))
    else:
        dirs, skipped = models_for(config.where(cfg, "models"), cfg["scheme"])
        if skipped:
            click.echo(f"skipping models trained on another scheme: {', '.join(skipped)}")
        if not dirs:
            raise click.ClickException(f"no model in models/ was trained on '{cfg['scheme']}'")
    x, y, desc, context = load_eval_data(
        config.where(cfg, "processed"), cfg["scheme"], split, data_file, records
    )
    cache = config.where(cfg, "processed") / ".cache" / "evaluate" if cache else None
    click.echo(f"{desc}: {len(y)} beats; {len(dirs)} model(s), each printed as it finishes")
    rows = evaluate(dirs, x, y, desc, Path(out), context, cache=cache)
    click.echo(table(rows))
    click.echo(f"wrote {Path(out) / 'output.csv'}")


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
    help="Record feature groups (raytasks.records.GROUPS), comma-separated.",
)
@click.option("--step", type=int, default=3, help="Every STEP-th sample.")
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
    from raytasks import boost, saved

    cfg = config.load(scheme=scheme)
    settings = boost.HGB | {
        "max_iter": max_iter,
        "learning_rate": learning_rate,
        "l2_regularization": l2,
        "min_samples_leaf": min_leaf,
        "early_stopping": "auto" if early_stopping else False,
        "record_power": record_power,
    }
    params = {"step": step, "groups": [g.strip() for g in groups.split(",") if g.strip()]}
    out = config.model_dir(cfg, tag or f"boost-{scheme}")
    info = boost.train_and_export(
        config.where(cfg, "processed"), scheme, params, settings, out, folds, log=click.echo
    )
    click.echo(
        f"exported {out} ({(out / saved.WEIGHTS).stat().st_size / 1e6:.2f} MB, "
        f"{info['params']} tree values)"
    )


@main.command(
    "calibrate",
    epilog=examples(
        "raytasks calibrate --model models/cnn1d-intra",
        "raytasks calibrate --model models/cnn1d-intra --target-recall 0.9",
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
    from raytasks.evaluate import calibrate

    cfg = config.load()
    for m in models:
        info = calibrate(Path(m), config.where(cfg, "processed"), target_recall)
        click.echo(
            f"{Path(m).name}: offsets "
            + " ".join(f"{v:+.2f}" for v in info["offsets"])
            + f" ({info['offsets_fit']['objective']})"
        )


@main.command("ensemble", epilog=examples("raytasks ensemble cnn1d-intra resnet1d-intra --tag duo"))
@click.argument("members", nargs=-1, required=True)
@click.option("--tag", required=True, help="Write the ensemble to models/<TAG>/.")
def ensemble_cmd(members, tag):
    """Average MEMBERS (model tags in models/, or model dirs) into one model.

    The members' class probabilities are averaged; the ensemble's recall-first offsets and
    valid metrics are fitted on the valid split of the members' (common) scheme.
    """
    from raytasks.ensemble import build_ensemble

    cfg = config.load()
    models = config.where(cfg, "models")
    out = config.model_dir(cfg, tag)
    dirs = [Path(m) if Path(m).is_dir() else models / m for m in members]
    if out in dirs:
        raise click.BadParameter(
            "the ensemble cannot replace one of its members", param_hint="--tag"
        )
    info = build_ensemble(dirs, out, config.where(cfg, "processed"))
    m = info["valid_metrics"]
    click.echo(
        f"{out}: {len(dirs)} members, valid macro F1 {m['F1scoremacro']:.4f}, "
        f"macro recall {m['Recallmacro']:.4f}"
    )


@main.command(
    "predict",
    epilog=examples(
        "raytasks predict --records ~/mitdb/100.hea", "raytasks predict --records ~/mitdb --score"
    ),
)
@click.option(
    "--records",
    required=True,
    type=click.Path(),
    help="A recording (WFDB .hea/.dat, .edf, .csv) or a directory of them.",
)
@click.option(
    "--model",
    "model",
    type=click.Path(file_okay=False),
    default=None,
    show_default="the shipped RR model with the best valid macro F2",
    help="Model dir.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    show_default="results/predict/",
    help="Output dir.",
)
@click.option(
    "--fs",
    "fs",
    type=float,
    default=None,
    show_default="required for CSV",
    help="Sampling rate (Hz) of CSV files.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=2,
    help="Ray Data tasks at a time (detection, then classification).",
)
@click.option(
    "--chunk-s",
    type=click.FloatRange(10),
    default=3600,
    help="Recordings longer than this are cut into chunks of this many seconds.",
)
@click.option(
    "--peaks",
    "mode",
    type=click.Choice(["detect", "atr"]),
    default="detect",
    help="atr: classify at the reference beat positions "
    "(.atr) instead of detected ones (to measure what "
    "detection costs).",
)
@click.option(
    "--score",
    "do_score",
    is_flag=True,
    help="Then score against the records' .atr files (raytasks score).",
)
def predict_cmd(records, model, out, fs, workers, chunk_s, mode, do_score):
    """Find and classify every beat of unannotated recordings (Ray Data, one task per
    recording or chunk): OUT/<name>/{beats.csv,summary.json,strip.png}, OUT/summary.csv."""
    from raytasks.predict import default_model, list_recordings, predict

    cfg = config.load()
    out_dir = Path(out) if out else config.where(cfg, "results") / "predict"
    model_dir = Path(model) if model else default_model(config.where(cfg, "models"))
    paths = list_recordings(Path(records))
    click.echo(f"{len(paths)} recording(s), model {model_dir.name}, {workers} worker(s)")
    frame = predict(paths, model_dir, out_dir, fs, workers, chunk_s, mode)
    if frame.empty:
        raise click.ClickException("no recording could be processed (see the lines above)")
    click.echo(f"wrote {out_dir / 'summary.csv'} ({len(frame)} of {len(paths)} recordings)")
    if do_score:
        score_and_print(Path(records) if Path(records).is_dir() else Path(records).parent, out_dir)


def score_and_print(records: Path, predictions: Path) -> None:
    from raytasks.score import ec57_table, score_all, write_scores

    rows, cm = score_all(records, predictions)
    write_scores(rows, cm, predictions)
    click.echo(ec57_table(rows, cm))
    click.echo(f"wrote {predictions / 'score.csv'}, {predictions / 'score.txt'}")


@main.command("score", epilog=examples("raytasks score --records ~/mitdb"))
@click.option(
    "--records",
    required=True,
    type=click.Path(file_okay=False),
    help="WFDB records with reference beat annotations (.atr).",
)
@click.option(
    "--predictions",
    type=click.Path(file_okay=False),
    default=None,
    show_default="results/predict/",
    help="Output of raytasks predict.",
)
def score_cmd(records, predictions):
    """EC57-style beat-by-beat scoring (150 ms matching): QRS Se/+P, per-class Se/+P/F1 and
    confusion of matched beats, per record and total -> PREDICTIONS/score.{csv,txt}."""
    cfg = config.load()
    pred = Path(predictions) if predictions else config.where(cfg, "results") / "predict"
    score_and_print(Path(records), pred)


@main.group(
    cls=Group,
    epilog=examples(
        "raytasks cluster up --nodes 2", 'eval "$(raytasks cluster env)"', "raytasks cluster down"
    ),
)
def cluster():
    """A local Ray head (dashboard + job server on 127.0.0.1:<port>) and extra raylets."""


@cluster.command(
    "up", epilog=examples("raytasks cluster up", "raytasks cluster up --nodes 2 --cpus 2")
)
@click.option(
    "--nodes",
    type=click.IntRange(1, 8),
    default=1,
    help="Raylets on this machine (2 acts as a 2-node cluster).",
)
@click.option(
    "--cpus",
    type=click.IntRange(1),
    default=None,
    show_default="all",
    help="CPUs each node offers.",
)
def cluster_up(nodes, cpus):
    """Start the team's head on this machine (port from config.toml / RAYTASKS_PORT)."""
    from raytasks import cluster as rc

    cfg = config.load()
    warning = rc.exposure_warning(cfg)
    if warning:
        click.echo(warning, err=True)
    address = rc.up(cfg, nodes, cpus)
    click.echo(f"Ray cluster up: {nodes} node(s); dashboard and job server at {address}")
    click.echo("teammates (and you), in a shell of your own checkout:")
    click.echo(rc.shell_env(cfg))


@cluster.command("env", epilog=examples('eval "$(raytasks cluster env)"'))
def cluster_env():
    """Shell exports for the raw Ray CLI: eval "$(raytasks cluster env)"."""
    from raytasks import cluster as rc

    click.echo(rc.shell_env(config.load()))


@cluster.command(
    "render",
    epilog=examples(
        "raytasks cluster render --head 10.0.0.10 --worker 10.0.0.11 --worker 10.0.0.12 "
        "--user alice -o cluster.local.yaml",
        "ray up cluster.local.yaml --yes --no-config-cache",
    ),
)
@click.option("--head", required=True, help="The head machine's IP address (or host name).")
@click.option("--worker", "workers", multiple=True, required=True, help="A worker machine.")
@click.option("--user", default=None, show_default="cluster.yaml's", help="SSH user on them.")
@click.option("--key", default=None, show_default="cluster.yaml's", help="SSH private key.")
@click.option(
    "--config",
    "template",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    show_default="cluster.yaml",
    help="The launcher config to fill in.",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    show_default="stdout",
    help="Write it here.",
)
def cluster_render(head, workers, user, key, template, out):
    """cluster.yaml with your machines filled in, for `ray up` on several machines (the
    shipped file keeps its placeholders)."""
    from raytasks import cluster as rc

    text = rc.render(head, list(workers), user, key, template or rc.CLUSTER_YAML)
    if out is None:
        click.echo(text, nl=False)
    else:
        paths.write_text(out, text)
        click.echo(f"{out}: ray up {out} --yes --no-config-cache")


@cluster.command("down", epilog=examples("raytasks cluster down"))
def cluster_down():
    """Stop the processes this port's `cluster up` started (nothing else)."""
    from raytasks import cluster as rc

    n, killed = rc.down(config.load())
    click.echo(
        f"stopped {n} process(es)"
        + (
            f"; still running {rc.GRACE_S} s after SIGTERM, killed: {', '.join(killed)}"
            if killed
            else ""
        )
        if n
        else "no cluster started by `raytasks cluster up` on this port"
    )


@main.command(
    "submit",
    context_settings={"ignore_unknown_options": True},
    epilog=examples(
        "raytasks submit --space cnn1d -- --samples 2 --max-epochs 2",
        "raytasks submit --space all --follow -- --archs gru,cnn1d --samples 20 --export",
    ),
)
@click.option("--space", required=True, help="Search space to run (searchspaces/<SPACE>.toml).")
@click.option(
    "--dev", default=None, show_default="config.toml / RAYTASKS_DEV", help="Your dev tag."
)
@click.option(
    "--storage",
    default=None,
    show_default="config.toml; relative = the cluster's",
    help="Team storage.",
)
@click.option("--wait", is_flag=True, help="Wait until the job ends.")
@click.option("-f", "--follow", is_flag=True, help="Print the job's log until it ends.")
@click.argument("tune_args", nargs=-1, type=click.UNPROCESSED)
def submit_cmd(space, dev, storage, wait, follow, tune_args):
    """`ray job submit` a search as you: python -m raytasks.tune --space SPACE TUNE_ARGS."""
    from raytasks import cluster as rc

    cfg = config.load(dev=dev, storage=storage)
    job = rc.submit(cfg, space, list(tune_args))
    click.echo(f"submitted {job} to {rc.job_address(cfg)}")
    click.echo(
        f"follow: raytasks logs {job}   status: raytasks jobs   "
        f"dashboard: {rc.job_address(cfg)}   afterwards: raytasks pull {job}"
    )
    if follow:
        status = rc.follow(rc.client(cfg), job, None, lambda text: click.echo(text, nl=False))
    if wait and not follow:
        status = rc.wait_for(rc.client(cfg), job)
    if wait or follow:
        click.echo(f"{job}: {status}")
        if status != "SUCCEEDED":
            raise click.ClickException(f"{job} ended {status}; see raytasks logs {job}")


@main.command("jobs", epilog=examples("raytasks jobs", "raytasks jobs --all"))
@click.option("--all", "everyone", is_flag=True, help="Every dev's jobs, with their owner.")
def jobs_cmd(everyone):
    """Your jobs on the cluster (raytasks submit or raw ray job submit) and their status."""
    from raytasks import cluster as rc

    click.echo(rc.job_table(rc.list_jobs(config.load(), everyone)))


@main.command(
    "logs",
    epilog=examples(
        "raytasks logs alice-gru-20250101T120000Z --tail 40",
        "raytasks logs alice-gru-20250101T120000Z --follow",
    ),
)
@click.argument("job")
@click.option(
    "--tail",
    "lines",
    type=click.IntRange(0),
    default=None,
    show_default="all",
    help="Only the last N lines (with --follow: then the new ones).",
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the job ends.")
@click.option("--force", is_flag=True, help="Read another dev's job too.")
def logs_cmd(job, lines, follow, force):
    """One of your jobs' logs (JOB: its submission id, from `raytasks jobs`)."""
    from raytasks import cluster as rc

    jobs, _ = rc.own_job(config.load(), job, force, "reading")
    if not follow:
        click.echo(rc.tail(jobs.get_job_logs(job), lines), nl=False)
        return
    status = rc.follow(jobs, job, lines, lambda text: click.echo(text, nl=False))
    click.echo(f"{job}: {status}")


@main.command("stop", epilog=examples("raytasks stop alice-gru-20250101T120000Z"))
@click.argument("job")
@click.option("--force", is_flag=True, help="Stop another dev's job too (says whose).")
def stop_cmd(job, force):
    """Stop one of your running jobs."""
    from raytasks import cluster as rc

    cfg = config.load()
    jobs, who = rc.own_job(cfg, job, force, "stopping")
    stopped = jobs.stop_job(job)
    whose = "" if who == cfg["dev"] else f"{who or 'untagged'}'s job "
    click.echo(f"{whose}{job}: {'stop requested' if stopped else 'not running'}")


@main.command("pull", epilog=examples("raytasks pull alice-gru-20250101T120000Z"))
@click.argument("name")
def pull_cmd(name):
    """Copy a finished search (submission id or experiment) from storage: its exported
    models into models/, its rows and plot into results/<experiment>/, and its rows into
    results/leaderboard.csv."""
    from raytasks import cluster as rc

    info, models, local = rc.pull(config.load(), name)
    click.echo(f"{info['dev']}'s {info['experiment']}: {info['trials']} trial(s) -> {local}")
    for m in models:
        click.echo(f"model: {m}   (raytasks evaluate --model {m})")
    if not models:
        click.echo("no exported model (search without --export)")


@main.command("leaderboard", epilog=examples("raytasks leaderboard --top 5"))
@click.option("--top", type=int, default=15, help="Rows to print.")
def leaderboard_cmd(top):
    """The team leaderboard: every dev's rows in storage merged into results/leaderboard.csv
    (+ leaderboard.png); prints the best trials."""
    from raytasks.leaderboard import board_table
    from raytasks.leaderboard import sync as sync_leaderboard
    from raytasks.storage import Storage, team_rows

    cfg = config.load()
    store = Storage.from_setting(cfg["storage"])
    results = config.where(cfg, "results")
    board = sync_leaderboard(team_rows(store), results)
    click.echo(board_table(board, top))
    click.echo(
        f"{len(board)} rows from {board['dev'].nunique() if len(board) else 0} dev(s) "
        f"({store.uri} + earlier rows) -> {results / 'leaderboard.csv'} (+ .png)"
    )


@main.group(
    "job",
    cls=Group,
    epilog=examples(
        "raytasks job submit --space gru -- --samples 20",
        "raytasks job list",
        "raytasks job logs alice-gru-20250101T120000Z --follow",
    ),
)
def job_group():
    """Your searches on the team's cluster, named as `ray job` names them: submit, list,
    logs, stop, pull. The top-level submit, jobs, logs, stop and pull are the same commands."""


for _name, _cmd in (
    ("submit", submit_cmd),
    ("list", jobs_cmd),
    ("logs", logs_cmd),
    ("stop", stop_cmd),
    ("pull", pull_cmd),
):
    job_group.add_command(_cmd, _name)


# ------------------------------------------------- tune (also run alone: python -m raytasks.tune)

TUNE_EXAMPLES = """
\b
Examples:
  raytasks tune --space cnn1d --samples 4 --max-epochs 3
  raytasks tune --space all --archs gru,cnn1d --samples 20 --export
  raytasks tune --space gru --resume
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
    "inception1d, all) or a path to a .toml.",
)
@click.option("--archs", default=None, help="Restrict a conditional space: e.g. gru,cnn1d.")
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
def tune_cmd(**flags):
    """Search a space with HyperOpt + ASHA on Ray Tune; leaderboard, plots, optional export."""
    flags["archs"] = flags["archs"].split(",") if flags["archs"] else None
    req = SearchRequest(**{f.name: flags[f.name] for f in fields(SearchRequest)})
    try:  # also run alone, as `python -m raytasks.tune`: no Group around it then
        run(req)
    except user_errors() as e:
        raise click.ClickException(one_line(e)) from None


main.add_command(tune_cmd, "tune")

if __name__ == "__main__":
    main()
