"""The team's shared storage: every dev's searches, exported models and leaderboard rows.

One `storage` setting (config.toml / RAYTASKS_STORAGE / --storage): a local folder (default
`storage/` of the checkout), an NFS path, or any `pyarrow.fs` URI (`s3://bucket/team`,
`gs://...`; endpoint and keys from the AWS_* variables or the URI's query parameters, see
docs/team-cluster.md). Ray Tune and Train write through the filesystem opened here (not
the URI). A bucket's URI is checked when opened (`check_bucket`). Layout, per dev:

    <storage>/<dev>/runs/<experiment>/           Tune experiment: trials, checkpoints, search.json
    <storage>/<dev>/models/<tag>/                exported models (model.pt, model.json)
    <storage>/<dev>/results/<experiment>/        leaderboard.csv, leaderboard.png, job.json

Where the dev tag becomes a path is this module, in one place each: `run_dev` decides whose
a run is (the placeholder rule), `DevArea` (`store.dev(dev)`) is one dev's part of the
storage, the only code that spells the layout above, and `local_runs` is a dev's local
`raytasks train` runs, <runs>/<dev>/.

Each search writes only its own files, so two jobs finishing at once cannot lose each
other's rows; the team leaderboard is merged from every dev's files when it is read.
"""

import io
import json
import os
import uuid
from pathlib import Path
from urllib.parse import parse_qsl

import pandas as pd
import pyarrow.fs as pafs

from raytasks.core import config
from raytasks.core.paths import PathError, check_name, child, staged_dir


class StorageError(config.ConfigError):
    """Storage that cannot be used, or something missing in it; the message says what."""


def is_uri(value: str) -> bool:
    return "://" in str(value)


# pyarrow type_name of the filesystems whose first path component is a bucket -> the
# variables their credentials and endpoint are read from
BUCKET_STORES = {
    "s3": "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL",
    "gcs": "GOOGLE_APPLICATION_CREDENTIALS",
}
SECRET_PARAMS = ("access_key", "secret_key", "session_token")


def refuse_secrets(uri: str) -> None:
    """The storage URI is printed in every search's log and saved in its job.json: keys in
    it (s3://KEY:SECRET@bucket, ?secret_key=) would be shown to the whole team. The error
    does not repeat the URI (it holds the secret)."""
    scheme, rest = uri.split("://", 1)
    location, _, query = rest.partition("?")
    # '@' anywhere before the query: a secret with a '/' in it ends urlsplit's netloc early
    if "@" in location or {k for k, _ in parse_qsl(query)} & set(SECRET_PARAMS):
        raise StorageError(
            f"storage {scheme}://...: credentials in the URI would be printed in "
            f"every search's log; remove them and set AWS_ACCESS_KEY_ID and "
            f"AWS_SECRET_ACCESS_KEY (or the provider's own variables) instead"
        )


class Storage:
    """A root folder on a pyarrow filesystem; paths inside it are '/'-joined strings.
    A dev's files are reached through `dev(tag)`; the methods taking raw parts are what it
    uses (and what lists the devs)."""

    def __init__(self, fs: pafs.FileSystem, root: str, uri: str | None = None):
        self.fs, self.root, self.uri = fs, root.rstrip("/") or "/", uri or root

    @classmethod
    def from_setting(cls, value) -> "Storage":
        value = str(value).strip()
        if not value:
            raise StorageError("setting 'storage' is empty: a folder or a URI (s3://...)")
        if is_uri(value):
            refuse_secrets(value)
            try:
                fs, root = pafs.FileSystem.from_uri(value)
            except (OSError, ValueError) as e:  # (pyarrow's ArrowInvalid is a ValueError)
                raise StorageError(f"storage {value!r} cannot be opened: {e}") from None
            store = cls(fs, root, value)
            store.check_bucket()
            return store
        path = str(config.resolve(value))
        return cls(pafs.LocalFileSystem(), path, path)

    def check_bucket(self) -> None:
        """An object store (s3://, gs://) answers and has the bucket: asked once, when the
        storage is opened, so that bad credentials, a wrong endpoint or a missing bucket stop
        the command before it writes anything (not a Ray worker mid-search, or a half-written
        search). A missing bucket is not created: it is the team's, made once by its owner."""
        if self.fs.type_name not in BUCKET_STORES:
            return
        bucket = self.root.split("/", 1)[0]
        if not bucket:
            scheme = self.uri.split("://", 1)[0]
            raise StorageError(f"storage {self.uri}: names no bucket ({scheme}://BUCKET/...)")
        try:
            found = self.fs.get_file_info(bucket).type == pafs.FileType.Directory
        except OSError as e:  # denied, unreachable: arrow's message says which, on one line
            raise StorageError(
                f"storage {self.uri}: {e}; check the credentials and endpoint it is read "
                f"with ({BUCKET_STORES[self.fs.type_name]}; see docs/team-cluster.md)"
            ) from None
        if not found:
            raise StorageError(
                f"storage {self.uri}: no bucket {bucket!r} at that endpoint; create it "
                f"first (raytasks creates none), or correct the URI"
            )

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts]) if parts else self.root

    def dev(self, dev: str) -> "DevArea":
        """One dev's part of the storage (the dev tag checked to be one path component)."""
        return DevArea(self, dev)

    def devs(self) -> list["DevArea"]:
        """Every dev's part, by the storage's top folders (names that are no dev tag, such
        as an NFS `.snapshot`, are not a dev's)."""
        return [DevArea(self, d) for d in self.listdir() if _is_tag(d)]

    def local_path(self, *parts: str) -> str | None:
        """The same place as a plain path when the filesystem is the local one, else None."""
        return self.path(*parts) if isinstance(self.fs, pafs.LocalFileSystem) else None

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def listdir(self, *parts: str) -> list[str]:
        """Names of the sub-folders of a folder (sorted; none when it does not exist)."""
        sel = pafs.FileSelector(self.path(*parts), allow_not_found=True)
        return sorted(
            i.base_name for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.Directory
        )

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
        pafs.copy_files(
            str(local),
            dest,
            source_filesystem=pafs.LocalFileSystem(),
            destination_filesystem=self.fs,
        )

    def get_dir(self, local: Path, *parts: str) -> Path:
        """Copy <storage>/<parts> to a local folder, staged then renamed into place."""
        local = Path(local)
        with staged_dir(local) as staged:
            pafs.copy_files(
                self.path(*parts),
                str(staged),
                source_filesystem=self.fs,
                destination_filesystem=pafs.LocalFileSystem(),
            )
        return local


def _is_tag(name: str) -> bool:
    try:
        return bool(check_name(name))
    except PathError:
        return False


# -- the dev tag: whose a run is, and where its files go -------------------------------------

FOLDERS = ("runs", "models", "results")  # what each dev has in the storage


class DevArea:
    """<storage>/<dev>/: the only place the storage's per-dev layout is spelled. Callers
    name a folder of FOLDERS and what is inside it (an experiment, a tag, a file)."""

    def __init__(self, store: Storage, dev: str):
        self.store, self.dev = store, check_name(dev, "dev tag")

    def parts(self, folder: str, *parts: str) -> tuple[str, ...]:
        """<dev>/<folder>/<parts> as the storage's path parts (folder: one of FOLDERS)."""
        if folder not in FOLDERS:
            raise ValueError(f"no folder {folder!r} in a dev's storage; one of {FOLDERS}")
        return (self.dev, folder, *parts)

    def path(self, folder: str, *parts: str) -> str:
        return self.store.path(*self.parts(folder, *parts))

    def runs(self, *parts: str) -> str:  # <experiment>/: trials, checkpoints, search.json
        return self.path("runs", *parts)

    def models(self, *parts: str) -> str:  # <tag>/: an exported model
        return self.path("models", *parts)

    def results(self, *parts: str) -> str:  # <experiment>/: leaderboard.csv/.png, job.json
        return self.path("results", *parts)

    def local_path(self) -> str | None:
        """<storage>/<dev> as a plain path when the storage is a local folder, else None."""
        return self.store.local_path(self.dev)

    # the storage's own operations, on <dev>/<folder>/<parts>
    def exists(self, folder: str, *parts: str) -> bool:
        return self.store.exists(*self.parts(folder, *parts))

    def listdir(self, folder: str, *parts: str) -> list[str]:
        return self.store.listdir(*self.parts(folder, *parts))

    def read_bytes(self, folder: str, *parts: str) -> bytes:
        return self.store.read_bytes(*self.parts(folder, *parts))

    def write_bytes(self, data: bytes, folder: str, *parts: str) -> None:
        self.store.write_bytes(data, *self.parts(folder, *parts))

    def put_dir(self, local: Path, folder: str, *parts: str) -> None:
        self.store.put_dir(local, *self.parts(folder, *parts))

    def get_dir(self, local: Path, folder: str, *parts: str) -> Path:
        return self.store.get_dir(local, *self.parts(folder, *parts))


def run_dev(cfg: dict, local: bool = False) -> str:
    """The dev tag a run is filed under. Shared runs (searches, jobs, pull) need an owner:
    the placeholder is refused. A local `raytasks train` may run untagged, as 'local'."""
    dev = str(cfg["dev"]).strip()
    if local and dev == config.PLACEHOLDER_DEV:
        return "local"
    if not dev or dev == config.PLACEHOLDER_DEV:
        problem = (
            'set your dev tag first: `dev = "alice"` in config.toml, '
            "or RAYTASKS_DEV=alice, or --dev alice"
        )
    else:
        try:
            return check_name(dev, "dev tag")
        except PathError as e:
            problem = str(e)
    if in_job():  # a job's settings come from the checkout it was submitted from
        problem += (
            " in the config.toml of the checkout you submit from "
            "(ray job submit --working-dir . -- ...)"
        )
    raise config.ConfigError(problem)


def local_runs(cfg: dict) -> Path:
    """This checkout's `raytasks train` runs: <runs>/<dev> (<runs>/local when untagged)."""
    return child(config.where(cfg, "runs"), run_dev(cfg, local=True), "dev tag")


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


def write_results(
    area: DevArea, experiment: str, rows: pd.DataFrame, plot: Path | None, info: dict
) -> None:
    buf = io.StringIO()
    rows.to_csv(buf, index=False)
    area.write_bytes(buf.getvalue().encode(), "results", experiment, "leaderboard.csv")
    if plot is not None and plot.exists():
        area.write_bytes(plot.read_bytes(), "results", experiment, "leaderboard.png")
    area.write_bytes(json.dumps(info, indent=2).encode(), "results", experiment, "job.json")


def team_rows(store: Storage) -> pd.DataFrame:
    """Every dev's leaderboard rows in the storage, one table."""
    frames = []
    for area in store.devs():
        for exp in area.listdir("results"):
            if area.exists("results", exp, "leaderboard.csv"):
                data = area.read_bytes("results", exp, "leaderboard.csv")
                frames.append(pd.read_csv(io.BytesIO(data)))
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def merge_rows(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Union of two leaderboards, one row per (experiment, trial): merging twice adds nothing."""
    both = (
        pd.concat([f for f in (old, new) if not f.empty], ignore_index=True)
        if not (old.empty and new.empty)
        else pd.DataFrame()
    )
    if both.empty:
        return both
    return both.drop_duplicates(subset=["experiment", "trial_id"], keep="last")
