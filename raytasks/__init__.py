"""raytasks: train, tune and ship MIT-BIH heartbeat classifiers on Ray."""

import os

# Set before anything imports ray (it reads both at import): never post usage stats, and
# speak token auth, which Ray 2.60 clusters require of their clients.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")


def _old_names() -> None:
    """The flat modules' names from before the package was grouped by capability, as
    aliases of where they live now: Tune's experiment state and training checkpoints that
    an older checkout pickled name them, and must still resume and export."""
    import importlib
    import importlib.abc
    import importlib.util
    import sys

    moved = {
        **dict.fromkeys(["constants", "paths", "config", "storage", "ray_connect", "metrics"]),
        "records": "data.features",
        "saved": "models.saved",
        "ensemble": "models.ensemble",
        "settings": "training.settings",
        "train": "training.train",
        "boost": "training.boost",
        "evaluate": "evaluation.evaluate",
        "spaces": "tune.spaces",
        "tracking": "tune.tracking",
        "leaderboard": "tune.leaderboard",
        "predict": "recordings.predict",
        "score": "recordings.score",
        "cluster": "team.cluster",
    }
    moved |= {k: f"core.{k}" for k, v in moved.items() if v is None}

    class Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path=None, target=None):
            old = name.removeprefix(f"{__name__}.")
            return importlib.util.spec_from_loader(name, self) if old in moved else None

        def create_module(self, spec):
            return importlib.import_module(f"{__name__}.{moved[spec.name.split('.', 1)[1]]}")

        def exec_module(self, module):
            pass

    sys.meta_path.append(Alias())


_old_names()
