"""Search spaces: every shipped file loads; every malformed one is refused before Ray."""

from pathlib import Path

import pytest
from click.testing import CliRunner
from hyperopt.pyll import stochastic

from raytasks.cli import main
from raytasks.tune.search import run_settings
from raytasks.tune.spaces import (
    SpaceError,
    hyperopt_points,
    load_space,
    to_hyperopt,
    to_tune,
    trial_settings,
)

# every file in searchspaces/ (all-rr.toml included), not a list that could miss one
SHIPPED = sorted(p.stem for p in (Path(__file__).parents[1] / "searchspaces").glob("*.toml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_spaces_sample_valid_training_configs(name):
    import numpy as np

    space = load_space(name)
    assert len(hyperopt_points(space)) == len(space.archs)  # each file has a known-good point
    rng = np.random.default_rng(0)
    archs = set()
    for _ in range(12):
        sampled = stochastic.sample(to_hyperopt(space), rng=rng)
        run_settings(space, sampled, {})  # raises on anything train (or boost) would refuse
        archs.add(trial_settings(space, sampled)["arch"])
    assert archs <= set(space.archs)
    assert (len(archs) > 1) == space.conditional


def test_single_space_maps_to_tune_distributions():
    from ray.tune.search.sample import Categorical, Float, Integer

    t = to_tune(load_space("gru"))
    assert isinstance(t["lr"], Float)
    assert isinstance(t["batch_size"], Categorical)
    assert isinstance(t["model"]["hidden"], Integer)
    with pytest.raises(SpaceError, match="conditional"):
        to_tune(load_space("all"))


BAD = {
    "unknown_dist": (
        'arch = "gru"\n[space]\nlr = { dist = "normal", low = 0, high = 1 }\n',
        ":3:",
        "unknown distribution",
    ),
    "low_gt_high": (
        'arch = "gru"\n[space]\n\nlr = { dist = "uniform", low = 2, high = 1 }\n',
        ":4:",
        "low 2 > high 1",
    ),
    "unknown_arch_field": (
        'arch = "cnn1d"\n[space.model]\nhidden = { dist = "choice", values = [1] }\n',
        ":3:",
        "unknown field 'hidden'",
    ),
    "unknown_train_field": (
        'arch = "gru"\n[space]\nlearning_rate = { dist = "uniform", low = 0, high = 1 }\n',
        ":3:",
        "learning_rate",
    ),
    "missing_arg": (
        'arch = "gru"\n[space]\nlr = { dist = "loguniform", low = 1e-3 }\n',
        ":3:",
        "missing ['high']",
    ),
    "bad_point": (
        'arch = "gru"\n[space]\nlr = { dist = "uniform", low = 1e-4, high = 1 }\n'
        "[[points_to_evaluate]]\nbatch_size = 64\n",
        ":5:",
        "does not search",
    ),
    "unknown_arch": ('arch = "vgg"\n', ":1:", "unknown architecture"),
    "shared_space_out_of_range": (
        'archs = ["gru", "cnn1d"]\n[space]\n'
        'record_balance = { dist = "uniform", low = 0.0, high = 2.0 }\n',
        ":3:",
        "record_balance",
    ),
    "shared_space_unknown": (
        'archs = ["gru", "cnn1d"]\n\n[space]\nhidden = { dist = "choice", values = [1] }\n',
        ":4:",
        "unknown or unsearchable",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_space_refused_naming_the_line(case, tmp_path, monkeypatch):
    text, line, needle = BAD[case]
    path = tmp_path / f"{case}.toml"
    path.write_text(text)
    with pytest.raises(SpaceError) as err:
        load_space(str(path))
    assert f"{path}{line}" in str(err.value), str(err.value)
    assert needle in str(err.value), str(err.value)
    # the command refuses it the same way, before starting Ray: any start of Ray here fails
    monkeypatch.setenv("RAYTASKS_DEV", "tester")
    import ray

    import raytasks.core.ray_connect

    def no_ray(*a, **k):
        raise AssertionError("Ray was started before the space was checked")

    monkeypatch.setattr(raytasks.core.ray_connect, "init_ray", no_ray)
    monkeypatch.setattr(ray, "init", no_ray)
    res = CliRunner().invoke(main, ["tune", "--space", str(path)])
    assert res.exit_code != 0, res.output
    assert needle in res.output, res.output
    assert isinstance(res.exception, SystemExit), res.exception


def test_tune_refuses_placeholder_dev(monkeypatch, tmp_path):
    monkeypatch.delenv("RAYTASKS_DEV", raising=False)
    (tmp_path / "none.toml").write_text("")  # no settings file: defaults
    monkeypatch.setenv("RAYTASKS_CONFIG", str(tmp_path / "none.toml"))
    res = CliRunner().invoke(main, ["tune", "--space", "gru"])
    assert res.exit_code != 0
    assert "set your dev tag" in res.output


def test_live_table_shows_the_settings_most_architectures_search():
    from raytasks.tune.search import table_keys

    space = load_space("all")
    searched = {n: {*a.space, *(f"model.{m}" for m in a.model)} for n, a in space.archs.items()}
    shared = {k: sum(k in s for s in searched.values()) for s in searched.values() for k in s}
    keys = table_keys(space)
    assert len(keys) == 6
    assert "lr" in keys
    assert "balance" in keys
    assert min(shared[k] for k in keys) >= max(v for k, v in shared.items() if k not in keys)
    one = load_space("cnn1d").archs["cnn1d"]
    assert table_keys(load_space("cnn1d")) == list(one.space)[:6]  # a single net: file order


def test_a_conditional_space_s_own_space_is_searched_for_every_arch():
    """adaptive.toml searches record_balance for every family: each sampled trial, whatever
    its arch, carries its own draw (not a fixed value)."""
    import numpy as np

    space = load_space("adaptive")
    rng = np.random.default_rng(1)
    drawn = {}
    for _ in range(30):
        s = trial_settings(space, stochastic.sample(to_hyperopt(space), rng=rng))
        drawn.setdefault(s["arch"], set()).add(s["record_balance"])
    assert len(drawn) >= 3
    assert all(0 <= b <= 1 for v in drawn.values() for b in v)
    assert len(set().union(*drawn.values())) > len(drawn)


def model_choices() -> list:
    """Every combination of the choice-valued model fields of every shipped space, per
    architecture (continuous fields keep their defaults), without repeats."""
    import itertools

    combos = {}
    for name in SHIPPED:
        for a in load_space(name).archs.values():
            choices = {k: v["values"] for k, v in a.model.items() if v["dist"] == "choice"}
            for values in itertools.product(*choices.values()):
                cfg = dict(zip(choices, values, strict=True))
                combos[(a.arch, repr(sorted(cfg.items())))] = (a.arch, cfg)
    return list(combos.values())


def test_every_model_a_shipped_space_can_draw_builds_and_runs(processed):
    """A combination the model cannot run would fail its trial inside Ray, after the search
    has started (cnn2d's 4x48 image with three pooling stages once did)."""
    import torch

    from raytasks.data.stream import load_split, split_files
    from raytasks.nets import create_model

    x, _ = load_split(split_files(processed / "intra", "train"))
    beats = torch.from_numpy(x[:2])
    combos = [c for c in model_choices() if c[0] != "boost"]
    assert {"cnn2d", "resnet1d", "transformer"} <= {arch for arch, _ in combos}
    for arch, cfg in combos:
        model = create_model(arch, **cfg).eval()
        with torch.no_grad():
            assert model(beats).shape == (2, 5), (arch, cfg)
