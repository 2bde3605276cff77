"""raytasks evaluate: models x a split (or a file) -> results/."""

from pathlib import Path

import click

from raytasks.cli.common import examples, main, old_spelling
from raytasks.core import config


@main.command(
    "evaluate",
    epilog=examples(
        "raytasks evaluate",
        "raytasks evaluate --split test",
        "raytasks evaluate --model models/resnet1d-intra --file heart_big_valid.parq",
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
    from raytasks.evaluation.evaluate import (
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
