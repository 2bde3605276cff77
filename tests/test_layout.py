"""The package's folders are its architecture: capabilities in layers, imports one way.

A module may import its own package and the packages in the layers below it, never one
above (an upward import is how a tree stops showing its architecture). `__main__` modules
are entry points and may import the CLI. Only raytasks.cli imports click."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "raytasks"
# bottom to top: each may import the ones before it
LAYERS = [
    "core",
    "data",
    "nets",
    "models",
    "training",
    "evaluation",
    "tune",
    "recordings",
    "team",
    "cli",
]


def imports(path: Path) -> set[str]:
    """Every raytasks module a file imports, at any depth (lazy imports count too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            out |= {n for n in names if n.startswith("raytasks")}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("raytasks")}
    return out


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_lives_in_a_capability():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules outside every capability package: {loose}"
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(
        LAYERS
    )


def upward(path: Path, own: str) -> list[str]:
    """The imports of `path` (in package `own`) from a layer above own."""
    allowed = set(LAYERS[: LAYERS.index(own) + 1])
    if path.name == "__main__.py":  # an entry point runs the CLI
        allowed.add("cli")
    return sorted(m for m in imports(path) if layer(m) and layer(m) not in allowed)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(path):
    parts = path.relative_to(PACKAGE).parts
    own = parts[0] if len(parts) > 1 else "core"  # raytasks/__init__.py: below everything
    assert not upward(path, own), f"{own} imports from a layer above it: {upward(path, own)}"


def test_the_check_catches_a_lazy_upward_import_and_lets_entry_points_run_the_cli(tmp_path):
    bad = tmp_path / "stream.py"
    bad.write_text("def f():\n    from raytasks.tune.search import run\n")
    assert upward(bad, "data") == ["raytasks.tune.search", "raytasks.tune.search.run"]
    assert upward(bad, "tune") == []
    entry = tmp_path / "__main__.py"
    entry.write_text("from raytasks.cli import tune_cmd\n")
    assert upward(entry, "tune") == []
    assert upward(entry.rename(tmp_path / "search.py"), "tune") == [
        "raytasks.cli",
        "raytasks.cli.tune_cmd",
    ]


def test_only_the_cli_imports_click():
    users = [
        str(p.relative_to(PACKAGE))
        for p in modules()
        if "click" in {n.split(".")[0] for n in imports_any(p)} and p.parent.name != "cli"
    ]
    assert not users, f"click imported outside raytasks.cli: {users}"


def test_the_command_line_starts_without_torch_or_ray():
    """Every `raytasks` call imports the whole CLI: torch, Ray or pandas loaded there (1.5 s)
    would slow `raytasks cluster env`, `jobs`, `logs` and every --help; the commands import
    them where they run (a train's --arch choices are read from the registry when needed)."""
    code = (
        "import sys, raytasks.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'ray', 'pandas', "
        "'pyarrow', 'sklearn', 'matplotlib'}))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def imports_any(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


def test_what_an_older_checkout_pickled_still_loads():
    """Tune's experiment state and training checkpoints name the flat modules of before the
    move (raytasks.settings, raytasks.tune.trial_name): resume and export still read them."""
    import pickle

    from raytasks.training.settings import TrainSettings
    from raytasks.tune.search import trial_name

    old = pickle.dumps(TrainSettings(arch="gru"), protocol=0)  # text: names are plain lines
    old = old.replace(b"raytasks.training.settings", b"raytasks.settings")
    assert b"raytasks.settings\n" in old
    assert pickle.loads(old) == TrainSettings(arch="gru")
    old_fn = pickle.dumps(trial_name, protocol=0).replace(b"raytasks.tune.search", b"raytasks.tune")
    assert pickle.loads(old_fn) is trial_name
    with pytest.raises(AttributeError):
        pickle.loads(old_fn.replace(b"trial_name", b"no_such_function"))
