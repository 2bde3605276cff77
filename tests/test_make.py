"""The Makefile: every target is listed by `make help`, runs the command the README names
(`make -n`), and the targets that need an argument refuse to run without it."""

import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


def make(*args, dry=True):
    # -o .venv/.installed: never (re)install the venv from a test
    cmd = [
        "make",
        "--no-print-directory",
        "-o",
        ".venv/.installed",
        *(["-n"] if dry else []),
        *args,
    ]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def phony_targets() -> list[str]:
    text = (ROOT / "Makefile").read_text()
    return re.search(r"^\.PHONY:(.*)$", text, re.M).group(1).split()


def test_help_lists_every_target_with_a_description():
    res = make("help", dry=False)
    assert res.returncode == 0, res.stderr
    listed = dict(line.split("\t", 1) for line in res.stdout.splitlines() if "\t" in line)
    assert set(listed) == set(phony_targets()), (sorted(listed), phony_targets())
    assert all(text.strip() for text in listed.values()), listed


@pytest.mark.parametrize(
    ("target", "args", "expected"),
    [
        ("run", [], ["raytasks data build --scheme intra", "raytasks evaluate --split valid"]),
        ("run", ["DATA=heart.parq"], ['raytasks evaluate --file "heart.parq"']),
        ("data", [], ["raytasks data build --scheme all"]),
        ("test", [], ["-m pytest -q --durations=15 tests"]),
        ("lint", [], ["ruff check raytasks tests bench"]),
        ("cluster-up", ["NODES=2"], ["raytasks cluster up --nodes 2"]),
        (
            "submit",
            ["SPACE=gru", "ARGS=--samples 2"],
            ["raytasks submit --space gru -- --samples 2"],
        ),
        ("logs", ["JOB=x-1"], ["raytasks logs x-1"]),
        ("stop", ["JOB=x-1"], ["raytasks stop x-1"]),
        ("pull", ["JOB=x-1"], ["raytasks pull x-1"]),
        ("jobs", [], ["raytasks jobs"]),
        ("leaderboard", [], ["raytasks leaderboard"]),
        ("clean", [], ["rm -rf data/processed runs wandb"]),
    ],
)
def test_target_runs_its_command(target, args, expected):
    res = make(target, *args)
    assert res.returncode == 0, res.stderr
    for text in expected:
        assert text in res.stdout, res.stdout


@pytest.mark.parametrize(
    ("target", "var"), [("submit", "SPACE"), ("logs", "JOB"), ("stop", "JOB"), ("pull", "JOB")]
)
def test_target_without_its_argument_says_how(target, var):
    res = make(target, dry=False)
    assert res.returncode != 0
    assert f"usage: make {target} {var}=" in res.stdout + res.stderr


@pytest.mark.slow  # mypy's first run reads torch and numpy's stubs
def test_lint_passes():
    res = make("lint", dry=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_help_lists_the_variables_the_targets_read():
    text = (ROOT / "Makefile").read_text()
    internal = {"PY", "RT", "SHELL", "MAKE", "MAKEFLAGS", "MAKEFILE_LIST"}
    read = set(re.findall(r"\$\(([A-Z_]+)\)", text)) - internal
    assert read >= {"SPACE", "ARGS", "JOB", "DATA", "NODES"}, read
    res = make("help", dry=False)
    variables = res.stdout.split("\nvariables (")[1].split("examples:")[0]
    listed = set(re.findall(r"^  ([A-Z_]+)=", variables, re.M))
    assert listed >= read | {"RAYTASKS_DEV", "MITDB_DIR", "WANDB_MODE"}, (listed, read)
    assert "make submit SPACE=cnn1d" in res.stdout.split("examples:")[1]
