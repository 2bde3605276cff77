"""Search: Ray Tune over searchspaces/, W&B tracking, the team leaderboard."""

SUBMODULES = ("search", "spaces", "tracking", "leaderboard")


def __getattr__(name: str):
    """raytasks.tune was the search module before it became this package: a Tune state an
    older checkout pickled names its functions here (e.g. `raytasks.tune.trial_name`)."""
    import importlib

    if name.startswith("__") or name in SUBMODULES:  # the import system asks for these
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        return getattr(importlib.import_module(f"{__name__}.search"), name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
