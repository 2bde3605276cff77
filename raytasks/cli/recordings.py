"""raytasks predict | score: raw recordings -> classified beats, scored."""

from pathlib import Path

import click

from raytasks.cli.common import examples, main
from raytasks.core import config


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
    recording or chunk): OUT/<name>/{beats.csv,summary.json,strip.png,report.html},
    OUT/summary.csv; summary.json and report.html say how clean the signal was."""
    from raytasks.recordings.predict import default_model, list_recordings, predict

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
    from raytasks.recordings.score import ec57_table, score_all, write_scores

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
