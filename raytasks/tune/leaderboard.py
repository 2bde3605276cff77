"""Leaderboard rows of searches: one per trial, merged across a team, printed and plotted.

A row holds a trial's best epoch (by its search's metric) with every metric, the search's
data scheme and max epochs (a trial with fewer epochs was cut by ASHA) and its settings as
JSON. Rankings use the search's own metric (the objective, macro F2, unless the search chose
another) and stay within a group: a scheme, and how the trial was scored, on the valid split
or by leave-records-out CV (boosted trees, `tune --cv-folds`; group "inter cv"). Intra and
inter figures are not comparable, nor a valid split's three records and CV over DS1. Rows
written before the scheme column have scheme "?".
"""

import fcntl
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from raytasks.core.constants import utc_iso
from raytasks.core.metrics import METRIC_NAMES, OBJECTIVE, RECALL_NAMES
from raytasks.core.storage import merge_rows
from raytasks.data import CLASS_SHORT, NUM_CLASSES
from raytasks.tune.spaces import trial_settings

COLUMNS = [
    "dev",
    "experiment",
    "trial_id",
    "scheme",
    "arch",
    "epochs",
    "max_epochs",
    "best_epoch",
    "metric",
    *METRIC_NAMES,
    *RECALL_NAMES,
    "config",
    "finished",
]
TABLE = ["scheme", "arch", "epochs", "F1scoremacro", "Recallmacro", OBJECTIVE, "TP_1", "TP_3"]


def rows_of(grid, dev: str, experiment: str, space, search: dict):
    """One row per trial that reported: its best epoch's metrics and its settings.
    `search`: the search's scheme, metric and max_epochs (a CV search's: its folds), and
    for a CV search `cv` (its folds and each fold's epochs)."""
    metric = search["metric"]
    rows = []
    for result in grid:
        df = result.metrics_dataframe
        if df is None or df.empty or metric not in df:
            continue
        # with the epochs and folds of a CV search (its trials' own settings hold neither)
        settings = trial_settings(space, result.config) | (search.get("cv") or {})
        # boosted trees and CV trials report CV folds: the last report holds every fold,
        # an earlier one only some of the records (not a better model)
        cv = space.boost or search.get("cv")
        best = df.iloc[-1] if cv else df.loc[df[metric].idxmax()]
        rows.append(
            {
                "dev": dev,
                "experiment": experiment,
                "trial_id": best.get("trial_id"),
                "scheme": search["scheme"],
                "arch": settings["arch"],
                "epochs": int(df["training_iteration"].max()),
                "max_epochs": search["max_epochs"],
                "best_epoch": int(best["epoch"]),
                "metric": metric,
                **{m: float(best[m]) for m in METRIC_NAMES + RECALL_NAMES if m in best},
                "config": json.dumps(settings, default=list),
                "finished": utc_iso(),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def ranking_metric(board: pd.DataFrame) -> str:
    """The searches' own metric when they share one, else the objective."""
    metrics = set(board["metric"].dropna()) if "metric" in board else set()
    return metrics.pop() if len(metrics) == 1 and metrics <= set(board) else OBJECTIVE


def cut(board: pd.DataFrame) -> pd.Series:
    """Trials ASHA stopped before their search's max epochs (unknown max: not cut)."""
    if "max_epochs" not in board:
        return pd.Series(False, index=board.index)
    return board["epochs"] < pd.to_numeric(board["max_epochs"], errors="coerce").fillna(0)


def sync(rows: pd.DataFrame, results: Path) -> pd.DataFrame:
    """Merge rows into results/leaderboard.csv (one row per experiment and trial; rows
    already there stay) and redraw leaderboard.png. Under a file lock, written atomically:
    several searches on this machine may finish at once."""
    path = results / "leaderboard.csv"
    results.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = pd.read_csv(path) if path.exists() and path.stat().st_size else pd.DataFrame()
        board = merge_rows(old, rows)
        if board.empty:
            return board
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        board.to_csv(tmp, index=False)
        os.replace(tmp, path)
        plot(path, results / "leaderboard.png")
    return board


def with_scheme(board: pd.DataFrame) -> pd.DataFrame:
    """Rows from before the scheme column: scheme "?" (ranked apart, never mixed in); and
    each row's ranking `group`: its scheme, + " cv" when CV scored it (not the valid split)."""
    scheme = board["scheme"] if "scheme" in board else pd.Series(index=board.index, dtype=object)
    scheme = scheme.fillna("?").astype(str)
    config = board["config"].fillna("").astype(str) if "config" in board else ""
    cv = (board["arch"] == "boost") | pd.Series(config, index=board.index).str.contains(
        '"cv_folds"'
    )
    return board.assign(scheme=scheme, group=scheme + np.where(cv, " cv", ""))


def ranked(board: pd.DataFrame, metric: str) -> pd.DataFrame:
    """By group (the one with most rows first, "?" last), then best first within it."""
    size = board["group"].map(board["group"].value_counts())
    keys = board.assign(_old=board["scheme"] == "?", _n=-size)
    return keys.sort_values(
        ["_old", "_n", "group", metric], ascending=[True, True, True, False]
    ).drop(columns=["_old", "_n"])


def best_per_arch(board: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The best row of each architecture within each group, ranked within the group."""
    board = with_scheme(board)
    return ranked(board.loc[board.groupby(["group", "arch"])[metric].idxmax()], metric)


def plot(path: Path, out: Path, split: str = "valid") -> None:
    """Per scheme and architecture: its best full trial (blue) and best cut trial (gray)
    by the ranking metric, and the best full trials' per-class recall; the title names
    the metric, scheme(s), split and dev(s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    board = with_scheme(pd.read_csv(path))
    metric = ranking_metric(board)
    board = board.assign(cut=cut(board).to_numpy())
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 4.5), gridspec_kw={"width_ratios": [1, 2]})
    bars = pd.concat(
        [
            best_per_arch(board[board["cut"] == c], metric)
            for c in (False, True)
            if (board["cut"] == c).any()
        ]
    )
    bars = ranked(bars, metric)
    many = bars["group"].nunique() > 1  # name each bar's group only when they differ
    plot_best(ax1, bars, metric, split, many)
    plot_recall(ax2, bars[~bars["cut"]] if (~bars["cut"]).any() else bars, split, many)
    fig.suptitle(title(board, metric, split))
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_best(ax, bars: pd.DataFrame, metric: str, split: str, many: bool) -> None:
    """Each bar's best trial by the metric, gray when ASHA cut it early."""
    labels = [
        f"{r.arch}{f' {r.group}' if many else ''} ({r.dev}){' cut' if r.cut else ''}"
        for r in bars.itertuples()
    ]
    ax.barh(labels, bars[metric], color=["tab:gray" if c else "tab:blue" for c in bars["cut"]])
    for y, r in enumerate(bars.itertuples()):
        value = getattr(r, metric)
        ax.text(value, y, f" {value:.3f} ({r.epochs} ep)", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.15)
    ax.set_xlabel(f"best {metric} ({split}; a cv group: CV); gray: cut early by ASHA")


def plot_recall(ax, full: pd.DataFrame, split: str, many: bool) -> None:
    """The per-class recall of each architecture's best full trial, side by side."""
    width = 0.8 / max(len(full), 1)
    for i, r in enumerate(full.itertuples()):
        ax.bar(
            np.arange(NUM_CLASSES) + i * width,
            [getattr(r, f"TP_{c}") for c in range(NUM_CLASSES)],
            width,
            label=f"{r.arch}{f' {r.group}' if many else ''} ({r.dev})",
        )
    ax.set_xticks(np.arange(NUM_CLASSES) + 0.4 - width / 2, CLASS_SHORT)
    ax.set_ylim(0, 1.3)  # headroom: the legend sits above the bars, hiding none
    ax.set_ylabel(f"recall of that trial ({split}; a cv group: CV)")
    ax.legend(fontsize=8, ncol=4, loc="upper left")


def title(board: pd.DataFrame, metric: str, split: str) -> str:
    searches, devs = board["experiment"].nunique(), sorted(board["dev"].astype(str).unique())
    groups = sorted(with_scheme(board)["group"].unique())
    return (
        f"leaderboard by {metric} on {', '.join(groups)} ({split} unless cv; "
        f"ranked within each): {len(board)} trials "
        f"({int(board['cut'].sum())} cut early), {searches} "
        f"search{'es' * (searches != 1)}, dev{'s' * (len(devs) != 1)} {', '.join(devs)}"
    )


def best_table(rows: pd.DataFrame, metric: str) -> str:
    """The best trial of each architecture, by the search's metric."""
    if rows.empty:
        return "no trial reported a result"
    cols = ["trial_id"] + TABLE + ([metric] if metric not in TABLE else [])
    full = rows[~cut(rows)]
    cv = set(rows["arch"]) == {"boost"} or rows["config"].str.contains('"cv_folds"').all()
    if cv and not full.empty:
        rows = full  # a CV trial's early rows score some records only, not a better model
    return best_per_arch(rows, metric)[cols].to_string(
        index=False, float_format=lambda v: f"{v:.4f}"
    )


def board_table(board: pd.DataFrame, top: int) -> str:
    if board.empty:
        return "no leaderboard rows yet"
    metric = ranking_metric(board)
    board = with_scheme(board)
    best = ranked(board.assign(cut=np.where(cut(board), "cut", "")), metric)
    best = best.groupby("group", sort=False).head(top)
    cols = ["dev", "experiment", "group"] + TABLE[1:] + ([metric] if metric not in TABLE else [])
    header = f"ranked by {metric} within each scheme, valid split or CV (top {top} of each)\n"
    return header + best[[*cols, "cut"]].to_string(index=False, float_format=lambda v: f"{v:.4f}")
