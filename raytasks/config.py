"""Settings: config.toml < environment < command-line flags.

Teammates edit `config.toml` (their dev tag, their team's port, data paths, W&B project);
environment variables override it, and flags override both. Everything else reads the
resolved dict from `load()`.
"""

import os
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER_DEV = "your-dev-tag"

DEFAULTS = {
    "dev": PLACEHOLDER_DEV,
    "port": 8265,
    "host": "127.0.0.1",
    "records": "",  # raw MIT-BIH directory; empty = download from PhysioNet
    "processed": "data/processed",
    "raw_download": "data/raw/mitdb",
    "scheme": "intra",
    "seed": 42,
    "models": "models",
    "results": "results",
    "runs": "runs",
    # the team's shared storage (searches, exported models, leaderboard rows per dev):
    # a folder, or a pyarrow.fs URI such as s3://bucket/team (see raytasks/storage.py)
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


class ConfigError(ValueError):
    """A setting that cannot be used; the message says what to set."""


def config_path() -> Path:
    return Path(os.environ.get("RAYTASKS_CONFIG", ROOT / "config.toml"))


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
            raise ConfigError(f"{path}: unknown setting(s) {sorted(unknown)}; "
                              f"known: {sorted(DEFAULTS)}")
        cfg.update(file_cfg)
    for var, key in ENV.items():
        if os.environ.get(var):
            cfg[key] = os.environ[var]
    cfg.update({k: v for k, v in flags.items() if v is not None})
    for key in ("port", "seed"):
        try:
            cfg[key] = int(cfg[key])
        except (TypeError, ValueError):
            raise ConfigError(f"setting '{key}' must be an integer, got {cfg[key]!r} "
                              f"(config.toml, or RAYTASKS_{key.upper()})") from None
    return cfg


def require_dev(cfg: dict) -> str:
    """The dev tag, refused while it is still the placeholder (shared runs need an owner)."""
    dev = str(cfg["dev"]).strip()
    if not dev or dev == PLACEHOLDER_DEV:
        raise ConfigError(
            "set your dev tag first: `dev = \"alice\"` in config.toml, "
            "or RAYTASKS_DEV=alice, or --dev alice")
    if not all(c.isalnum() or c in "-_" for c in dev):
        raise ConfigError(f"dev tag {dev!r} may only hold letters, digits, '-' and '_'")
    return dev


def resolve(path: str | Path) -> Path:
    """Relative settings are relative to the project root, not the caller's cwd."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else ROOT / p
