"""The `raytasks` command: a thin click group over the modules that do the work."""

from pathlib import Path

import click

from raytasks import config, constants, paths
from raytasks.data import DataError

DEBUG = False  # --debug: let the traceback of an expected error through


def user_errors() -> tuple:
    """The errors bad input raises: each message already names the file or setting."""
    from raytasks.settings import TrainConfigError
    from raytasks.spaces import SpaceError

    return (DataError, config.ConfigError, paths.PathError, SpaceError, TrainConfigError)


def one_line(e: Exception) -> str:
    if isinstance(e, OSError) and e.filename:
        return (f"{e.filename}: {e.strerror or type(e).__name__}; check that the path exists "
                f"and is writable, or choose another one")
    return " ".join(str(e).split())


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


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show the full traceback of an error.")
def main(debug):
    """raytasks: train, tune and ship MIT-BIH heartbeat classifiers on Ray.

    Start with `raytasks data build`, then `raytasks train`, `raytasks tune`,
    `raytasks evaluate`. Settings come from config.toml < environment < flags.
    """
    global DEBUG
    DEBUG = debug


@main.group(cls=Group)
def data():
    """Build, import and describe the beat shards."""


@data.command("build")
@click.option("--records", type=click.Path(file_okay=False), default=None,
              help="Raw MIT-BIH directory (.dat/.hea/.atr). Default: MITDB_DIR, config.toml "
                   "'records', else download from PhysioNet into data/raw/mitdb.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output root; shards go to OUT/<scheme>/{train,valid,test}. "
                   "Default: data/processed.")
@click.option("--scheme", type=click.Choice(["intra", "inter", "all"]), default="intra",
              show_default=True, help="intra: beat-level stratified split (Kaggle-like); "
                                      "inter: patient-level DS1/DS2 (de Chazal 2004).")
@click.option("--seed", type=int, default=None,
              help=f"Split/shuffle seed (default {constants.SPLIT_SEED}).")
@click.option("--shard-rows", type=click.IntRange(1), default=4000, show_default=True,
              help="Rows per parquet shard.")
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
    metas = build(records_dir, out_dir, schemes, force=force,
                  params={"seed": cfg["seed"], "shard_rows": shard_rows})
    click.echo(counts_table(metas))
    click.echo(f"shards: {', '.join(str(out_dir / s) for s in schemes)}")
    for warning in (w for m in metas.values() for w in missing_classes(m)):
        click.echo(f"warning: {warning} (few or unusual records?)", err=True)


@data.command("import")
@click.option("--train", "train", type=click.Path(dir_okay=False), required=True,
              help="heart_big_train.parq or mitbih_train.csv")
@click.option("--valid", type=click.Path(dir_okay=False), default=None,
              help="heart_big_valid.parq (default: a stratified 20% of train)")
@click.option("--test", type=click.Path(dir_okay=False), default=None,
              help="mitbih_test.csv or another held-out file")
@click.option("--name", default="hackathon", show_default=True,
              help="Scheme name: shards go to OUT/<name>/{train,valid,test}.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output root (default: data/processed).")
def data_import(train, valid, test, name, out):
    """Turn hackathon parquet or Kaggle CSV files into the same shard layout."""
    from raytasks.data.imports import import_files
    from raytasks.data.shards import counts_table

    paths.check_name(name, "--name")
    if name in ("intra", "inter"):
        raise click.BadParameter("'intra'/'inter' are built from records; pick another name",
                                 param_hint="--name")
    cfg = config.load(processed=out)
    files = {"train": train, "valid": valid, "test": test}
    meta = import_files({k: Path(v) if v else None for k, v in files.items()},
                        config.where(cfg, "processed"), name)
    click.echo(counts_table({name: meta}))


@data.command("describe")
@click.option("--data", "processed", type=click.Path(file_okay=False), default=None,
              help="Shard root (default: data/processed).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Where the plots go (default: results/data).")
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
    """One flag per field of raytasks.settings.TrainSettings (its help, choices, default)."""
    from raytasks.settings import FIELDS, choices, defaults

    default = defaults()
    for f in reversed(FIELDS):
        key, help = f.name, f.metadata["help"]
        if key in ("model", "data"):
            continue
        if key == "gpu":  # a plain flag: --gpu
            fn = click.option("--gpu", key, is_flag=True, default=None, help=help)(fn)
            continue
        # a choice list (the metric's is long: checked by the settings, not listed here)
        listed = f.metadata["choices"] not in (None, "metric")
        kind = click.Choice(choices(key)) if listed else type(default[key])
        fn = click.option(f"--{key.replace('_', '-')}", key, type=kind, default=None,
                          help=f"{help} [default: {default[key]}]")(fn)
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
            raise click.BadParameter(f"{opt!r} is not KEY=VALUE", param_hint="--model")
        key, value = opt.split("=", 1)
        model[key.strip()] = parse_value(value.strip())
    settings["model"] = model
    return settings


@main.command("train", context_settings={"show_default": True})
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True),
              help="TOML of training settings (top-level keys as the flags, [model] table "
                   "for the architecture); flags override it.")
@click.option("-m", "--model", "model_opts", multiple=True, metavar="KEY=VALUE",
              help="Architecture config field, e.g. -m channels=[32,64] -m se=false.")
@click.option("--data", default=None, help="Built scheme dir (default: <processed>/<scheme>).")
@click.option("--scheme", default=None, help="Scheme under the processed dir (default intra).")
@click.option("--tag", default=None, help="Export to models/<tag> (default <arch>-<scheme>).")
@click.option("--no-export", is_flag=True, help="Train and checkpoint only.")
@train_options
def train_cmd(config_file, model_opts, data, scheme, tag, no_export, **flags):
    """Train one architecture with Ray Train (TorchTrainer), export the best checkpoint.

    Every setting is a flag, or a key in --config FILE.toml. The best epoch by --metric
    is exported to models/<tag>/ with everything needed to evaluate it.
    """
    from raytasks import ray_connect, train
    from raytasks.settings import TrainConfigError, TrainSettings

    cfg = config.load(scheme=scheme)
    settings = train_settings(config_file, model_opts, flags)
    settings["data"] = data or settings.get("data") or str(config.scheme_dir(cfg))
    try:
        settings = TrainSettings.from_dict(settings)
    except TrainConfigError as e:
        where = f"{config_file} or flags" if config_file else "flags"
        raise click.ClickException(f"training settings ({where}): {e}") from None
    scheme_name = Path(settings.data).name
    tag = paths.check_name(tag or f"{settings.arch}-{scheme_name}", "--tag")
    dev = cfg["dev"] if cfg["dev"] != config.PLACEHOLDER_DEV else "local"
    ray_connect.init_ray()
    try:
        best, metrics, result = train.fit(settings, f"{tag}-{constants.utc_stamp()}",
                                          config.dev_runs(cfg, dev) / "train")
    except TrainConfigError as e:  # e.g. --gpu without a GPU
        raise click.ClickException(str(e)) from None
    click.echo(f"best epoch {metrics['epoch']}: " + "  ".join(
        f"{k} {metrics[k]:.4f}" for k in ("F1scoremacro", "Recallmacro", "F2scoremacro")))
    click.echo("per-class recall: " + "  ".join(
        f"{c}={metrics[f'TP_{c}']:.3f}" for c in range(constants.NUM_CLASSES)))
    click.echo(f"run: {result.path}")
    if not no_export:
        out = train.export(best, metrics, settings, config.model_dir(cfg, tag),
                           source=str(result.path))
        click.echo(f"exported: {out}")


@main.command("evaluate")
@click.option("--model", "models", multiple=True, type=click.Path(file_okay=False),
              help="An exported model dir (repeatable). Default: every model in models/ "
                   "trained on --scheme.")
@click.option("--split", type=click.Choice(["valid", "test"]), default="valid",
              show_default=True)
@click.option("--scheme", default=None, help="Built scheme to evaluate on (default intra).")
@click.option("--data", "data_file", type=click.Path(dir_okay=False),
              help="Evaluate on a hackathon parquet or Kaggle CSV instead.")
@click.option("--records", type=click.Path(file_okay=False),
              help="Evaluate on a directory of WFDB records with beat annotations instead "
                   "(preprocessed exactly as in training).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Where output.csv and plots go. Default: results/ for valid, "
                   "results/test/ for test, results/external/ for --data/--records; with "
                   "--model, the selected/ folder inside that (the shipped table stays).")
@click.option("--no-cache", is_flag=True,
              help="Recompute every model (default: reuse rows of unchanged models and data, "
                   "kept in <processed>/.cache/evaluate, keyed by content hashes).")
def evaluate_cmd(models, split, scheme, data_file, records, out, no_cache):
    """Evaluate models into OUT/output.csv, OUT/<tag>/{confusion,recall}.png, report.md."""
    from raytasks.evaluate import evaluate, find_models, load_eval_data, table

    if data_file and records:
        raise click.UsageError("give --data or --records, not both")
    cfg = config.load(scheme=scheme)
    results = config.where(cfg, "results")
    if out is None:
        out = (results / "external" if data_file or records
               else results / "test" if split == "test" else results)
        if models:  # a few models never replace the table of every shipped model
            out = out / "selected"
    if models:
        dirs = [Path(m) for m in models]
    else:
        dirs = find_models(config.where(cfg, "models"))
        if not (data_file or records):  # a model only meets the held-out data of its scheme
            skipped = [d.name for d in dirs if model_scheme(d) not in (None, cfg["scheme"])]
            dirs = [d for d in dirs if d.name not in skipped]
            if skipped:
                click.echo(f"skipping models trained on another scheme: {', '.join(skipped)}")
            if not dirs:
                raise click.ClickException(f"no model in models/ was trained on "
                                           f"'{cfg['scheme']}'")
    x, y, desc, context = load_eval_data(config.where(cfg, "processed"), cfg["scheme"],
                                         split, data_file, records)
    cache = None if no_cache else config.where(cfg, "processed") / ".cache" / "evaluate"
    rows = evaluate(dirs, x, y, desc, Path(out), context, cache=cache)
    click.echo(f"{desc}: {len(y)} beats")
    click.echo(table(rows))
    click.echo(f"wrote {Path(out) / 'output.csv'}")


@main.command("boost")
@click.option("--scheme", default="inter", show_default=True, help="Built scheme to train on "
              "(its train + valid splits; the test split is never read).")
@click.option("--groups", default="beat,rr,pace,template", show_default=True,
              help="Record feature groups (raytasks.records.GROUPS), comma-separated.")
@click.option("--step", type=int, default=3, show_default=True, help="Every STEP-th sample.")
@click.option("--folds", type=int, default=5, show_default=True,
              help="Leave-records-out CV folds (figures and the recall-first offsets).")
@click.option("--max-iter", type=int, default=300, show_default=True)
@click.option("--learning-rate", type=float, default=0.1, show_default=True)
@click.option("--l2", type=float, default=0.0, show_default=True)
@click.option("--min-leaf", type=int, default=20, show_default=True)
@click.option("--early-stopping/--no-early-stopping", default=False, show_default=True,
              help="scikit-learn's: stop when 10% of the beats held out stop improving.")
@click.option("--record-power", type=float, default=0.0, show_default=True,
              help="Record weights ~ (record's beats)^-P: 0 off, 1 every patient equal.")
@click.option("--tag", default=None, help="models/<tag>/ (default boost-<scheme>).")
def boost_cmd(scheme, groups, step, folds, max_iter, learning_rate, l2, min_leaf,
              early_stopping, record_power, tag):
    """Patient-adaptive gradient boosting (record features), chosen by record-level CV."""
    from raytasks import boost, saved

    cfg = config.load(scheme=scheme)
    settings = boost.HGB | {"max_iter": max_iter, "learning_rate": learning_rate,
                            "l2_regularization": l2, "min_samples_leaf": min_leaf,
                            "early_stopping": "auto" if early_stopping else False,
                            "record_power": record_power}
    params = {"step": step, "groups": [g.strip() for g in groups.split(",") if g.strip()]}
    out = config.model_dir(cfg, tag or f"boost-{scheme}")
    info = boost.train_and_export(config.where(cfg, "processed"), scheme, params, settings,
                                  out, folds, log=click.echo)
    click.echo(f"exported {out} ({(out / saved.WEIGHTS).stat().st_size / 1e6:.2f} MB, "
               f"{info['params']} tree values)")


@main.command("calibrate")
@click.option("--model", "models", multiple=True, type=click.Path(file_okay=False),
              required=True, help="An exported model dir (repeatable).")
@click.option("--target-recall", type=click.FloatRange(0, 1), default=None,
              help="Instead of maximising macro F2: reach this recall on every sick class "
                   "with the best macro precision.")
def calibrate_cmd(models, target_recall):
    """Refit a model's recall-first decision offsets on its scheme's valid split."""
    from raytasks.evaluate import calibrate

    cfg = config.load()
    for m in models:
        info = calibrate(Path(m), config.where(cfg, "processed"), target_recall)
        click.echo(f"{Path(m).name}: offsets " + " ".join(
            f"{v:+.2f}" for v in info["offsets"]) + f" ({info['offsets_fit']['objective']})")


@main.command("ensemble")
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
        raise click.BadParameter("the ensemble cannot replace one of its members",
                                 param_hint="--tag")
    info = build_ensemble(dirs, out, config.where(cfg, "processed"))
    m = info["valid_metrics"]
    click.echo(f"{out}: {len(dirs)} members, valid macro F1 {m['F1scoremacro']:.4f}, "
               f"macro recall {m['Recallmacro']:.4f}")


@main.command("predict")
@click.option("--records", required=True, type=click.Path(),
              help="A recording (WFDB .hea/.dat, .edf, .csv) or a directory of them.")
@click.option("--model", "model", type=click.Path(file_okay=False), default=None,
              help="Model dir (default: the shipped model with the best valid macro F2 "
                   "that reads RR features).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output dir (default: results/predict/).")
@click.option("--fs", "fs", type=float, default=None, help="Sampling rate (Hz) of CSV files.")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Ray Data tasks at a time (detection, then classification).")
@click.option("--chunk-s", type=click.FloatRange(10), default=3600, show_default=True,
              help="Recordings longer than this are cut into chunks of this many seconds.")
@click.option("--peaks", "mode", type=click.Choice(["detect", "atr"]), default="detect",
              show_default=True, help="atr: classify at the reference beat positions "
                                      "(.atr) instead of detected ones (to measure what "
                                      "detection costs).")
@click.option("--score", "do_score", is_flag=True,
              help="Then score against the records' .atr files (raytasks score).")
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
        score_and_print(Path(records) if Path(records).is_dir() else Path(records).parent,
                        out_dir)


def score_and_print(records: Path, predictions: Path) -> None:
    from raytasks.score import ec57_table, score_all, write_scores

    rows, cm = score_all(records, predictions)
    write_scores(rows, cm, predictions)
    click.echo(ec57_table(rows, cm))
    click.echo(f"wrote {predictions / 'score.csv'}, {predictions / 'score.txt'}")


@main.command("score")
@click.option("--records", required=True, type=click.Path(file_okay=False),
              help="WFDB records with reference beat annotations (.atr).")
@click.option("--predictions", type=click.Path(file_okay=False), default=None,
              help="Output of raytasks predict (default: results/predict/).")
def score_cmd(records, predictions):
    """EC57-style beat-by-beat scoring (150 ms matching): QRS Se/+P, per-class Se/+P/F1 and
    confusion of matched beats, per record and total -> PREDICTIONS/score.{csv,txt}."""
    cfg = config.load()
    pred = Path(predictions) if predictions else config.where(cfg, "results") / "predict"
    score_and_print(Path(records), pred)


@main.group(cls=Group)
def cluster():
    """A local Ray head (dashboard + job server on 127.0.0.1:<port>) and extra raylets."""


@cluster.command("up")
@click.option("--nodes", type=click.IntRange(1, 8), default=1, show_default=True,
              help="Raylets on this machine (2 acts as a 2-node cluster).")
@click.option("--cpus", type=int, default=None, help="CPUs each node offers (default: all).")
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


@cluster.command("env")
def cluster_env():
    """Shell exports for the raw Ray CLI: eval "$(raytasks cluster env)"."""
    from raytasks import cluster as rc

    click.echo(rc.shell_env(config.load()))


@cluster.command("down")
def cluster_down():
    """Stop the processes this port's `cluster up` started (nothing else)."""
    from raytasks import cluster as rc

    n, killed = rc.down(config.load())
    click.echo(f"stopped {n} process(es)" + (f"; still running {rc.GRACE_S} s after SIGTERM, "
                                              f"killed: {', '.join(killed)}" if killed else "")
               if n else "no cluster started by `raytasks cluster up` on this port")


@main.command("submit", context_settings={"ignore_unknown_options": True})
@click.option("--space", required=True, help="Search space to run (searchspaces/<SPACE>.toml).")
@click.option("--dev", default=None, help="Your dev tag (default: config.toml).")
@click.option("--storage", default=None, help="Team storage (default: config.toml; relative "
                                              "= the cluster's).")
@click.option("--wait", is_flag=True, help="Wait until the job ends.")
@click.argument("tune_args", nargs=-1, type=click.UNPROCESSED)
def submit_cmd(space, dev, storage, wait, tune_args):
    """`ray job submit` a search as you: python -m raytasks.tune --space SPACE TUNE_ARGS."""
    from raytasks import cluster as rc

    cfg = config.load(dev=dev, storage=storage)
    job = rc.submit(cfg, space, list(tune_args))
    click.echo(f"submitted {job} to {rc.job_address(cfg)}")
    click.echo(f"follow: raytasks logs {job}   status: raytasks jobs   "
               f"dashboard: {rc.job_address(cfg)}   afterwards: raytasks pull {job}")
    if wait:
        status = rc.wait_for(rc.client(cfg), job)
        click.echo(f"{job}: {status}")
        if status != "SUCCEEDED":
            raise click.ClickException(f"{job} ended {status}; see raytasks logs {job}")


@main.command("jobs")
@click.option("--all", "everyone", is_flag=True, help="Every dev's jobs, with their owner.")
def jobs_cmd(everyone):
    """Your jobs on the cluster (raytasks submit or raw ray job submit) and their status."""
    from raytasks import cluster as rc

    click.echo(rc.job_table(rc.list_jobs(config.load(), everyone)))


@main.command("logs")
@click.argument("job")
@click.option("--force", is_flag=True, help="Read another dev's job too.")
def logs_cmd(job, force):
    """One of your jobs' logs so far."""
    from raytasks import cluster as rc

    jobs, _ = rc.own_job(config.load(), job, force, "reading")
    click.echo(jobs.get_job_logs(job))


@main.command("stop")
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


@main.command("pull")
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


@main.command("leaderboard")
@click.option("--top", type=int, default=15, show_default=True, help="Rows to print.")
def leaderboard_cmd(top):
    """The team leaderboard: every dev's rows in storage merged into results/leaderboard.csv
    (+ leaderboard.png); prints the best trials."""
    from raytasks.storage import Storage, team_rows
    from raytasks.tune import board_table, sync_leaderboard

    cfg = config.load()
    store = Storage.from_setting(cfg["storage"])
    results = config.where(cfg, "results")
    board = sync_leaderboard(team_rows(store), results)
    click.echo(board_table(board, top))
    click.echo(f"{len(board)} rows from {board['dev'].nunique() if len(board) else 0} dev(s) "
               f"({store.uri} + earlier rows) -> {results / 'leaderboard.csv'} (+ .png)")


def model_scheme(model_dir: Path):
    from raytasks import saved

    try:
        return saved.scheme_of(saved.read_info(model_dir))
    except (OSError, ValueError):
        return None  # unreadable: evaluate() reports it properly


def _add_tune():
    from raytasks.tune import tune_cmd

    main.add_command(tune_cmd, "tune")


_add_tune()

if __name__ == "__main__":
    main()
