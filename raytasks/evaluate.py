"""Evaluate exported models into results/: output.csv, per-model plots and a report.

    raytasks evaluate                      # every model in models/ on intra valid (make run)
    raytasks evaluate --split test         # -> results/test/
    raytasks evaluate --data heart_big_valid.parq
    raytasks evaluate --records /path/to/wfdb/records

Each model gives two rows: `<tag>` (plain argmax) and `<tag>@recall` (its stored per-class
offsets added to the logits: the recall-first operating point). No Ray cluster is needed.
Everything is computed before anything is written, and output.csv is replaced atomically,
so a bad model or bad data leaves the previous results untouched.
"""

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from raytasks.data import BEAT_LEN, CLASS_NAMES, CLASS_SHORT, NUM_CLASSES, DataError
from raytasks.metrics import (
    METRIC_NAMES,
    OBJECTIVE,
    RECALL_NAMES,
    compute_metrics,
    confusion,
    field_table,
    record_bootstrap,
)

COLUMNS = ["modeltag"] + METRIC_NAMES + RECALL_NAMES


def find_models(models_dir: Path) -> list[Path]:
    dirs = sorted(p.parent for p in Path(models_dir).glob("*/model.json"))
    if not dirs:
        raise DataError(f"{models_dir}: no exported models (models/<tag>/model.json); "
                        f"train one with `raytasks train`")
    return dirs


def load_eval_data(processed: Path, scheme: str, split: str, data_file=None, records=None):
    """(x, y, description, context) of the evaluation data: a built split, a file, or WFDB
    records. context holds each beat's `record` and `sample` (models that compare a beat
    with the rest of its recording need them); None for a file, which carries the beat only.
    """
    from raytasks.data.stream import has_rr, load_split, split_files

    if data_file:
        from raytasks.data import FEATURES
        from raytasks.data.build import read_import

        frame = read_import(Path(data_file))
        return (frame[FEATURES].to_numpy(np.float32), frame["target"].to_numpy(np.int64),
                f"file {data_file}", None)
    if records:
        from raytasks.data import FEATURES, RR_FEATURES
        from raytasks.data.build import list_records, record_beats, verify_checksums

        names = list_records(Path(records))
        verify_checksums(Path(records), names)
        frame = pd.concat([record_beats(Path(records), n) for n in names], ignore_index=True)
        return (frame[FEATURES + RR_FEATURES].to_numpy(np.float32),
                frame["target"].to_numpy(np.int64), f"records {records} ({', '.join(names)})",
                frame[["record", "sample"]].reset_index(drop=True))
    files = split_files(Path(processed) / scheme, split)
    x, y = load_split(files, rr=has_rr(files))
    # same files, same order as load_split: row i of context is beat i of x
    context = pq.ParquetDataset(files).read(columns=["record", "sample"]).to_pandas()
    return x, y, f"{scheme}/{split} ({Path(processed) / scheme / split})", context


class Skip(DataError):
    """A model that cannot read this data: evaluation goes on without it, saying why."""


def model_inputs(model, info: dict, x: np.ndarray, context, data_desc: str) -> np.ndarray:
    """What the model reads, from x (and context); Skip with the reason when the data lacks it."""
    lacks = data_desc or "the data"
    if x.shape[1] < model.input_width:
        raise Skip(f"reads RR-interval features, which {lacks} lacks (hackathon/Kaggle files "
                   f"carry the beat only)")
    if info.get("record_features"):
        if context is None:
            raise Skip(f"compares each beat with the rest of its recording (record, sample), "
                       f"which {lacks} does not identify")
        from raytasks.records import record_features

        return record_features(x, context, info["record_features"])
    return x[:, :model.input_width]


def evaluate_model(model_dir: Path, x: np.ndarray, y: np.ndarray, data_desc: str = "",
                   context=None) -> dict:
    """Both operating points of one model: rows, confusion matrices, speed.

    x holds the beat and, when the data has them, its RR features; each model reads the
    columns it was trained on. Skip when the data lacks what the model reads.
    """
    from raytasks.train import load_model, predict_logits

    model, info = load_model(model_dir)
    t0 = time.perf_counter()
    logits = predict_logits(model, model_inputs(model, info, x, context, data_desc))
    seconds = time.perf_counter() - t0
    offsets = np.asarray(info.get("offsets", [0.0] * NUM_CLASSES), dtype=np.float64)
    out = {"tag": model_dir.name, "info": info, "beats_per_s": len(x) / max(seconds, 1e-9),
           "size_bytes": sum(f.stat().st_size for f in model_dir.rglob("model.pt")),
           "points": {}, "n_records": None if context is None else context["record"].nunique()}
    for name, off in ((model_dir.name, np.zeros(NUM_CLASSES)),
                      (f"{model_dir.name}@recall", offsets)):
        pred = (logits + off).argmax(axis=1)
        out["points"][name] = {"metrics": compute_metrics(y, pred), "cm": confusion(y, pred)}
        if context is not None:  # the field's figures, with intervals over records
            out["points"][name]["field"] = record_bootstrap(y, pred, context["record"])
    return out


def plot_model(res: dict, out_dir: Path) -> None:
    """confusion.png (counts and row-normalised, both operating points) and recall.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = list(res["points"].items())
    fig, axes = plt.subplots(len(points), 2, figsize=(10, 4.3 * len(points)), squeeze=False)
    for row, (name, p) in enumerate(points):
        cm = p["cm"]
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        for ax, mat, title, fmt in ((axes[row, 0], cm, "counts", "{:.0f}"),
                                    (axes[row, 1], norm, "row-normalised (recall)", "{:.2f}")):
            ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
            for i in range(NUM_CLASSES):
                for j in range(NUM_CLASSES):
                    ax.text(j, i, fmt.format(mat[i, j]), ha="center", va="center",
                            color="white" if norm[i, j] > 0.6 else "black", fontsize=9)
            ax.set_xticks(range(NUM_CLASSES), CLASS_SHORT)
            ax.set_yticks(range(NUM_CLASSES), CLASS_SHORT)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.set_title(f"{name}: {title}")
    fig.tight_layout()
    fig.savefig(out_dir / "confusion.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.2
    for k, (name, p) in enumerate(points):
        cm = p["cm"]
        recall = np.diag(cm) / np.maximum(cm.sum(axis=1), 1)
        precision = np.diag(cm) / np.maximum(cm.sum(axis=0), 1)
        ax.bar(np.arange(NUM_CLASSES) + (2 * k) * width, recall, width, label=f"{name} recall")
        ax.bar(np.arange(NUM_CLASSES) + (2 * k + 1) * width, precision, width, alpha=0.6,
               label=f"{name} precision")
    ax.set_xticks(np.arange(NUM_CLASSES) + 1.5 * width,
                  [f"{c}\n{n}" for c, n in zip(CLASS_SHORT, CLASS_NAMES)])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("per class")
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(f"{res['tag']}: per-class recall and precision")
    fig.tight_layout()
    fig.savefig(out_dir / "recall.png", dpi=100)
    plt.close(fig)


def report_md(res: dict, data_desc: str, n_beats: int) -> str:
    info = res["info"]
    lines = [f"# {res['tag']}", "", f"Evaluated on **{data_desc}**, {n_beats} beats.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for name, p in res["points"].items():
        m = p["metrics"]
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.4f}" for c in COLUMNS[1:]) + " |")
    for name, p in res["points"].items():
        lines += ["", f"Confusion matrix, {name} (rows true, columns predicted: "
                  f"{' '.join(CLASS_SHORT)}):", "", "```"]
        lines += ["  ".join(f"{v:>6d}" for v in row) for row in p["cm"]] + ["```"]
    field = {name: p["field"] for name, p in res["points"].items() if "field" in p}
    if field:
        lines += ["", "## As the patient-level literature reports it", "",
                  f"Se (recall), +P (precision) and F1 per class; 95% intervals from "
                  f"bootstrapping its {res['n_records']} records (patients), not beats:", "",
                  field_table(field)]
    offsets = ", ".join(f"{CLASS_SHORT[c]} {v:+.2f}" for c, v in enumerate(info.get(
        "offsets", [0] * 5)))
    lines += [
        "", "## Recall-first operating point", "",
        f"`@recall` adds per-class offsets to the logits ({offsets}), fitted on the "
        f"{info.get('offsets_fit', {}).get('on', 'valid')} split to maximise macro F-beta "
        "(beta = 2). Reported on the same valid split, these figures are optimistic: "
        "see `raytasks evaluate --split test` for held-out figures.",
        "", "## Provenance", "",
        f"- architecture `{info['arch']}`, {info.get('params', '?')} parameters, "
        f"{res['size_bytes'] / 1e6:.2f} MB; inference {res['beats_per_s']:.0f} beats/s here",
        f"- model config: `{json.dumps(info['model'])}`",
        f"- training: `{json.dumps(info.get('train', {}))}`",
        f"- best epoch {info.get('epoch')}; valid metrics at export: "
        + ", ".join(f"{k} {v:.4f}" for k, v in info.get("valid_metrics", {}).items()
                    if k in METRIC_NAMES),
        f"- data: scheme `{info.get('data', {}).get('scheme')}`, params "
        f"`{json.dumps(info.get('data', {}).get('params'))}`",
        f"- run: {info.get('source') or 'n/a'}; exported {info.get('exported')}",
    ]
    return "\n".join(lines) + "\n"


def table(rows: pd.DataFrame) -> str:
    cols = ["modeltag", "Accuracy", "F1scoremacro", "Recallmacro", OBJECTIVE] + RECALL_NAMES
    return rows[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}")


def evaluate(model_dirs: list[Path], x, y, data_desc: str, out: Path,
             context=None) -> pd.DataFrame:
    """Evaluate, then write output.csv (atomically) and per-model plots/reports under out.

    Models that cannot read the data (RR features or recording context it lacks) are
    skipped with one line each; a broken model or no readable model at all stops everything.
    """
    if len(x) == 0:
        raise DataError(f"{data_desc}: no beats to evaluate")
    # any failure: nothing written
    results, skipped = [], []
    for d in model_dirs:
        try:
            results.append(evaluate_model(d, x, y, data_desc, context))
        except Skip as e:
            skipped.append(f"skipped {Path(d).name}: {e}")
    if not results:
        raise DataError("no model can read this data: " + "; ".join(skipped))
    for line in skipped:
        print(line)
    results.sort(key=lambda r: -max(p["metrics"][OBJECTIVE] for p in r["points"].values()))
    rows = pd.DataFrame([{"modeltag": name, **{c: p["metrics"][c] for c in COLUMNS[1:]}}
                         for r in results for name, p in r["points"].items()], columns=COLUMNS)
    out.mkdir(parents=True, exist_ok=True)
    for r in results:
        model_out = out / r["tag"]
        model_out.mkdir(exist_ok=True)
        plot_model(r, model_out)
        (model_out / "report.md").write_text(report_md(r, data_desc, len(y)))
    tmp = out / f".output.csv.tmp-{os.getpid()}"
    rows.to_csv(tmp, index=False)
    tmp.replace(out / "output.csv")
    for r in results:
        print(f"{r['tag']}: {r['beats_per_s']:.0f} beats/s, {r['size_bytes'] / 1e6:.2f} MB")
    return rows


def calibrate(model_dir: Path, processed: Path, target_recall: float | None = None) -> dict:
    """Refit a model's recall-first offsets on the valid split of its own scheme."""
    from raytasks.data.stream import load_split, split_files
    from raytasks.metrics import fit_offsets
    from raytasks.train import load_model, predict_logits

    model, info = load_model(model_dir)
    scheme = info.get("data", {}).get("scheme") or "intra"
    files = split_files(Path(processed) / scheme, "valid")
    x, y = load_split(files, rr=model.input_width > BEAT_LEN)
    offsets = fit_offsets(predict_logits(model, x), y, target_recall=target_recall)
    info["offsets"] = offsets.tolist()
    info["offsets_fit"] = {"on": "valid", "scheme": scheme,
                           "objective": (f"macro precision with sick-class recall >= "
                                         f"{target_recall}" if target_recall else OBJECTIVE)}
    tmp = Path(model_dir) / "model.json.tmp"
    tmp.write_text(json.dumps(info, indent=2))
    tmp.replace(Path(model_dir) / "model.json")
    return info
