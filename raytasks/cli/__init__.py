"""The `raytasks` command: a thin click group over the modules that do the work. Each file
holds the commands of one capability; importing them hangs them on `main`."""

from raytasks.cli import data, evaluation, recordings, search, team, training  # noqa: F401
from raytasks.cli.common import main
from raytasks.cli.search import tune_cmd

__all__ = ["main", "tune_cmd"]
