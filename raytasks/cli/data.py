"""raytasks data build | import | describe: records and files -> shards."""

from pathlib import Path

import click

from raytasks.cli.common import Group, examples, main, old_spelling
from raytasks.core import config, constants


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
