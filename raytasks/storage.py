"""The team's shared storage: every dev's searches, exported models and leaderboard rows.

One `storage` setting (config.toml / RAYTASKS_STORAGE / --storage): a local folder (default
`storage/` of the checkout), an NFS path, or any `pyarrow.fs` URI (`s3://bucket/team`,
`gs://...`), which Ray Tune and Train also write to natively. Layout, per dev:

    <storage>/<dev>/runs/<experiment>/           Tune experiment: trials, checkpoints, search.json
    <storage>/<dev>/models/<tag>/                exported models (model.pt, model.json)
    <storage>/<dev>/results/<experiment>/        leaderboard.csv, leaderboard.png, job.json

Each search writes only its own files, so two jobs finishing at once cannot lose each
other's rows; the team leaderboard is merged from every dev's files when it is read.
"""

import io
import json
import os
import uuid
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs

from raytasks import config
from raytasks.paths import staged_dir


class StorageError(config.ConfigError):
    """Storage that cannot be used, or something missing in it; the message says what."""


def is_uri(value: str) -> bool:
    return "://" in str(value)


class Storage:
    """A root folder on a pyarrow filesystem; paths inside it are '/'-joined strings."""

    def __init__(self, fs: pafs.FileSystem, root: str, uri: str | None = None):
        self.fs, self.root, self.uri = fs, root.rstrip("/") or "/", uri or root

    @classmethod
    def from_setting(cls, value) -> "Storage":
        value = str(value).strip()
        if not value:
            raise StorageError("setting 'storage' is empty: a folder or a URI (s3://...)")
        if is_uri(value):
            try:
                fs, root = pafs.FileSystem.from_uri(value)
            except (pafs.ArrowInvalid, OSError, ValueError) as e:
                raise StorageError(f"storage {value!r} cannot be opened: {e}") from None
            return cls(fs, root, value)
        path = str(config.resolve(value))
        return cls(pafs.LocalFileSystem(), path, path)

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts]) if parts else self.root

    def local_path(self, *parts: str) -> str | None:
        """The same place as a plain path when the filesystem is the local one, else None."""
        return self.path(*parts) if isinstance(self.fs, pafs.LocalFileSystem) else None

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def listdir(self, *parts: str) -> list[str]:
        """Names of the sub-folders of a folder (sorted; none when it does not exist)."""
        sel = pafs.FileSelector(self.path(*parts), allow_not_found=True)
        return sorted(i.base_name for i in self.fs.get_file_info(sel)
                      if i.type == pafs.FileType.Directory)

    def read_bytes(self, *parts: str) -> bytes:
        with self.fs.open_input_stream(self.path(*parts)) as f:
            return f.read()

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Write a whole file under a temporary name, then move it into place: a reader
        sees the old file or the new one, never half of one."""
        final = self.path(*parts)
        self.fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, final)

    def put_dir(self, local: Path, *parts: str) -> None:
        """Copy a local folder to <storage>/<parts> (replacing what was there)."""
        dest = self.path(*parts)
        self.fs.delete_dir_contents(dest, missing_dir_ok=True)
        self.fs.create_dir(dest, recursive=True)
        pafs.copy_files(str(local), dest, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)

    def get_dir(self, local: Path, *parts: str) -> Path:
        """Copy <storage>/<parts> to a local folder, staged then renamed into place."""
        local = Path(local)
        with staged_dir(local) as staged:
            pafs.copy_files(self.path(*parts), str(staged), source_filesystem=self.fs,
                            destination_filesystem=pafs.LocalFileSystem())
        return local


def in_job() -> bool:
    """True inside a Ray job's driver (`ray job submit`): Ray sets its job config there."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def for_job(cfg: dict) -> dict:
    """In a job on a raytasks cluster, a relative `processed` or `storage` of the uploaded
    config.toml means the cluster's (a path inside the uploaded working dir would be lost
    with it): `cluster up` hands its own absolute ones to the cluster as RAYTASKS_CLUSTER_*."""
    if not in_job():
        return cfg
    cfg = dict(cfg)
    for key in ("processed", "storage"):
        cluster_value = os.environ.get(f"RAYTASKS_CLUSTER_{key.upper()}")
        value = str(cfg[key])
        if cluster_value and not (is_uri(value) or Path(value).expanduser().is_absolute()):
            cfg[key] = cluster_value
    return cfg


# -- leaderboard rows: one file per search, merged when read ---------------------------------

def write_results(store: Storage, dev: str, experiment: str, rows: pd.DataFrame,
                  plot: Path | None, info: dict) -> None:
    buf = io.StringIO()
    rows.to_csv(buf, index=False)
    store.write_bytes(buf.getvalue().encode(), dev, "results", experiment, "leaderboard.csv")
    if plot is not None and plot.exists():
        store.write_bytes(plot.read_bytes(), dev, "results", experiment, "leaderboard.png")
    store.write_bytes(json.dumps(info, indent=2).encode(), dev, "results", experiment,
                      "job.json")


def team_rows(store: Storage) -> pd.DataFrame:
    """Every dev's leaderboard rows in the storage, one table."""
    frames = []
    for dev in store.listdir():
        for exp in store.listdir(dev, "results"):
            if store.exists(dev, "results", exp, "leaderboard.csv"):
                data = store.read_bytes(dev, "results", exp, "leaderboard.csv")
                frames.append(pd.read_csv(io.BytesIO(data)))
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def merge_rows(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Union of two leaderboards, one row per (experiment, trial): merging twice adds nothing."""
    both = pd.concat([f for f in (old, new) if not f.empty], ignore_index=True) \
        if not (old.empty and new.empty) else pd.DataFrame()
    if both.empty:
        return both
    return both.drop_duplicates(subset=["experiment", "trial_id"], keep="last")
