"""Where a command gets its Ray cluster: the one started by `raytasks cluster up` or `ray job
submit` (RAY_ADDRESS), else a local one. Training, tuning and predict call `init_ray` just
before they need Ray (after every refusal), so a bad request never starts a cluster."""

import os


def init_ray():
    """Connect to RAY_ADDRESS when set (e.g. under `ray job submit`), else start locally."""
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=True,
                 configure_logging=False)
