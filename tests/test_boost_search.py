"""Boosted trees searched by Ray Tune: the space, a trial's fold-by-fold CV reports, and a
tiny real search whose best trial exports a model that evaluates like any other."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from raytasks.cli import main
from raytasks.core.metrics import OBJECTIVE, compute_metrics
from raytasks.training import boost
from raytasks.training.settings import TrainConfigError
from raytasks.tune.search import SearchError, SearchRequest, check_boost, run_settings
from raytasks.tune.spaces import SpaceError, load_space, trial_settings

TINY_SPACE = """
arch = "boost"
[fixed]
folds = 2
step = 6
[space]
weight_power = { dist = "uniform", low = 0.3, high = 1.0 }
[space.model]
max_iter = { dist = "qrandint", low = 10, high = 20, q = 5 }
max_leaf_nodes = { dist = "choice", values = [7, 15] }
"""


@pytest.fixture
def tiny_space(tmp_path):
    path = tmp_path / "boosty.toml"
    path.write_text(TINY_SPACE)
    return path


def test_the_shipped_boost_space_loads_and_its_point_is_valid_settings():
    space = load_space("boost")
    assert space.boost
    a = space.archs["boost"]
    point = {**a.points[0], "arch": "boost"}
    settings = run_settings(space, point, {"data": "data/processed/inter", "seed": 0})
    assert isinstance(settings, boost.BoostSettings)
    assert settings.folds == 5
    assert settings.hgb["learning_rate"] == 0.05
    assert settings.hgb["weight_power"] == 0.5
    groups = ["beat", "rr", "pace", "template", "rhythm"]
    assert settings.params == {"step": 3, "groups": groups, "rhythm_beats": 33}
    without = run_settings(space, {**point, "groups": "beat,rr,pace,template"}, {"seed": 0})
    assert without.params == {"step": 3, "groups": groups[:-1]}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            'max_depth = { dist = "choice", values = [3] }',
            "unknown field 'max_depth' for architecture boost",
        ),
        (
            'max_features = { dist = "choice", values = [2.0] }',
            "boost.max_features must be in [0.05",
        ),
    ],
)
def test_a_bad_tree_field_is_refused_at_its_line(tmp_path, line, message):
    path = tmp_path / "bad.toml"
    path.write_text(
        TINY_SPACE.replace('max_leaf_nodes = { dist = "choice", values = [7, 15] }', line)
    )
    with pytest.raises(SpaceError, match=r"bad\.toml:\d+") as e:
        load_space(str(path))
    assert message in str(e.value)


def test_bad_boost_settings_are_refused(tmp_path):
    with pytest.raises(TrainConfigError, match="groups must be comma-separated"):
        boost.BoostSettings.from_dict({"groups": "beat,heart"})
    with pytest.raises(TrainConfigError, match="unknown boost setting"):
        boost.BoostSettings.from_dict({"lr": 0.1})
    with pytest.raises(TrainConfigError, match="rhythm_beats"):
        boost.BoostSettings.from_dict({"groups": "beat,rhythm", "rhythm_beats": 1})
    path = tmp_path / "mixed.toml"
    path.write_text('archs = ["gru", "boost"]\n')
    with pytest.raises(SpaceError, match="boost is searched by a space of its own"):
        load_space(str(path))


def test_a_search_that_would_cut_every_trial_before_its_last_fold_is_refused(tiny_space):
    space = load_space(str(tiny_space))
    check_boost(SearchRequest(str(tiny_space), max_epochs=2, grace=1), space)
    with pytest.raises(SearchError, match="--max-epochs 1 would stop every trial"):
        check_boost(SearchRequest(str(tiny_space), max_epochs=1, grace=1), space)
    with pytest.raises(SearchError, match="--workers"):
        check_boost(SearchRequest(str(tiny_space), max_epochs=2, grace=1, workers=2), space)


def test_a_trial_reports_each_fold_and_its_last_report_is_the_whole_cv(processed):
    settings = boost.BoostSettings.from_dict(
        {"data": str(processed / "inter"), "folds": 2, "step": 6, "model": {"max_iter": 10}}
    )
    reports = []

    def report(metrics, oof_dir):
        oof = None if oof_dir is None else np.load(f"{oof_dir}/oof.npy")
        reports.append((metrics, oof))

    boost.search_trial(settings, report)
    assert [m["epoch"] for m, _ in reports] == [1, 2]
    assert reports[0][1] is None, "only the last fold carries the out-of-fold logits"
    features, y, records = boost.features_of(settings)
    assert reports[0][0]["cv_beats"] < len(y) == reports[1][0]["cv_beats"]
    # the last report is the plain leave-records-out CV of the same settings
    oof = boost.cross_validate(features, y, records, settings.hgb, 2, settings.seed)
    np.testing.assert_allclose(reports[1][1], oof)
    assert reports[1][0][OBJECTIVE] == pytest.approx(compute_metrics(y, oof.argmax(1))[OBJECTIVE])


def test_a_tiny_boost_search_lands_in_the_leaderboard_and_exports(
    ray_cluster, tune_env, tiny_space
):
    from raytasks.tune.search import run

    tmp_path = tune_env
    req = SearchRequest(
        str(tiny_space),
        samples=4,
        max_epochs=2,
        grace=1,
        scheme="inter",
        export=True,
        wandb=True,
    )
    outcome = run(req)
    assert not outcome.grid.errors
    board = pd.read_csv(tmp_path / "results" / "leaderboard.csv")
    assert len(board) == 4
    assert set(board["arch"]) == {"boost"}
    assert set(board["scheme"]) == {"inter"}
    full = board[board["epochs"] == 2]
    assert len(full) >= 1
    assert {json.loads(c)["model"]["max_leaf_nodes"] for c in board["config"]} <= {7, 15}
    model_dir = tmp_path / "models" / "alice-boosty"
    info = json.loads((model_dir / "model.json").read_text())
    assert info["arch"] == "trees"
    assert info["record_features"]["step"] == 6
    # the exported model is the best full-CV trial's settings, fitted on all of train+valid
    best = full.loc[full[OBJECTIVE].idxmax()]
    assert info["train"]["hgb"]["max_iter"] == json.loads(best["config"])["model"]["max_iter"]
    assert info["valid_metrics"][OBJECTIVE] == pytest.approx(best[OBJECTIVE])
    res = CliRunner().invoke(main, ["evaluate", "--model", str(model_dir), "--split", "test"])
    assert res.exit_code == 0, res.output
    assert "alice-boosty" in res.output
    settings = trial_settings(load_space(str(tiny_space)), json.loads(best["config"]) | {})
    assert settings["arch"] == "boost"
