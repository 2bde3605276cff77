"""Where a command gets its Ray cluster: the one started by `raytasks cluster up` or `ray job
submit` (RAY_ADDRESS), else a local one. Training, tuning and predict call `init_ray` just
before they need Ray (after every refusal), so a bad request never starts a cluster."""

import os
import sys


def init_ray():
    """Connect to RAY_ADDRESS when set (e.g. under `ray job submit`), else start locally."""
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=True, configure_logging=False)


def quiet_sigterm_exit():
    """Ray ends a finished or ASHA-cut trial's worker with SIGTERM, and its handler raises
    SystemExit wherever the worker happens to be. Inside a garbage-collector callback Python
    cannot raise it and prints "Exception ignored in ... SystemExit: 1" into the job log
    instead: noise about an exit that was asked for. Drop that one message; every other
    unraisable error is still printed by Python's own hook."""

    def hook(unraisable):
        if not issubclass(unraisable.exc_type, SystemExit):
            sys.__unraisablehook__(unraisable)

    sys.unraisablehook = hook
