"""make run's evaluation on a real slice with a tiny model trained here."""

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from click.testing import CliRunner
from sklearn.metrics import recall_score

from raytasks.cli import main
from raytasks.core.metrics import fbeta_macro, fit_offsets
from raytasks.data import FEATURES
from raytasks.data.stream import load_split, split_files
from raytasks.models import saved
from tests.conftest import read_shards, train_tiny, use_models

COLUMNS = [
    "modeltag",
    "Accuracy",
    "F1scoremicro",
    "F1scoremacro",
    "Precisionmacro",
    "Recallmacro",
    "F2scoremacro",
    "TP_0",
    "TP_1",
    "TP_2",
    "TP_3",
    "TP_4",
]


@pytest.fixture(scope="module")
def models_dir(ray_cluster, processed, tmp_path_factory):
    """One tiny cnn1d trained for 2 epochs in-process, exported like `raytasks train`."""
    root = tmp_path_factory.mktemp("models")
    cfg = {
        "arch": "cnn1d",
        "model": {"channels": [8, 16]},
        "data": str(processed / "intra"),
        "epochs": 2,
        "batch_size": 128,
        "balance": 0.5,
    }
    train_tiny(cfg, root / "tiny-intra")
    return root


@pytest.fixture
def env(monkeypatch, processed, models_dir, tmp_path):
    use_models(monkeypatch, models_dir, processed, tmp_path / "results")
    return tmp_path / "results"


def run(*args):
    return CliRunner().invoke(main, ["evaluate", *args])


def test_output_csv_columns_and_recalls_match_sklearn(env, processed, models_dir):
    res = run()
    assert res.exit_code == 0, res.output
    rows = pd.read_csv(env / "output.csv")
    assert rows.columns.tolist() == COLUMNS
    assert rows["modeltag"].tolist() in (
        ["tiny-intra", "tiny-intra@recall"],
        ["tiny-intra@recall", "tiny-intra"],
    )
    model, info = saved.load_model(models_dir / "tiny-intra")
    x, y = load_split(split_files(processed / "intra", "valid"))
    logits = saved.predict_logits(model, x)
    present = sorted(set(y))
    for tag, off in (("tiny-intra", 0.0), ("tiny-intra@recall", np.array(info["offsets"]))):
        row = rows.set_index("modeltag").loc[tag]
        expected = recall_score(y, (logits + off).argmax(1), labels=present, average=None)
        np.testing.assert_allclose([row[f"TP_{c}"] for c in present], expected, atol=1e-9)
    # offsets were fitted on valid: on valid they cannot be worse than argmax
    row = rows.set_index("modeltag")
    assert row.loc["tiny-intra@recall", "F2scoremacro"] >= row.loc["tiny-intra", "F2scoremacro"]
    for name in ("confusion.png", "recall.png"):
        png = (env / "tiny-intra" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(png) > 5000
    report = (env / "tiny-intra" / "report.md").read_text()
    assert "optimistic" in report
    assert "intra/valid" in report


def test_offsets_never_lower_fbeta_where_fitted(processed):
    rng = np.random.default_rng(0)
    _, y = load_split(split_files(processed / "intra", "valid"))
    for trial in range(3):
        # logits of a mediocre, majority-biased classifier
        logits = rng.normal(size=(len(y), 5)) + 2.0 * np.eye(5)[y] * rng.random((len(y), 1))
        logits[:, 0] += 1.0 + trial
        off = fit_offsets(logits, y)
        assert fbeta_macro(y, logits, off) >= fbeta_macro(y, logits, np.zeros(5))
        assert off[0] == 0
    assert fbeta_macro(y, logits, off) > fbeta_macro(y, logits, np.zeros(5))  # and it helps
    # a recall target: reachable with a stronger (but still 0-biased) classifier
    logits = rng.normal(size=(len(y), 5)) + 4.0 * np.eye(5)[y]
    logits[:, 0] += 2.5
    assert min((logits.argmax(1)[y == c] == c).mean() for c in set(y) - {0}) < 0.9
    strict = fit_offsets(logits, y, target_recall=0.9)
    pred = (logits + strict).argmax(1)
    for c in sorted(set(y) - {0}):
        assert (pred[y == c] == c).mean() >= 0.9


def assert_rows_match(rows: pd.DataFrame, model_dir, x, y):
    """output.csv's rows of a model against scikit-learn on the model's own predictions."""
    from sklearn.metrics import accuracy_score

    model, info = saved.load_model(model_dir)
    logits = saved.predict_logits(model, x[:, : model.input_width])
    present = sorted(set(y))
    for tag, off in ((model_dir.name, 0.0), (f"{model_dir.name}@recall", info["offsets"])):
        row = rows.set_index("modeltag").loc[tag]
        pred = (logits + np.asarray(off)).argmax(1)
        assert row["Accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-9)
        expected = recall_score(y, pred, labels=present, average=None)
        np.testing.assert_allclose([row[f"TP_{c}"] for c in present], expected, atol=1e-9)


def test_test_split_goes_to_its_own_folder(env, processed, models_dir):
    res = run("--split", "test")
    assert res.exit_code == 0, res.output
    assert (env / "test" / "output.csv").exists()
    assert not (env / "output.csv").exists()
    # and it holds the test split's figures, not valid's
    x, y = load_split(split_files(processed / "intra", "test"))
    assert_rows_match(pd.read_csv(env / "test" / "output.csv"), models_dir / "tiny-intra", x, y)


def test_scheme_inter_evaluates_on_inter_valid(env, processed, models_dir):
    """--scheme inter reads inter's valid split (whole records 118...); an intra model is
    skipped there unless named with --model."""
    res = run("--scheme", "inter", "--model", str(models_dir / "tiny-intra"))
    assert res.exit_code == 0, res.output
    assert "inter/valid" in (env / "selected" / "tiny-intra" / "report.md").read_text()
    x, y = load_split(split_files(processed / "inter", "valid"))
    assert_rows_match(pd.read_csv(env / "selected" / "output.csv"), models_dir / "tiny-intra", x, y)
    res = run("--scheme", "inter")  # every shipped model here is an intra one
    assert res.exit_code == 1, res.output
    assert "skipping models trained on another scheme: tiny-intra" in res.output, res.output
    assert "no model in models/ was trained on 'inter'" in res.output, res.output


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_bad_model_fails_cleanly_and_keeps_output(env, models_dir, tmp_path, damage):
    assert run().exit_code == 0
    before = (env / "output.csv").read_bytes()
    bad = tmp_path / "bad-model"
    shutil.copytree(models_dir / "tiny-intra", bad)
    if damage == "corrupt":
        (bad / "model.pt").write_bytes(b"not a torch file" * 10)
    else:
        (bad / "model.pt").unlink()
    res = run("--model", str(models_dir / "tiny-intra"), "--model", str(bad), "--out", str(env))
    assert res.exit_code != 0
    assert "bad-model" in res.output
    assert isinstance(res.exception, SystemExit), res.exception  # one line, no traceback
    assert (env / "output.csv").read_bytes() == before


def test_model_flag_never_replaces_the_shipped_table(env, models_dir):
    """The README's `raytasks evaluate --model models/x` once cut output.csv to that model."""
    assert run().exit_code == 0
    before = snapshot(env)
    res = run("--model", str(models_dir / "tiny-intra"))
    assert res.exit_code == 0, res.output
    after = snapshot(env)
    changed = sorted(k for k in after if before.get(k) != after[k])
    assert changed, changed
    assert all(k.startswith("selected/") for k in changed), changed
    assert {k: after[k] for k in before} == before
    assert len(pd.read_csv(env / "selected" / "output.csv")) == 2


def test_unwritable_output_changes_nothing(env):
    """output.csv cannot be replaced (here: a folder stands in its place): no report or plot
    may change either, and the error is one line naming it."""
    assert run().exit_code == 0
    (env / "output.csv").unlink()
    (env / "output.csv").mkdir()
    (env / "output.csv" / "keep").write_text("x")
    before = snapshot(env)
    res = run()
    assert res.exit_code == 1, res.output
    assert isinstance(res.exception, SystemExit), res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1, res.output
    assert "output.csv" in errors[0], res.output
    assert snapshot(env) == before


def test_data_reads_hackathon_parquet(env, processed, models_dir, tmp_path):
    frame = read_shards(sorted((processed / "intra" / "test").glob("*.parquet")))
    hack = frame[FEATURES].astype("float64")
    hack["target"] = frame["target"].astype("float64")
    hack.to_parquet(tmp_path / "heart_big_valid.parq")
    res = run("--file", str(tmp_path / "heart_big_valid.parq"))
    assert res.exit_code == 0, res.output
    rows = pd.read_csv(env / "external" / "output.csv")
    assert rows.columns.tolist() == COLUMNS
    assert len(rows) == 2
    assert f"{len(hack)} beats" in res.output
    # the file's beats and labels, not some other data, gave the figures
    assert_rows_match(
        rows,
        models_dir / "tiny-intra",
        hack[FEATURES].to_numpy(np.float32),
        hack["target"].to_numpy(np.int64),
    )
    # a parquet with the wrong schema is refused
    hack.drop(columns=["target"]).to_parquet(tmp_path / "bad.parq")
    res = run("--file", str(tmp_path / "bad.parq"))
    assert res.exit_code != 0
    assert "bad.parq" in res.output


def test_records_dir_is_preprocessed_like_training(env, mitdb, models_dir, tmp_path):
    """--records gives the model exactly the beats a training build of those records holds,
    labelled as the .atr file says."""
    from raytasks.data import RR_FEATURES
    from raytasks.data.build import build
    from tests.atr import read_atr
    from tests.conftest import copy_records

    recs = copy_records(tmp_path / "other", ["100"])
    res = run("--records", str(recs))
    assert res.exit_code == 0, res.output
    assert "records" in res.output
    rows = pd.read_csv(env / "external" / "output.csv")
    build(recs, tmp_path / "built", ("intra",), progress=False)
    shards = read_shards(sorted((tmp_path / "built" / "intra").rglob("*.parquet")))
    shards = shards.sort_values("sample").reset_index(drop=True)
    samples, classes = read_atr(recs / "100.atr")
    np.testing.assert_array_equal(shards["sample"], samples)
    np.testing.assert_array_equal(shards["target"], classes)
    x = shards[FEATURES + RR_FEATURES].to_numpy(np.float32)
    assert_rows_match(rows, models_dir / "tiny-intra", x, classes)


def snapshot(root) -> dict:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def keep_mtime(path, change):
    """Change a file's bytes but not its timestamps (a cache keyed on them would be stale)."""
    st = path.stat()
    change(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_warm_run_is_byte_identical_and_never_stale(
    env, processed, models_dir, tmp_path, monkeypatch
):
    import pyarrow.parquet as pq
    import torch

    from raytasks.evaluation import evaluate

    data = tmp_path / "p"
    shutil.copytree(processed / "intra", data / "intra")
    model = tmp_path / "m" / "tiny-intra"
    shutil.copytree(models_dir / "tiny-intra", model)
    monkeypatch.setenv("RAYTASKS_PROCESSED", str(data))
    assert run("--model", str(model), "--out", str(env)).exit_code == 0
    cold = snapshot(env)
    assert len(list((data / ".cache" / "evaluate").iterdir())) == 1

    def fresh():  # what a run without the cache writes
        res = run("--model", str(model), "--no-cache", "--out", str(tmp_path / "fresh"))
        assert res.exit_code == 0, res.output
        return (tmp_path / "fresh" / "output.csv").read_bytes()

    with monkeypatch.context() as m:  # warm: nothing is recomputed, every byte the same
        m.setattr(evaluate, "evaluate_model", lambda *a: 1 / 0)
        res = run("--model", str(model), "--out", str(env))
        assert res.exit_code == 0, res.output
    assert snapshot(env) == cold
    assert fresh() == cold["output.csv"]

    def shift_bias(path):  # the last layer now favours class 0: other predictions
        state = torch.load(path, weights_only=True)
        bias = [k for k, v in state.items() if v.shape == (5,)][-1]
        state[bias] += torch.tensor([6.0, 0, 0, 0, 0])
        torch.save(state, path)

    keep_mtime(model / "model.pt", shift_bias)
    assert run("--model", str(model), "--out", str(env)).exit_code == 0
    changed = (env / "output.csv").read_bytes()
    assert changed != cold["output.csv"]
    assert changed == fresh()

    def relabel(path):  # some valid labels change: the data's content, not its size
        table = pq.read_table(path)
        y = table.column("target").to_numpy().copy()
        y[:40] = (y[:40] + 1) % 5
        pq.write_table(
            table.set_column(table.schema.get_field_index("target"), "target", pa.array(y)), path
        )

    keep_mtime(sorted((data / "intra" / "valid").glob("*.parquet"))[0], relabel)
    assert run("--model", str(model), "--out", str(env)).exit_code == 0
    relabelled = (env / "output.csv").read_bytes()
    assert relabelled != changed
    assert relabelled == fresh()


def test_cache_keeps_an_entry_a_concurrent_run_wrote_meanwhile(
    processed, models_dir, tmp_path, monkeypatch
):
    """Two runs missing the same entry: the one finishing second keeps the first one's
    folder (a reader may be copying from it) instead of swapping it out, and reads it."""
    from raytasks.evaluation import evaluate

    x, y, desc, context = evaluate.load_eval_data(processed, "intra", "valid")
    store, model = tmp_path / "cache", models_dir / "tiny-intra"
    first = evaluate.model_result(model, x, y, desc, store, "key", context)
    twin = tmp_path / "twin"
    shutil.copytree(first["files"], twin)
    shutil.rmtree(first["files"])
    computed = evaluate.evaluate_model

    def racing(*args, **kwargs):  # the other run renames its entry in while we compute
        r = computed(*args, **kwargs)
        shutil.copytree(twin, first["files"])
        (first["files"] / "result.json").write_text(
            (twin / "result.json").read_text().replace('"tag"', '"twin": 1, "tag"')
        )
        return r

    monkeypatch.setattr(evaluate, "evaluate_model", racing)
    again = evaluate.model_result(model, x, y, desc, store, "key", context)
    assert again["files"] == first["files"]  # the twin's, kept
    assert again.get("twin") == 1
    assert [p.name for p in store.iterdir()] == [first["files"].name]  # ours dropped


def hackathon_file(processed, path, n=None):
    """A hackathon-format parquet (187 float columns + target, nothing else) from built shards."""
    frame = read_shards(sorted((processed / "intra" / "test").glob("*.parquet")))
    hack = frame[FEATURES].astype("float64").assign(target=frame["target"].astype("float64"))
    hack.iloc[:n].to_parquet(path)
    return path


def test_hackathon_file_evaluates_readable_shipped_models_and_lists_the_rest(
    env, processed, tmp_path, monkeypatch
):
    """Every shipped model that reads the beat alone is evaluated; each that needs RR columns
    (or a recording's context) is skipped with one line naming it and why."""
    import json

    shipped = Path(__file__).resolve().parents[1] / "models"
    monkeypatch.setenv("RAYTASKS_MODELS", str(shipped))
    data = hackathon_file(processed, tmp_path / "heart_big_valid.parq", n=300)
    res = run("--file", str(data))
    assert res.exit_code == 0, res.exception or res.output
    infos = {
        d.name: json.loads((d / "model.json").read_text())
        for d in sorted(shipped.glob("*/model.json"))
        for d in [d.parent]
    }
    needs_rr = {
        t
        for t, i in infos.items()
        if i.get("rr")
        or (
            i["arch"] == "ensemble"
            and any(
                json.loads((shipped / t / "members" / m / "model.json").read_text()).get("rr")
                for m in i["members"]
            )
        )
    }
    assert needs_rr  # the check below must be able to fail
    assert needs_rr != set(infos)
    evaluated = {
        t.removesuffix("@recall") for t in pd.read_csv(env / "external" / "output.csv")["modeltag"]
    }
    assert evaluated == set(infos) - needs_rr
    skipped = [ln for ln in res.output.splitlines() if ln.startswith("skipped ")]
    assert sorted(ln.split()[1].rstrip(":") for ln in skipped) == sorted(needs_rr)
    assert all("RR-interval" in ln or "recording" in ln for ln in skipped)


def test_evaluation_imports_no_ray():
    """Evaluating needs no cluster: importing evaluate, predict (and the saved-model module
    they read models with) must not import Ray, nor torch (imported where a model is
    built or run: `raytasks evaluate --help` or a refusal need neither)."""
    import subprocess
    import sys

    code = (
        "import sys, raytasks.evaluation.evaluate, raytasks.models.saved, "
        "raytasks.models.ensemble, raytasks.recordings.predict; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'torch')))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_calibrate_refits_offsets_on_the_model_s_scheme(env, processed, models_dir, tmp_path):
    """`raytasks calibrate --target-recall R`: offsets that bring the sick classes' recall
    closer to R on its scheme's valid split (checked with scikit-learn), recorded in a
    model.json of the current schema; the weights and every other field stay as they were."""
    model_dir = tmp_path / "tiny-copy"
    shutil.copytree(models_dir / "tiny-intra", model_dir)
    before = saved.read_info(model_dir)
    weights = (model_dir / "model.pt").read_bytes()
    res = CliRunner().invoke(
        main, ["calibrate", "--model", str(model_dir), "--target-recall", "0.6"]
    )
    assert res.exit_code == 0, res.output
    assert res.exception is None, res.output
    info = saved.read_info(model_dir)
    assert info["schema"] == saved.SCHEMA
    assert info["offsets"] != before["offsets"]
    assert info["offsets_fit"] == {
        "on": "valid",
        "scheme": "intra",
        "objective": "macro precision with sick-class recall >= 0.6",
    }
    assert {k: v for k, v in info.items() if not k.startswith("offsets")} == {
        k: v for k, v in before.items() if not k.startswith("offsets")
    }
    assert (model_dir / "model.pt").read_bytes() == weights
    model, _ = saved.load_model(model_dir)
    x, y = load_split(split_files(processed / "intra", "valid"))
    logits = saved.predict_logits(model, x)
    sick = sorted(set(y) - {0})

    def shortfall(off):  # how far the sick classes' recalls fall below the target
        recall = recall_score(y, (logits + off).argmax(1), labels=sick, average=None)
        return np.maximum(0.6 - recall, 0).sum()

    assert shortfall(np.asarray(info["offsets"])) < shortfall(np.zeros(5))
    # fitted on this model's predictions of intra's valid split (not some other data)
    np.testing.assert_allclose(info["offsets"], fit_offsets(logits, y, target_recall=0.6))
    assert f"tiny-copy: offsets {info['offsets'][0]:+.2f}" in res.output


def test_progress_line_prints_a_model_s_rows_as_it_finishes():
    from raytasks.core.metrics import OBJECTIVE, RECALL_NAMES
    from raytasks.evaluation.evaluate import progress_line

    def point(f2, recalls):
        return {"metrics": {OBJECTIVE: f2, **dict(zip(RECALL_NAMES, recalls))}}

    r = {
        "points": {
            "cnn1d-intra": point(0.81234, [0.99, 0.5, 0.9, 0.25, 1.0]),
            "cnn1d-intra@recall": point(0.85, [0.98, 0.7, 0.91, 0.5, 1.0]),
        }
    }
    assert progress_line(2, 5, r, 3.14159) == (
        f"[2/5] cnn1d-intra {OBJECTIVE} 0.8123 recall 0.99/0.50/0.90/0.25/1.00; "
        f"cnn1d-intra@recall {OBJECTIVE} 0.8500 recall 0.98/0.70/0.91/0.50/1.00 (3.1 s)"
    )


def test_confusion_titles_name_the_split_and_scheme(processed, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from raytasks.evaluation.evaluate import load_eval_data, plot_confusion

    class KeepFigure:  # pyplot, keeping the figure to read its titles back
        def subplots(self, *args, **kwargs):
            self.fig, axes = plt.subplots(*args, **kwargs)
            return self.fig, axes

        def close(self, fig):
            plt.close(fig)

    _, y, desc, _ = load_eval_data(processed, "inter", "test")
    cm = np.diag(np.bincount(y, minlength=5)).astype(float)
    cm[0, 1], cm[0, 0] = 1, 1999  # 1 of 2,000 N beats read as S: 0.00050, not 0.00
    keep = KeepFigure()
    plot_confusion(keep, [("m", {"cm": cm})], tmp_path / "c.png", desc)
    titles = [ax.get_title() for ax in keep.fig.axes]
    assert titles == [f"m: counts on {desc}", f"m: row-normalised (recall) on {desc}"]
    assert desc.startswith("inter/test ")
    texts = {t.get_text() for t in keep.fig.axes[1].texts}
    assert "0.00050" in texts
    assert "1.00" in texts
    assert (tmp_path / "c.png").stat().st_size > 10_000
