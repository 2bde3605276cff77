"""Leaderboard rows, ranking and plot titles on made-up trial results (no Ray): ranked by
the search's metric within a scheme, cut trials apart, and a --resume recording the saved
search (search.json), not the flags it was resumed with."""

from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from raytasks.core.metrics import METRIC_NAMES, RECALL_NAMES
from raytasks.tune import leaderboard as lb
from raytasks.tune.spaces import load_space


def result(arch: str, values: list[float], trial_id: str):
    """A trial's result as Tune hands it over: its metrics per epoch and its config."""
    df = pd.DataFrame(
        [
            {m: v for m in METRIC_NAMES + RECALL_NAMES}
            | {"epoch": i + 1, "training_iteration": i + 1, "trial_id": trial_id}
            for i, v in enumerate(values)
        ]
    )
    return SimpleNamespace(
        metrics_dataframe=df,
        config={"trial": {"arch": arch, "lr": 1e-3, "aug_shift": 2, "model.hidden": 64}},
    )


def board(tmp_path: Path) -> pd.DataFrame:
    space = load_space("all")
    intra = lb.rows_of(
        [
            result("gru", [0.5, 0.7], "a1"),
            result("cnn1d", [0.6], "a2"),
            result("cnn1d", [0.55, 0.65], "a3"),
        ],
        "alice",
        "alice-all-1",
        space,
        {"scheme": "intra", "metric": "F2scoremacro", "max_epochs": 2},
    )
    inter = lb.rows_of(
        [result("gru", [0.3, 0.4], "b1")],
        "bob",
        "bob-all-1",
        space,
        {"scheme": "inter", "metric": "F2scoremacro", "max_epochs": 2},
    )
    old = intra.head(1).drop(columns=["scheme"]).assign(experiment="old-1", F2scoremacro=0.99)
    return lb.sync(pd.concat([intra, inter]), tmp_path).pipe(
        lambda b: lb.sync(old, tmp_path)
    )  # a row from before the scheme column merges


def test_rows_rank_within_a_scheme_and_keep_cut_trials_apart(tmp_path):
    merged = board(tmp_path)
    assert len(merged) == 5
    assert set(lb.with_scheme(merged)["scheme"]) == {"intra", "inter", "?"}
    assert lb.cut(merged).tolist().count(True) == 1  # cnn1d a2 stopped after 1 of 2 epochs
    text = lb.board_table(merged, top=2)
    assert text.startswith("ranked by F2scoremacro within each scheme")
    lines = text.splitlines()[2:]
    schemes = [line.split()[2] for line in lines]
    # intra (most rows) first, best first inside it; the 0.99 of the old row is not mixed in
    assert schemes == ["intra", "intra", "inter", "?"]
    assert "0.7000" in lines[0]
    assert "cut" not in lines[0]
    best = lb.best_per_arch(lb.with_scheme(merged), "F2scoremacro")
    assert [(r.scheme, r.arch) for r in best.itertuples()][:2] == [
        ("intra", "gru"),
        ("intra", "cnn1d"),
    ]
    title = lb.title(lb.with_scheme(merged).assign(cut=lb.cut(merged)), "F2scoremacro", "valid")
    assert title.startswith("leaderboard by F2scoremacro on ?, inter, intra (valid unless cv")
    assert "5 trials (1 cut early), 3 searches, devs alice, bob" in title
    assert (tmp_path / "leaderboard.png").stat().st_size > 10_000


def test_cv_scored_rows_rank_apart_from_valid_rows(tmp_path):
    """A trial scored by leave-records-out CV (--cv-folds, boosted trees) is not ranked
    against one scored on the valid split, even where its figure is higher."""
    space = load_space("all")
    cv = lb.rows_of(
        [result("cnn1d", [0.9], "c1"), result("gru", [0.2], "c2")],
        "carol",
        "carol-adaptive-1",
        space,
        {"scheme": "inter", "metric": "F2scoremacro", "max_epochs": 1}
        | {"cv": {"cv_folds": 3, "epochs": 6}},
    )
    merged = lb.sync(pd.concat([board(tmp_path), cv]), tmp_path)
    groups = lb.with_scheme(merged).set_index("trial_id")["group"]
    assert groups["c1"] == "inter cv"
    assert groups["b1"] == "inter"
    lines = lb.board_table(merged, top=5).splitlines()[2:]
    rows = [(line.split()[2] + (" cv" if line.split()[3] == "cv" else "")) for line in lines]
    # the bigger group first; the CV rows (0.9 among them) after the valid-split inter row
    assert rows == ["intra", "intra", "intra", "inter cv", "inter cv", "inter", "?"]
    best = lb.best_per_arch(merged, "F2scoremacro")
    assert set(best[best["arch"] == "gru"]["group"]) == {"intra", "inter", "inter cv", "?"}


def test_record_uses_the_saved_search_not_the_resume_flags(capsys):
    from raytasks.tune.search import Plan, SearchRequest, record

    space = load_space("cnn1d")
    req = SearchRequest("cnn1d", metric="Recallmacro", max_epochs=9, scheme="inter")
    p = Plan(req, space, {"scheme": "inter"}, "alice", None, "alice-cnn1d-1", Path("x"))
    saved = {"data": "/d/processed/intra", "epochs": 3, "metric": "F2scoremacro"}
    grid = [result("cnn1d", [0.2, 0.8, 0.1], "t1"), result("cnn1d", [0.5], "t2")]
    rows = record(p, grid, saved)
    assert set(rows["metric"]) == {"F2scoremacro"}
    assert set(rows["max_epochs"]) == {3}
    assert set(rows["scheme"]) == {"intra"}
    assert rows.set_index("trial_id").loc["t1", "best_epoch"] == 2
    assert lb.cut(rows).tolist() == [False, True]  # 3 and 1 of the saved 3 (the flag: 9)
    assert "by F2scoremacro" in capsys.readouterr().out
