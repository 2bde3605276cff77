"""A tiny real search on a slice: HyperOpt + ASHA, leaderboard, W&B offline, export, resume.

The first search writes to a pyarrow SubTreeFileSystem (not the local default), the resumed
one to a local storage folder: both kinds of `storage` carry a whole search."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from raytasks.cli import main
from tests.conftest import ROOT


def test_tiny_search_asha_hyperopt_leaderboard_wandb_export(ray_cluster, tune_env, monkeypatch):
    import pyarrow.fs as pafs

    from raytasks.core.storage import Storage
    from raytasks.tune.search import SearchRequest, run

    (tune_env / "team").mkdir()
    store = Storage(
        pafs.SubTreeFileSystem(str(tune_env / "team"), pafs.LocalFileSystem()), "shared"
    )
    request = SearchRequest(
        "all",
        archs=["gru", "cnn1d"],
        samples=4,
        max_epochs=3,
        grace=1,
        metric="F2scoremacro",
        export=True,
    )
    grid = run(request, store=store).grid
    assert len(grid) == 4
    assert not grid.errors
    iterations = [r.metrics["training_iteration"] for r in grid]
    assert min(iterations) < 3, f"ASHA stopped no trial early: {iterations}"
    # the two known-good points first, then HyperOpt's own proposals (new values)
    configs = [r.config["trial"] for r in grid]
    assert {c["arch"] for c in configs} == {"gru", "cnn1d"}
    assert len({round(c["lr"], 6) for c in configs}) >= 3
    board = pd.read_csv(tune_env / "results" / "leaderboard.csv")
    assert len(board) == 4
    assert set(board["dev"]) == {"alice"}
    assert board["experiment"].str.match(r"alice-all-\d{8}T\d{6}Z").all()
    assert (tune_env / "results" / "leaderboard.png").stat().st_size > 10_000
    # everything of the search under <storage>/alice/ on the SubTreeFileSystem
    mine = tune_env / "team" / "shared" / "alice"
    exp = board["experiment"][0]
    assert (mine / "runs" / exp / "search.json").exists()
    assert len(pd.read_csv(mine / "results" / exp / "leaderboard.csv")) == 4
    assert (mine / "results" / exp / "leaderboard.png").stat().st_size > 10_000
    job = json.loads((mine / "results" / exp / "job.json").read_text())
    assert sorted(job["models"]) == ["alice-all", "alice-all-cnn1d", "alice-all-gru"]
    assert (mine / "models" / "alice-all" / "model.pt").exists()
    runs = list((tune_env / "wandb").glob("offline-run-*"))
    # one W&B run per trial, and the exported best's run resumed for its artifact and plot
    assert len(runs) == 5, runs
    # the exported best trial evaluates like any trained model
    model_dir = tune_env / "models" / "alice-all"
    info = json.loads((model_dir / "model.json").read_text())
    assert info["arch"] in ("gru", "cnn1d")
    res = CliRunner().invoke(main, ["evaluate", "--model", str(model_dir)])
    assert res.exit_code == 0, res.output
    assert "alice-all@recall" in res.output
    # and each architecture's best ships beside it: the overall best is one of them
    per_arch = {
        a: json.loads((tune_env / "models" / f"alice-all-{a}" / "model.json").read_text())
        for a in ("gru", "cnn1d")
    }
    assert {i["arch"] for i in per_arch.values()} == {"gru", "cnn1d"}
    for arch, i in per_arch.items():
        arch_rows = board[board["arch"] == arch]
        assert i["valid_metrics"]["F2scoremacro"] == pytest.approx(arch_rows["F2scoremacro"].max())
    assert info["valid_metrics"]["F2scoremacro"] == pytest.approx(board["F2scoremacro"].max())

    # --export-only exports the same from the finished search without training anything
    monkeypatch.setenv("RAYTASKS_MODELS", str(tune_env / "models-again"))
    again_request = SearchRequest(
        "all",
        archs=["gru", "cnn1d"],
        samples=4,
        max_epochs=9,
        grace=1,
        metric="F2scoremacro",
        wandb=False,
        export_only=True,
    )
    written = run(again_request, store=store).exported
    assert sorted(p.name for p in written) == ["alice-all", "alice-all-cnn1d", "alice-all-gru"]
    again = json.loads((written[0] / "model.json").read_text())
    assert again["valid_metrics"] == info["valid_metrics"]
    assert again["train"]["epochs"] == 3  # the search's own setting, not this call's flag

    # --archs on an export: that architecture's best only, as the overall export
    monkeypatch.setenv("RAYTASKS_MODELS", str(tune_env / "models-cnn1d"))
    only = run(
        SearchRequest("all", archs=["cnn1d"], wandb=False, export_only=True), store=store
    ).exported
    assert [p.name for p in only] == ["alice-all"]
    cnn1d = json.loads((only[0] / "model.json").read_text())
    assert cnn1d["arch"] == "cnn1d"
    assert cnn1d["valid_metrics"] == per_arch["cnn1d"]["valid_metrics"]

    # --retrain-epochs: each exported best's settings trained anew for that many epochs
    monkeypatch.setenv("RAYTASKS_MODELS", str(tune_env / "models-retrained"))
    retrained = run(
        SearchRequest(
            "all", archs=["gru", "cnn1d"], wandb=False, export_only=True, retrain_epochs=1
        ),
        store=store,
    ).exported
    for path in retrained:
        new, old = (
            json.loads((d / "model.json").read_text()) for d in (path, model_dir.parent / path.name)
        )
        assert new["train"]["epochs"] == 1  # the search's trials ran 3
        assert {k: new["train"][k] for k in ("lr", "batch_size")} == {
            k: old["train"][k] for k in ("lr", "batch_size")
        }
        assert ", retrained: " in new["source"]
        assert "retrain-" in new["source"].split("retrained: ")[1]
        assert new["epoch"] == 0

    # retraining again is a run of its own, not a resumption of the one before
    retrained_dir = {p.name: json.loads((p / "model.json").read_text()) for p in retrained}
    monkeypatch.setenv("RAYTASKS_MODELS", str(tune_env / "models-retrained-again"))
    again = run(
        SearchRequest(
            "all", archs=["cnn1d"], wandb=False, export_only=True, retrain_epochs=1, threads=2
        ),
        store=store,
    ).exported
    info = json.loads((again[0] / "model.json").read_text())

    def run_of(i: dict) -> Path:  # the retraining run's folder, from the model's source
        return Path(i["source"].split("retrained: ")[1]).parent

    assert run_of(info) != run_of(retrained_dir["alice-all-cnn1d"])
    assert (info["train"]["epochs"], info["epoch"]) == (1, 0)
    # --threads: this call's torch threads, not the search's (recorded with the model)
    assert info["train"]["threads"] == 2
    assert retrained_dir["alice-all-cnn1d"]["train"]["threads"] == 0


def test_retrain_requests_that_cannot_run_are_refused():
    from raytasks.tune.search import SearchError, SearchRequest, check_retrain
    from raytasks.tune.spaces import load_space

    check_retrain(SearchRequest("cnn1d", export=True, retrain_epochs=5), load_space("cnn1d"))
    for req, space, needle in (
        (SearchRequest("cnn1d", retrain_epochs=5), "cnn1d", "--export"),
        (SearchRequest("boost", export=True, retrain_epochs=5), "boost", "no epochs"),
        (SearchRequest("cnn1d", export=True, retrain_epochs=5, workers=2), "cnn1d", "--workers"),
    ):
        with pytest.raises(SearchError, match=needle):
            check_retrain(req, load_space(space))


def trial_states(exp_dir: Path) -> dict:
    states = sorted(exp_dir.glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
    except json.JSONDecodeError:
        return {}
    out = {}
    for entry in data["trial_data"]:
        t = json.loads(entry[0] if isinstance(entry, list) else entry)
        out[t["trial_id"]] = t["status"]
    return out


@pytest.mark.ray  # its search runs in a subprocess
def test_resume_after_kill_skips_finished_trials(tune_env):
    cmd = [
        sys.executable,
        "-m",
        "raytasks.tune",
        "--space",
        "cnn1d",
        "--samples",
        "3",
        "--max-epochs",
        "1",
        "--grace",
        "1",
        "--concurrency",
        "1",
        "--no-wandb",
    ]
    # Tune saves its experiment state at most every 10 s: each second, so the kill below
    # follows the first finished trial closely
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    env.pop("RAY_ADDRESS", None)
    with open(tune_env / "first.log", "w") as log:  # the child keeps its own copy
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    runs = tune_env / "storage" / "alice" / "runs"
    done = {}
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        exps = list(runs.glob("alice-cnn1d-*"))
        done = {k for k, v in (trial_states(exps[0]) if exps else {}).items() if v == "TERMINATED"}
        if done:
            break
        time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert done, (tune_env / "first.log").read_text()[-3000:]
    exp_dir = next(runs.glob("alice-cnn1d-*"))
    finished = next(exp_dir.glob(f"*{sorted(done)[0]}*"))
    rows_before = (finished / "result.json").read_text()

    res = subprocess.run(
        [*cmd, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"resuming {exp_dir}" in res.stdout
    states = trial_states(exp_dir)
    assert len(states) == 3, states
    assert set(states.values()) == {"TERMINATED"}, states
    assert (finished / "result.json").read_text() == rows_before  # not run again
    board = pd.read_csv(tune_env / "results" / "leaderboard.csv")
    assert len(board) == 3
    assert set(board["experiment"]) == {exp_dir.name}


def test_trial_its_trainer_and_a_streamed_split_share_two_cpus(ray_cluster, tune_env, monkeypatch):
    """A Tune trial (its sliver of CPU), its TorchTrainer's two workers and the read tasks
    of a split streamed from its shards, all on the 2 CPUs of this test's Ray: it ends."""
    from raytasks.data import stream
    from raytasks.tune.search import SearchRequest, run

    monkeypatch.setattr(stream, "MATERIALIZE_SHARE", 0.0)  # too big to hold: stream it

    def hung(*_):
        raise TimeoutError("the search hung: trial + trainer + stream starved 2 CPUs")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(300)
    try:
        grid = run(
            SearchRequest(
                "cnn1d",
                samples=1,
                max_epochs=2,
                grace=1,
                concurrency=1,
                workers=2,
                cpus_per_trial=0.5,
                wandb=False,
            )
        ).grid
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert len(grid) == 1
    assert not grid.errors
    assert grid[0].metrics["training_iteration"] == 2


def test_a_time_budget_search_with_wandb_ends_soon_after_its_budget(ray_cluster, tune_env):
    """Trials the budget cuts get no log_trial_end: their W&B runs used to wait for an end
    that never came, and the search for them, 30 min (Ray's upload_timeout) before its
    leaderboard and exports."""
    from raytasks.tune.search import SearchRequest, run

    def hung(*_):
        raise TimeoutError("the search waited for the W&B runs of the trials the budget cut")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(240)
    start = time.monotonic()
    try:
        outcome = run(
            SearchRequest(
                "cnn1d", samples=6, max_epochs=40, grace=40, time_budget=25, concurrency=2
            )
        )
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert time.monotonic() - start < 200
    cut = [r for r in outcome.grid if r.metrics.get("training_iteration", 0) < 40]
    assert cut, "the budget cut no trial"
    assert len(list((tune_env / "wandb").glob("offline-run-*"))) >= len(outcome.rows)


def test_the_live_table_sorts_only_trials_that_reported(tune_env):
    """A --time-budget can end trials before their first report: the last table of the search
    must not sort them (Ray's sort raised TypeError there and the search recorded nothing)."""
    from types import SimpleNamespace

    from ray.tune.progress_reporter import _get_progress_table_data

    from raytasks.tune.search import SearchRequest, all_reported, plan, reporter

    def trial(i, status, result):
        return SimpleNamespace(
            status=status,
            last_result=result,
            trial_id=f"t{i}",
            config={},
            evaluated_params={},
            location=None,
            local_experiment_path=None,
            error_file=None,
        )

    cut = [trial(i, "TERMINATED", {}) for i in range(2)]
    done = [trial(2, "TERMINATED", {"F2scoremacro": 0.5})]
    with pytest.raises(TypeError):  # what Ray does with them when told to sort
        _get_progress_table_data(
            cut, ["F2scoremacro"], [], metric="F2scoremacro", mode="max", sort_by_metric=True
        )
    assert not all_reported(cut + done, "F2scoremacro")
    assert all_reported(done, "F2scoremacro")
    table = reporter(plan(SearchRequest("cnn1d")))
    table._progress_str = lambda *a, **kw: ""  # what it would print is Ray's business
    table.report(cut + done, True)
    assert table._sort_by_metric is False
