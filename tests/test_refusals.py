"""Refusals that happen before Ray starts (Ray's start is stubbed to raise: a refusal that
reached it would fail differently), and the choice of predict's default model."""

import json
import shutil

import pytest
from click.testing import CliRunner

from raytasks.cli import main
from raytasks.data import DataError
from raytasks.tune.search import SearchError, SearchRequest, check_cluster
from tests.conftest import ROOT


@pytest.fixture
def no_ray(monkeypatch, processed, tmp_path):
    import ray

    def refuse(*a, **kw):
        raise AssertionError("Ray was started before the refusal")

    monkeypatch.setattr(ray, "init", refuse)
    for k, v in {
        "RAYTASKS_DEV": "alice",
        "RAYTASKS_PROCESSED": str(processed),
        "RAYTASKS_STORAGE": str(tmp_path / "storage"),
    }.items():
        monkeypatch.setenv(k, v)


def tune(*args):
    return CliRunner().invoke(main, ["tune", "--space", "cnn1d", "--no-wandb", *args])


def test_grace_longer_than_the_epochs_is_refused(no_ray, tmp_path):
    res = tune("--grace", "5", "--max-epochs", "2")
    assert res.exit_code == 1, res.output
    assert "--grace must not exceed --max-epochs" in res.output
    assert not (tmp_path / "storage").exists()  # nothing written for a refused search


@pytest.mark.parametrize("budget", ["0", "-30"])
def test_time_budget_must_be_positive(no_ray, budget):
    res = tune("--time-budget", budget)
    assert res.exit_code == 2, res.output
    assert "--time-budget" in res.output, res.output


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        (SearchRequest("cnn1d", concurrency=3, cpus_per_trial=0.5), "--cpus-per-trial: 3 trials"),
        (SearchRequest("cnn1d", concurrency=1, workers=2, cpus_per_trial=1.0), "2 worker(s)"),
        (SearchRequest("cnn1d", concurrency=1, gpus_per_trial=0.5), "--gpus-per-trial"),
    ],
)
def test_oversubscribed_cluster_refused(monkeypatch, request_, needle):
    import ray

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    with pytest.raises(SearchError) as err:
        check_cluster(request_)
    assert needle in str(err.value)


def test_a_search_that_fits_passes_the_check(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    check_cluster(SearchRequest("cnn1d", concurrency=2, cpus_per_trial=0.5))  # 1 CPU left


def shipped(dest, name, f2):
    """A copy of a shipped model folder, its valid F2 set to `f2`."""
    shutil.copytree(ROOT / "models" / name, dest / name)
    info = json.loads((dest / name / "model.json").read_text())
    info["valid_metrics"]["F2scoremacro"] = f2
    (dest / name / "model.json").write_text(json.dumps(info))


def test_predict_default_model_is_the_best_valid_f2(tmp_path):
    from raytasks.recordings.predict import default_model

    shipped(tmp_path, "resnet1d-intra", 0.5)
    shipped(tmp_path, "ensemble-intra", 0.7)
    assert default_model(tmp_path).name == "ensemble-intra"
    # a broken model.json is passed over, not fatal
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.json").write_text("{not json")
    shipped(tmp_path, "cnn2d-intra-rr", 0.6)
    assert default_model(tmp_path).name == "ensemble-intra"
    # beat-only input: models reading RR features are not candidates
    assert default_model(tmp_path, rr=False).name == "resnet1d-intra"
    with pytest.raises(DataError, match="no exported model"):
        default_model(tmp_path / "broken")


@pytest.mark.parametrize(
    ("new", "old"), [(["job", "list"], ["jobs"]), (["job", "submit", "--space", "gru"], ["submit"])]
)
def test_job_group_runs_the_top_level_commands(monkeypatch, tmp_path, new, old):
    """`raytasks job list|submit|...` (named as `ray job` names them) are the same commands as
    the top-level ones: the same refusal, word for word, before anything is contacted."""
    (tmp_path / "none.toml").write_text("")
    monkeypatch.setenv("RAYTASKS_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.delenv("RAYTASKS_DEV", raising=False)
    env = {"RAYTASKS_PORT": "http"} if "list" in new else {}
    args = old + new[2:] if len(new) > 2 else old
    got, want = (CliRunner().invoke(main, a, env=env) for a in (new, args))
    assert got.exit_code == want.exit_code == 1, got.output
    assert got.output.replace("raytasks job list", "raytasks jobs") == want.output


def test_score_reads_atr_through_the_build_s_checks(mitdb, tmp_path):
    """`raytasks score` (and predict --peaks atr) read .atr files with the data build's reader:
    a truncated file is one error naming it, not a silently shorter reference."""
    from raytasks.recordings.score import read_annotations

    whole = read_annotations(mitdb, "100")
    assert len(whole[0]) == 2273  # the record's beats (PhysioNet: 2,273 in 100.atr)
    (tmp_path / "100.atr").write_bytes((mitdb / "100.atr").read_bytes()[:2000])
    with pytest.raises(DataError, match=r"100\.atr: truncated or empty"):
        read_annotations(tmp_path, "100")
