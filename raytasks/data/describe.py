"""What the hackathon's first notebook did: class counts per split, example beats, balance."""

import json
from pathlib import Path

import numpy as np

from raytasks.data import (
    BEAT_LEN,
    CLASS_NAMES,
    CLASS_SHORT,
    FS,
    NUM_CLASSES,
    DataError,
    scheme_path,
)


def built_schemes(processed: Path) -> dict[str, dict]:
    """{scheme: build.json} for every scheme built (or imported) under `processed`."""
    metas = {}
    for meta_path in sorted(Path(processed).glob("*/build.json")):
        metas[meta_path.parent.name] = json.loads(meta_path.read_text())
    if not metas:
        raise DataError(f"{processed}: nothing built yet; run `raytasks data build`")
    return metas


def percent_table(metas: dict[str, dict]) -> str:
    """Counts and percentages per class, split and scheme."""
    head = f"{'scheme':<10}{'split':<7}{'rows':>8}  " + "".join(
        f"{s + ' (' + n[:4] + ')':>18}" for s, n in zip(CLASS_SHORT, CLASS_NAMES)
    )
    lines = [head, "-" * len(head)]
    for scheme, meta in metas.items():
        for split, info in meta["splits"].items():
            cc = np.asarray(info["class_counts"])
            cells = "".join(f"{v:>10} {percent(v, cc.sum()):>6} " for v in cc)
            lines.append(f"{scheme:<10}{split:<7}{cc.sum():>8}  {cells}")
    return "\n".join(lines)


def significant(v: float, digits: int = 2) -> int:
    """Decimals that keep `digits` significant digits of 0 < v < 1: 0.001 -> 4 (0.0010)."""
    return digits - 1 - int(np.floor(np.log10(v)))


def percent(count: int, total: int) -> str:
    """A share in percent with the digits it needs: 2 significant digits below 1% (50 of
    18,126 is 0.28%, not 0.0%; 1 of 100,000 is 0.0010%), 1 decimal above."""
    v = 100 * count / max(total, 1)
    if count and round(v, significant(v)) < 1:
        return f"{v:.{significant(v)}f}%"
    return "0%" if count == 0 else f"{v:.1f}%"


def plot_examples(
    processed: Path, scheme: str, out: Path, per_class: int = 12, seed: int = 0
) -> Path:
    """A panel per class with `per_class` train beats overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from raytasks.data.stream import load_split, split_files

    x, y = load_split(split_files(scheme_path(processed, scheme), "train")[:1])
    rng = np.random.default_rng(seed)
    t = np.arange(BEAT_LEN) / FS
    fig, axes = plt.subplots(1, NUM_CLASSES, figsize=(18, 3.4), sharey=True)
    for c, ax in enumerate(axes):
        rows = np.flatnonzero(y == c)
        pick = rows[rng.permutation(len(rows))[:per_class]]
        for r in pick:
            ax.plot(t, x[r].astype(float), lw=0.8, alpha=0.6)
        ax.set_title(f"{c} {CLASS_NAMES[c]} ({len(pick)} shown)")
        ax.set_xlabel("s from R-peak")
    axes[0].set_ylabel("normalised amplitude")
    fig.suptitle(f"Example beats per class — {scheme} train")
    fig.tight_layout()
    path = out / f"beats_{scheme}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_balance(metas: dict[str, dict], out: Path) -> Path:
    """Class counts per split (log scale), one panel per scheme."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metas), figsize=(6 * len(metas), 3.8), squeeze=False)
    for ax, (scheme, meta) in zip(axes[0], metas.items()):
        splits = list(meta["splits"])
        width = 0.8 / len(splits)
        for i, split in enumerate(splits):
            cc = np.asarray(meta["splits"][split]["class_counts"])
            # a class with no beats draws no bar (log scale: 0 has no height), only a 0
            xs = np.arange(NUM_CLASSES) + i * width
            ax.bar(xs[cc > 0], cc[cc > 0], width, label=split, color=f"C{i}")
            for x_ in xs[cc == 0]:
                ax.text(x_, 1, "0", ha="center", va="bottom", fontsize=8, color=f"C{i}")
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.8)
        ax.set_xticks(np.arange(NUM_CLASSES) + 0.4 - width / 2, CLASS_SHORT)
        ax.set_title(f"class balance — {scheme}")
        ax.set_ylabel("beats (log)")
        ax.legend()
    fig.tight_layout()
    path = out / "class_balance.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def describe(processed: Path, out: Path) -> tuple[str, list[Path]]:
    metas = built_schemes(processed)
    out.mkdir(parents=True, exist_ok=True)
    plots = [plot_balance(metas, out)]
    plots += [plot_examples(processed, s, out) for s in metas]
    return percent_table(metas), plots
