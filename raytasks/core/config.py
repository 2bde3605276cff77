"""Settings: config.toml < environment < command-line flags.

Teammates edit `config.toml` (their dev tag, their team's port, data paths, W&B project);
environment variables override it, and flags override both. Everything else reads the
resolved dict from `load()`.
"""

import os
import tomllib
from pathlib import Path

from raytasks.core.constants import SPLIT_SEED
from raytasks.core.errors import RaytasksError
from raytasks.core.paths import PathError, check_name, child, scheme_path

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER_DEV = "your-dev-tag"

DEFAULTS = {
    "dev": PLACEHOLDER_DEV,
    "port": 8265,
    "host": "127.0.0.1",
    "records": "",  # raw MIT-BIH directory; empty = download from PhysioNet
    "processed": "data/processed",
    "raw_download": "data/raw/mitdb",
    "scheme": "intra",
    "seed": SPLIT_SEED,  # the data build's split seed (training seeds: raytasks.training.settings)
    "models": "models",
    "results": "results",
    "runs": "runs",
    # the team's shared storage (searches, exported models, leaderboard rows per dev):
    # a folder, or a pyarrow.fs URI such as s3://bucket/team (see raytasks/core/storage.py)
    "storage": "storage",
    "wandb_project": "raytasks",
}

# env var -> setting; MITDB_DIR is the name the brief and CI use for the raw records
ENV = {
    "RAYTASKS_DEV": "dev",
    "RAYTASKS_PORT": "port",
    "RAYTASKS_HOST": "host",
    "MITDB_DIR": "records",
    "RAYTASKS_PROCESSED": "processed",
    "RAYTASKS_SCHEME": "scheme",
    "RAYTASKS_SEED": "seed",
    "RAYTASKS_MODELS": "models",
    "RAYTASKS_RESULTS": "results",
    "RAYTASKS_RUNS": "runs",
    "RAYTASKS_STORAGE": "storage",
    "WANDB_PROJECT": "wandb_project",
}


class ConfigError(RaytasksError):
    """A setting that cannot be used; the message says what to set."""


PATH_SETTINGS = ("records", "processed", "raw_download", "models", "results", "runs", "storage")
# the dashboard port P: Ray's GCS listens on P+10000 and workers up to P+14199 (cluster.py)
PORT_RANGE = (1024, 65535 - 14200)


def config_path() -> Path:
    """RAYTASKS_CONFIG when set (it must exist: a typo would silently mean defaults), else
    the project's config.toml (optional)."""
    named = os.environ.get("RAYTASKS_CONFIG")
    if named and not Path(named).is_file():
        raise ConfigError(
            f"RAYTASKS_CONFIG={named}: no such file; point it at a config.toml or unset it"
        )
    return Path(named) if named else ROOT / "config.toml"


def load(**flags) -> dict:
    """Resolve every setting. `flags` are CLI values; None means 'not given'."""
    cfg = dict(DEFAULTS)
    path = config_path()
    if path.exists():
        try:
            with open(path, "rb") as f:
                file_cfg = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML ({e})") from e
        unknown = set(file_cfg) - set(DEFAULTS)
        if unknown:
            raise ConfigError(
                f"{path}: unknown setting(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}"
            )
        check({**cfg, **file_cfg}, path, where=f"({path})")  # wrong in the file: say so
        cfg.update(file_cfg)
    for var, key in ENV.items():
        if os.environ.get(var):
            cfg[key] = os.environ[var]
    cfg.update({k: v for k, v in flags.items() if v is not None})
    check(cfg, path)
    return cfg


def check(cfg: dict, path: Path, where: str = "") -> None:
    """Types and ranges of the settings, so no command meets a bad one halfway through."""
    where = where or f"({path.name}, RAYTASKS_* or a flag)"
    for key in ("port", "seed"):
        value = cfg[key]
        try:
            if isinstance(value, (bool, float)):
                raise ValueError
            cfg[key] = int(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"setting '{key}' must be an integer, got {value!r} {where}"
            ) from None
    lo, hi = PORT_RANGE
    if not lo <= cfg["port"] <= hi:
        raise ConfigError(
            f"setting 'port' must be in {lo}..{hi} (Ray uses ports up to "
            f"port+14199), got {cfg['port']} {where}"
        )
    for key in (*PATH_SETTINGS, "host", "scheme", "wandb_project", "dev"):
        if not isinstance(cfg[key], str):
            raise ConfigError(f"setting '{key}' must be a string, got {cfg[key]!r} {where}")
    try:
        check_name(cfg["dev"], "dev tag")
        check_name(cfg["scheme"], "scheme")
    except PathError as e:
        raise ConfigError(f"{e} {where}") from None


def resolve(path: str | Path) -> Path:
    """Relative settings are relative to the project root, not the caller's cwd."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else ROOT / p


# ---------------------------------------------------------------- where things are
# Every command finds its folders here (a setting resolved, a user's name checked to be one
# path component); the dev tag becomes a path in raytasks.core.storage (`run_dev`, `DevArea`,
# `local_runs`), which also owns the team's shared storage.


def where(cfg: dict, setting: str) -> Path:
    """A path setting (processed, models, results, runs, ...) as an absolute path."""
    return resolve(cfg[setting])


def scheme_dir(cfg: dict, scheme: str | None = None) -> Path:
    """A built scheme's shards: <processed>/<scheme> (default: the `scheme` setting)."""

    return scheme_path(where(cfg, "processed"), check_name(scheme or cfg["scheme"], "scheme"))


def model_dir(cfg: dict, tag: str) -> Path:
    """A saved model's folder: <models>/<tag>."""
    return child(where(cfg, "models"), tag, "--tag")
