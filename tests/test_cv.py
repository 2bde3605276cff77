"""Leave-records-out CV of a network as the Tune objective (`raytasks tune --cv-folds`): the
folds are boost's, a fold never trains on its own records, each report pools the beats held
out so far, and a tiny real search records its CV row and exports its settings retrained."""

import json
import zlib

import numpy as np
import pandas as pd
import pytest

from raytasks.core.metrics import OBJECTIVE, compute_metrics
from raytasks.data.stream import epoch_batches, open_split
from raytasks.training import boost
from raytasks.training.cv import cross_validate, cv_folds, cv_split, fold_data, open_cv_dataset
from raytasks.training.settings import TrainSettings
from raytasks.tune.search import SearchError, SearchRequest, check_cv
from raytasks.tune.spaces import load_space

TINY = {"arch": "cnn1d", "epochs": 1, "batch_size": 128, "model": {"channels": [8, 16]}}


@pytest.fixture
def settings(processed):
    return TrainSettings.from_dict(TINY | {"data": str(processed / "inter")})


def test_the_folds_are_boost_s_and_a_fold_never_draws_its_own_records(
    ray_cluster, processed, settings
):
    split = cv_split(processed / "inter", settings)
    folds = cv_folds(split, 2, settings.seed)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(split.y)))
    for held in folds:  # whole records: no record on both sides
        assert not set(split.records[held]) & set(np.delete(split.records, held))
    # boost's folds, on the same rows (raytasks boost reads train + valid in this order)
    _, y, context = boost.load_dir(processed / "inter")
    records = context["record"].to_numpy()
    got = [sorted(set(split.records[h])) for h in folds]
    want = [sorted(set(records[h])) for h, _ in _boost_folds(y, records, settings.seed)]
    assert got == want
    ds = open_split(split.files, seed=0, log=lambda _: None)
    for held in folds:
        data = fold_data(split, held, settings)
        out = {zlib.crc32(r.encode()) for r in set(split.records[held])}
        seen = set()
        for block in ds.iter_batches(batch_size=None, batch_format="numpy"):
            seen |= set((block["key"].view(np.uint64) >> np.uint64(32)).tolist())
        assert out <= seen  # the stream holds the held-out rows ...
        drawn = np.concatenate(
            [
                b["y"].numpy()
                for b in epoch_batches(
                    ds,
                    0,
                    counts=data.train_counts,
                    balance=0.5,
                    seed=0,
                    batch_size=256,
                    record_counts=data.record_counts,
                )
            ]
        )
        kept = np.isin(split.records, sorted(set(split.records) - set(split.records[held])))
        # ... and the fold draws an epoch the size of its own records' rows, none of them
        assert abs(len(drawn) - kept.sum()) < 4 * np.sqrt(kept.sum())
        assert data.train_rows == kept.sum()
        assert set(data.record_counts) == {zlib.crc32(r.encode()) for r in set(split.records[kept])}


def _boost_folds(y, records, seed):
    from sklearn.model_selection import StratifiedGroupKFold

    kfold = StratifiedGroupKFold(n_splits=2, shuffle=True, random_state=seed)
    return [(h, None) for _, h in kfold.split(np.zeros(len(y)), y, groups=records)]


def test_a_cv_trial_reports_each_fold_pooling_the_held_out_beats(ray_cluster, processed, settings):
    reports = []
    dataset = open_cv_dataset(processed / "inter", log=lambda _: None)
    cross_validate(settings, 2, dataset, lambda m, oof: reports.append((m, oof)))
    split = cv_split(processed / "inter", settings)
    assert [m["epoch"] for m, _ in reports] == [1, 2]
    assert reports[0][1] is None, "only the last fold carries the out-of-fold logits"
    assert reports[0][0]["cv_beats"] < len(split.y) == reports[1][0]["cv_beats"]
    oof = reports[1][1]
    assert oof.shape == (len(split.y), 5)
    assert (np.abs(oof).sum(axis=1) > 0).all()  # every beat predicted by a fold
    cv = compute_metrics(split.y, oof.argmax(axis=1))
    assert reports[1][0][OBJECTIVE] == pytest.approx(cv[OBJECTIVE])


def test_cv_requests_that_cannot_run_are_refused():
    space = load_space("cnn1d")
    check_cv(SearchRequest("cnn1d", cv_folds=3, grace=1), space)
    for req, needle in (
        (SearchRequest("cnn1d", cv_folds=1, grace=1), "at least 2 folds"),
        (SearchRequest("cnn1d", cv_folds=3, grace=1, workers=2), "--workers 1"),
        (SearchRequest("cnn1d", cv_folds=2, grace=3), "--grace"),
    ):
        with pytest.raises(SearchError, match=needle):
            check_cv(req, space)
    with pytest.raises(SearchError, match="boost"):
        check_cv(SearchRequest("boost", cv_folds=3, grace=1), load_space("boost"))


def test_more_folds_than_records_is_refused_before_ray_starts(tune_env):
    """The slice's inter train + valid hold 2 records (208, 118): 3 folds cannot be."""
    from raytasks.tune.search import plan

    # --grace counts folds, --max-epochs epochs per fold: grace 2 > 1 epoch is fine
    plan(SearchRequest("cnn1d", cv_folds=2, grace=2, max_epochs=1, scheme="inter"))
    with pytest.raises(SearchError, match="hold 2 record"):
        plan(SearchRequest("cnn1d", cv_folds=3, grace=1, scheme="inter"))


def test_a_tiny_cv_search_records_its_cv_and_exports_the_settings_retrained(
    ray_cluster, tune_env, tmp_path
):
    from raytasks.tune.search import run

    space = tmp_path / "tinycv.toml"
    space.write_text(
        'arch = "cnn1d"\n[fixed]\nbatch_size = 128\n[fixed.model]\nchannels = [8, 16]\n'
        '[space]\nlr = { dist = "loguniform", low = 1e-3, high = 1e-2 }\n'
    )
    req = SearchRequest(
        str(space),
        samples=1,
        max_epochs=1,
        grace=1,
        scheme="inter",
        cv_folds=2,
        export=True,
        wandb=False,
        concurrency=1,
    )
    outcome = run(req)
    assert not outcome.grid.errors
    board = pd.read_csv(tune_env / "results" / "leaderboard.csv")
    assert len(board) == 1
    assert (board["max_epochs"] == 2).all()  # a CV trial's iterations are its folds
    configs = [json.loads(c) for c in board["config"]]
    assert all(c["cv_folds"] == 2 and c["epochs"] == 1 for c in configs)
    full = board[board["epochs"] == 2]  # both folds ran
    assert len(full) == 1
    info = json.loads((tune_env / "models" / "alice-tinycv" / "model.json").read_text())
    best = json.loads(full.loc[full[OBJECTIVE].idxmax(), "config"])
    assert info["train"]["lr"] == pytest.approx(best["lr"])
    # retrained on the train split: its metrics are an epoch's on the valid split, not the CV's
    assert "cv_beats" not in info["valid_metrics"]
    assert info["valid_metrics"]["epoch"] == 0
