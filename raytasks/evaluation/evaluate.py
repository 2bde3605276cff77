"""Evaluate exported models into results/: output.csv, per-model plots and a report.

    raytasks evaluate                      # every model in models/ on intra valid (make run)
    raytasks evaluate --split test         # -> results/test/
    raytasks evaluate --file heart_big_valid.parq
    raytasks evaluate --records /path/to/wfdb/records

Each model gives two rows: `<tag>` (plain argmax) and `<tag>@recall` (its stored per-class
offsets added to the logits: the recall-first operating point). No Ray cluster is needed.
Everything is computed before anything is written, and output.csv is replaced atomically,
so a bad model or bad data leaves the previous results untouched.

A model's rows, plots and report are cached under a key made of content hashes (never
timestamps) of the model's files, the evaluation data (the very arrays it is fed) and this
package's code: a warm `make run` copies them instead of recomputing, and writes exactly
what a cold run wrote; any changed byte in a model, the data or the code is a miss.
"""

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from raytasks.core.metrics import (
    METRIC_NAMES,
    OBJECTIVE,
    RECALL_NAMES,
    compute_metrics,
    confusion,
    field_table,
    record_bootstrap,
    se_ppv,
)
from raytasks.core.paths import staged_dir, staged_files
from raytasks.data import (
    CLASS_NAMES,
    CLASS_SHORT,
    NUM_CLASSES,
    DataError,
    scheme_path,
)
from raytasks.models import saved

COLUMNS = ["modeltag", *METRIC_NAMES, *RECALL_NAMES]


def find_models(models_dir: Path) -> list[Path]:
    dirs = sorted(p.parent for p in Path(models_dir).glob(f"*/{saved.INFO}"))
    if not dirs:
        raise DataError(
            f"{models_dir}: no exported models (models/<tag>/model.json); "
            f"train one with `raytasks train`"
        )
    return dirs


def model_scheme(model_dir: Path):
    """The scheme a model was trained on (None: unknown, or unreadable: evaluate reports
    that properly)."""
    try:
        return saved.scheme_of(saved.read_info(model_dir))
    except (OSError, ValueError):
        return None


def models_for(models_dir: Path, scheme: str) -> tuple[list[Path], list[str]]:
    """(the models of `scheme` in models_dir, the names of those skipped): a model only
    meets the held-out data of the scheme it was trained on."""
    dirs = find_models(models_dir)
    skipped = [d.name for d in dirs if model_scheme(d) not in (None, scheme)]
    return [d for d in dirs if d.name not in skipped], skipped


def default_out(results: Path, split: str, external: bool, selected: bool) -> Path:
    """Where evaluate writes unless told: results/ (valid), results/test/, results/external/
    (a file or recordings); with a few chosen models, selected/ inside that, so that the
    table of every shipped model is never replaced by a few rows."""
    out = results / "external" if external else results / "test" if split == "test" else results
    return out / "selected" if selected else out


def load_eval_data(processed: Path, scheme: str, split: str, data_file=None, records=None):
    """(x, y, description, context) of the evaluation data: a built split, a file, or WFDB
    records. context holds each beat's `record` and `sample` (models that compare a beat
    with the rest of its recording need them); None for a file, which carries the beat only.
    """
    from raytasks.data.stream import has_rr, load_split, split_files

    if data_file:
        from raytasks.data import FEATURES
        from raytasks.data.imports import read_import

        frame = read_import(Path(data_file))
        return (
            frame[FEATURES].to_numpy(np.float32),
            frame["target"].to_numpy(np.int64),
            f"file {data_file}",
            None,
        )
    if records:
        from raytasks.data import FEATURES, RR_FEATURES
        from raytasks.data.beats import record_beats
        from raytasks.data.features import with_deviations
        from raytasks.data.mitdb import list_records, verify_checksums

        names = list_records(Path(records))
        verify_checksums(Path(records), names)
        frame = pd.concat([record_beats(Path(records), n) for n in names], ignore_index=True)
        x = frame[FEATURES + RR_FEATURES].to_numpy(np.float32)
        return (
            with_deviations(x, frame["record"].to_numpy(), frame["sample"].to_numpy()),
            frame["target"].to_numpy(np.int64),
            f"records {records} ({', '.join(names)})",
            frame[["record", "sample"]].reset_index(drop=True),
        )
    data_dir = scheme_path(processed, scheme)
    files = split_files(data_dir, split)
    # every model reads a prefix of x: beat, + RR features, + deviations (raytasks.nets)
    x, y = load_split(files, rr=has_rr(files), template=has_rr(files))
    # same files, same order as load_split: row i of context is beat i of x
    context = pq.ParquetDataset(files).read(columns=["record", "sample"]).to_pandas()
    return x, y, f"{scheme}/{split} ({data_dir / split})", context


class Skip(DataError):
    """A model that cannot read this data: evaluation goes on without it, saying why."""


def model_inputs(model, info: dict, x: np.ndarray, context, data_desc: str) -> np.ndarray:
    """What the model reads, from x (and context); Skip with the reason when the data lacks it."""
    from raytasks.nets.ensemble import feature_blocks

    lacks = data_desc or "the data"
    if x.shape[1] < model.input_width:
        what = "RR-interval features" + (" and the beats' records" if info.get("template") else "")
        raise Skip(
            f"reads {what}, which {lacks} lacks (hackathon/Kaggle files carry the beat only)"
        )
    if feature_blocks(model) and context is None:
        raise Skip(
            f"compares each beat with the rest of its recording (record, sample), "
            f"which {lacks} does not identify"
        )
    return saved.model_inputs(model, x, context)


def evaluate_model(
    model_dir: Path, x: np.ndarray, y: np.ndarray, data_desc: str = "", context=None
) -> dict:
    """Both operating points of one model: rows, confusion matrices, speed.

    x holds the beat and, when the data has them, its RR features; each model reads the
    columns it was trained on. Skip when the data lacks what the model reads.
    """
    model, info = saved.load_model(model_dir)
    t0 = time.perf_counter()
    logits = saved.predict_logits(model, model_inputs(model, info, x, context, data_desc))
    seconds = time.perf_counter() - t0
    offsets = saved.offsets_of(info)
    out = {
        "tag": model_dir.name,
        "info": info,
        "beats_per_s": len(x) / max(seconds, 1e-9),
        "size_bytes": sum(f.stat().st_size for f in model_dir.rglob(saved.WEIGHTS)),
        "points": {},
        "n_records": None if context is None else context["record"].nunique(),
    }
    for name, off in (
        (model_dir.name, np.zeros(NUM_CLASSES)),
        (f"{model_dir.name}@recall", offsets),
    ):
        pred = (logits + off).argmax(axis=1)
        out["points"][name] = {"metrics": compute_metrics(y, pred), "cm": confusion(y, pred)}
        if context is not None:  # the field's figures, with intervals over records
            out["points"][name]["field"] = record_bootstrap(y, pred, context["record"])
    return out


def plot_model(res: dict, out_dir: Path, where: str = "") -> None:
    """confusion.png (counts and row-normalised, both operating points) and recall.png,
    their titles naming the data they were computed on (`where`: scheme/split or file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = list(res["points"].items())
    plot_confusion(plt, points, out_dir / "confusion.png", where)
    plot_recall(plt, points, res["tag"], out_dir / "recall.png", where)


def short_desc(data_desc: str) -> str:
    """'intra/valid (/path/...)' -> 'intra/valid': what a plot title names."""
    return data_desc.split(" (")[0]


def share(v: float) -> str:
    """A share with the precision it needs: 2 significant digits below 0.01 (50 of 18,126
    is 0.0028, not 0.00), 2 decimals above."""
    from raytasks.data.describe import significant

    if v and round(v, significant(v)) < 0.01:
        return f"{v:.{significant(v)}f}"
    return "0" if v == 0 else f"{v:.2f}"


def plot_confusion_png(model_dir: Path, x, y, where: str, out_dir: Path, context=None) -> Path:
    """A model's out_dir/confusion.png on (x, y) (for W&B after an export); context: each
    beat's record and sample, which the boosted trees read."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = evaluate_model(model_dir, x, y, where, context)
    path = out_dir / "confusion.png"
    plot_confusion(plt, list(res["points"].items()), path, where)
    return path


def plot_confusion(plt, points: list, path: Path, where: str = "") -> None:
    fig, axes = plt.subplots(len(points), 2, figsize=(10, 4.3 * len(points)), squeeze=False)
    for row, (name, p) in enumerate(points):
        cm = p["cm"]
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        for ax, mat, title, fmt in (
            (axes[row, 0], cm, "counts", "{:.0f}".format),
            (axes[row, 1], norm, "row-normalised (recall)", share),
        ):
            ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
            for i in range(NUM_CLASSES):
                for j in range(NUM_CLASSES):
                    ax.text(
                        j,
                        i,
                        fmt(mat[i, j]),
                        ha="center",
                        va="center",
                        color="white" if norm[i, j] > 0.6 else "black",
                        fontsize=9,
                    )
            ax.set_xticks(range(NUM_CLASSES), CLASS_SHORT)
            ax.set_yticks(range(NUM_CLASSES), CLASS_SHORT)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.set_title(f"{name}: {title}" + (f" on {where}" if where else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_recall(plt, points: list, tag: str, path: Path, where: str = "") -> None:
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.2
    for k, (name, p) in enumerate(points):
        cm = p["cm"]
        recall, precision = se_ppv(cm)
        ax.bar(np.arange(NUM_CLASSES) + (2 * k) * width, recall, width, label=f"{name} recall")
        ax.bar(
            np.arange(NUM_CLASSES) + (2 * k + 1) * width,
            precision,
            width,
            alpha=0.6,
            label=f"{name} precision",
        )
    ax.set_xticks(
        np.arange(NUM_CLASSES) + 1.5 * width,
        [f"{c}\n{n}" for c, n in zip(CLASS_SHORT, CLASS_NAMES)],
    )
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("per class")
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(f"{tag}: per-class recall and precision" + (f" on {where}" if where else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report_md(res: dict, data_desc: str, n_beats: int) -> str:
    """results/<tag>/report.md: the metrics and confusion matrices of each operating point,
    the field's figures, what @recall means here, and where the model came from."""
    lines = [f"# {res['tag']}", "", f"Evaluated on **{data_desc}**, {n_beats} beats.", ""]
    lines += metrics_lines(res) + field_lines(res) + offsets_lines(res["info"], data_desc)
    lines += provenance_lines(res)
    return "\n".join(lines) + "\n"


def metrics_lines(res: dict) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for name, p in res["points"].items():
        m = p["metrics"]
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.4f}" for c in COLUMNS[1:]) + " |")
    for name, p in res["points"].items():
        lines += [
            "",
            f"Confusion matrix, {name} (rows true, columns predicted: {' '.join(CLASS_SHORT)}):",
            "",
            "```",
        ]
        lines += ["  ".join(f"{v:>6d}" for v in row) for row in p["cm"]] + ["```"]
    return lines


def field_lines(res: dict) -> list[str]:
    field = {name: p["field"] for name, p in res["points"].items() if "field" in p}
    if not field:
        return []
    return [
        "",
        "## As the patient-level literature reports it",
        "",
        f"Se (recall), +P (precision) and F1 per class; 95% intervals from "
        f"bootstrapping its {res['n_records']} records (patients), not beats:",
        "",
        field_table(field),
    ]


def offsets_lines(info: dict, data_desc: str) -> list[str]:
    offsets = ", ".join(
        f"{CLASS_SHORT[c]} {v:+.2f}" for c, v in enumerate(info.get("offsets", [0] * NUM_CLASSES))
    )
    return [
        "",
        "## Recall-first operating point",
        "",
        f"`@recall` adds per-class offsets to the logits ({offsets}), fitted on the "
        f"{info.get('offsets_fit', {}).get('on', 'valid')} split to maximise macro F-beta "
        "(beta = 2). "
        + (
            "Reported on the same valid split, these figures are optimistic: "
            "see `raytasks evaluate --split test` for held-out figures."
            if short_desc(data_desc).endswith("/valid")
            else f"The figures above are on {short_desc(data_desc)}, which the offsets never saw."
        ),
    ]


def provenance_lines(res: dict) -> list[str]:
    info = res["info"]
    return [
        "",
        "## Provenance",
        "",
        f"- architecture `{info['arch']}`, {info.get('params', '?')} parameters, "
        f"{res['size_bytes'] / 1e6:.2f} MB; inference {res['beats_per_s']:.0f} beats/s here",
        f"- model config: `{json.dumps(info['model'])}`",
        f"- training: `{json.dumps(info.get('train', {}))}`",
        f"- best epoch {info.get('epoch')}; valid metrics at export: "
        + ", ".join(
            f"{k} {v:.4f}" for k, v in info.get("valid_metrics", {}).items() if k in METRIC_NAMES
        ),
        f"- data: scheme `{info.get('data', {}).get('scheme')}`, params "
        f"`{json.dumps(info.get('data', {}).get('params'))}`",
        f"- run: {info.get('source') or 'n/a'}; exported {info.get('exported')}",
    ]


def table(rows: pd.DataFrame) -> str:
    cols = ["modeltag", "Accuracy", "F1scoremacro", "Recallmacro", OBJECTIVE, *RECALL_NAMES]
    return rows[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}")


ARTIFACTS = ("confusion.png", "recall.png", "report.md")


def digest(*parts: bytes) -> str:
    h = hashlib.blake2b(digest_size=20)
    for part in parts:
        h.update(len(part).to_bytes(8, "little") + part)
    return h.hexdigest()


def tree_digest(root: Path, pattern: str = "*") -> str:
    """Content hash of every file under root matching pattern (names and bytes)."""
    files = sorted(
        p for p in Path(root).rglob(pattern) if p.is_file() and "__pycache__" not in p.parts
    )
    return digest(
        *(part for p in files for part in (str(p.relative_to(root)).encode(), p.read_bytes()))
    )


def data_key(x: np.ndarray, y: np.ndarray, data_desc: str, context=None) -> str:
    """What every cached model row depends on besides the model: data (with each beat's
    record and sample: record-feature models and the record bootstrap read them), code,
    libraries."""
    import torch

    code = tree_digest(Path(__file__).parents[1], "*.py")  # the whole raytasks package
    where = (
        b""
        if context is None
        else (
            "\n".join(context["record"].astype(str)).encode()
            + context["sample"].to_numpy(np.int64).tobytes()
        )
    )
    return digest(
        np.ascontiguousarray(x).tobytes(),
        y.tobytes(),
        data_desc.encode(),
        where,
        code.encode(),
        f"{torch.__version__} {np.__version__}".encode(),
    )


def model_result(
    model_dir: Path, x, y, data_desc: str, store: Path, key: str, context=None
) -> dict:
    """One model's points, speed and size, with r["files"] the folder holding its rendered
    ARTIFACTS: from `store` when this model's files and `key` were seen before, else
    computed and rendered there (staged, then renamed into place)."""
    entry = store / digest(model_dir.name.encode(), tree_digest(model_dir).encode(), key.encode())
    if not (entry / "result.json").exists():
        r = evaluate_model(model_dir, x, y, data_desc, context)  # may Skip: nothing cached
        # content-addressed: a twin a concurrent run cached meanwhile is kept (it may be
        # being read); ours is dropped
        with staged_dir(entry, keep_existing=True) as tmp:
            plot_model(r, tmp, short_desc(data_desc))
            (tmp / "report.md").write_text(report_md(r, data_desc, len(y)))
            keep = {k: r[k] for k in ("tag", "beats_per_s", "size_bytes")} | {
                "points": {n: {"metrics": p["metrics"]} for n, p in r["points"].items()}
            }
            (tmp / "result.json").write_text(json.dumps(keep, default=float))
    r = json.loads((entry / "result.json").read_text())
    return r | {"files": entry}


def evaluate(
    model_dirs: list[Path], x, y, data_desc: str, out: Path, context=None, cache: Path | None = None
) -> pd.DataFrame:
    """Evaluate, then write per-model plots/reports and output.csv under out: all staged
    first and swapped in at the end, so any failure leaves out as it was.

    With `cache` (a folder), unchanged models are served from it (see the module docstring).
    Models that cannot read the data (RR features or recording context it lacks) are
    skipped with one line each; a broken model or no readable model at all stops everything.
    """
    if len(x) == 0:
        raise DataError(f"{data_desc}: no beats to evaluate")
    with tempfile.TemporaryDirectory() as scratch:
        store = Path(cache) if cache else Path(scratch)
        store.mkdir(parents=True, exist_ok=True)
        key = data_key(x, y, data_desc, context)
        # any failure: nothing written to out
        results, skipped = [], []
        for i, d in enumerate(model_dirs, 1):
            t0 = time.perf_counter()
            try:
                results.append(model_result(d, x, y, data_desc, store, key, context))
            except Skip as e:
                skipped.append(f"skipped {Path(d).name}: {e}")
                continue
            print(
                progress_line(i, len(model_dirs), results[-1], time.perf_counter() - t0), flush=True
            )
        if not results:
            raise DataError("no model can read this data: " + "; ".join(skipped))
        results.sort(key=lambda r: -max(p["metrics"][OBJECTIVE] for p in r["points"].values()))
        rows = pd.DataFrame(
            [
                {"modeltag": name, **{c: p["metrics"][c] for c in COLUMNS[1:]}}
                for r in results
                for name, p in r["points"].items()
            ],
            columns=COLUMNS,
        )
        write_results(results, rows, out)
    for line in skipped:
        print(line)
    for r in results:
        print(f"{r['tag']}: {r['beats_per_s']:.0f} beats/s, {r['size_bytes'] / 1e6:.2f} MB")
    return rows


def progress_line(i: int, n: int, r: dict, seconds: float) -> str:
    """[i/n] a model's rows as soon as it is done: plain and @recall objective, recalls."""
    parts = [
        f"{name} {OBJECTIVE} {p['metrics'][OBJECTIVE]:.4f} recall "
        + "/".join(f"{p['metrics'][c]:.2f}" for c in RECALL_NAMES)
        for name, p in r["points"].items()
    ]
    return f"[{i}/{n}] {'; '.join(parts)} ({seconds:.1f} s)"


def write_results(results: list[dict], rows: pd.DataFrame, out: Path) -> None:
    """Each model's plots and report into out/<tag>/, then out/output.csv: all staged and put
    in place only when every one is ready and every target writable (paths.staged_files)."""
    with staged_files(out, last=("output.csv",)) as tmp:
        for r in results:
            (tmp / r["tag"]).mkdir()
            for name in ARTIFACTS:
                shutil.copyfile(r["files"] / name, tmp / r["tag"] / name)
        rows.to_csv(tmp / "output.csv", index=False)


def calibrate(model_dir: Path, processed: Path, target_recall: float | None = None) -> dict:
    """Refit a model's recall-first offsets on the valid split of its own scheme."""
    from raytasks.core.metrics import fit_offsets

    model, info = saved.load_model(model_dir)
    scheme = saved.scheme_of(info) or "intra"
    x, y = saved.valid_split(processed, scheme, model)
    offsets = fit_offsets(saved.predict_logits(model, x), y, target_recall=target_recall)
    info = saved.with_offsets(
        info,
        offsets,
        {
            "on": "valid",
            "scheme": scheme,
            "objective": (
                f"macro precision with sick-class recall >= {target_recall}"
                if target_recall
                else OBJECTIVE
            ),
        },
    )
    saved.write_info(model_dir, info)
    return info
