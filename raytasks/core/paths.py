"""Where a user-given name becomes a path, and how every output reaches the disk.

Three rules every command that writes follows:

1. A name or tag the user gives (`--name`, `--tag`, `--experiment`, the dev tag) is one
   path component: `child(root, name)` refuses `../x`, `/abs`, `a/b`, `.`, `-x` with one
   line, so nothing is written (or deleted) outside `root`.
2. Outputs are staged beside their target and swapped in whole (`staged_dir`,
   `staged_file`): a failure at any point leaves the target exactly as it was.
3. Staging folders of killed runs (`.<name>.tmp-<pid>-<host>-*`, `.old-` likewise) are
   removed by the next run that stages into the same folder (`clean_leftovers`): when
   their pid is gone from this host, or when they are older than STALE_S (another host's).
"""

import contextlib
import errno
import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

from raytasks.core.errors import RaytasksError

# letters, digits, '-', '_', '.', '+', '@'; starts with a letter or digit (never '.', '-')
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+@-]*")
# staging names carry pid and host: a run's pid is judged alive or dead on its own host only
HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
LEFTOVER = re.compile(r"\..+\.(tmp|old)-(\d+)-([0-9a-f]{8})-")
LEGACY = re.compile(r"\..+\.(tmp|old)-")  # staging names before pids were recorded
STALE_S = 6 * 3600  # a staging folder this old is a leftover even if its pid lives again
_UMASK = os.umask(0)
os.umask(_UMASK)


class PathError(RaytasksError):
    """A user-given name that is not a single safe path component."""


def check_name(name, what: str = "name") -> str:
    """`name` if it is one safe path component, else PathError saying what to give."""
    text = str(name)
    if not NAME.fullmatch(text) or len(text) > 100:
        raise PathError(
            f"{what} {text!r} must be one plain name (letters, digits, '-', '_', "
            f"'.', '+', '@'; at most 100 characters; no '/', no leading '.' or '-'); "
            f"pick another {what}"
        )
    return text


def child(root: Path, name, what: str = "name") -> Path:
    """root / name, with name checked to be a single component (it cannot escape root)."""
    return Path(root) / check_name(name, what)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def clean_leftovers(parent: Path) -> list[Path]:
    """Remove staging folders/files of runs that died: their pid is gone, or they are stale."""
    removed: list[Path] = []
    parent = Path(parent)
    if not parent.is_dir():
        return removed
    now = time.time()
    for p in parent.iterdir():
        m = LEFTOVER.match(p.name)
        if m:
            pid, host = int(m.group(2)), m.group(3)
            dead = host == HOST and pid != os.getpid() and not _pid_alive(pid)
        elif LEGACY.match(p.name):
            dead = False
        else:
            continue
        try:
            dead = dead or now - p.lstat().st_mtime > STALE_S
        except FileNotFoundError:
            continue
        if dead:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def stage_prefix(name: str, kind: str = "tmp", pid: int | None = None) -> str:
    """How a staging folder of `name` starts: .<name>.<tmp|old>-<pid>-<host>-"""
    return f".{name}.{kind}-{pid or os.getpid()}-{HOST}-"


def _swap(tmp: Path, dest: Path) -> None:
    """Put tmp where dest is; the old dest is moved aside first and removed last."""
    old = None
    if dest.exists() or dest.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=stage_prefix(dest.name, "old"), dir=dest.parent))
        old.rmdir()
        dest.rename(old)
    try:
        tmp.rename(dest)
    except BaseException:
        if old is not None:
            old.rename(dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


def _place(tmp: Path, dest: Path) -> None:
    """Rename tmp to dest unless dest exists (then tmp is dropped and dest kept as it is)."""
    try:
        tmp.rename(dest)  # atomic, and refused when dest is a folder with files in it
    except OSError:
        if not dest.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(dest: Path, keep_existing: bool = False):
    """Yield an empty folder beside dest; on success it replaces dest whole, on any failure
    it is removed and dest is untouched. Leftovers of killed runs are cleaned first.
    keep_existing: a dest that exists by then (a concurrent twin of a content-addressed
    folder, which readers may be reading) is kept and this one dropped."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(dest.parent)
    tmp = Path(tempfile.mkdtemp(prefix=stage_prefix(dest.name), dir=dest.parent))
    try:
        yield tmp
        tmp.chmod(0o777 & ~_UMASK)  # mkdtemp's 0700 would hide shared outputs from the team
        _place(tmp, dest) if keep_existing else _swap(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def staged_file(dest: Path):
    """Yield a temporary path beside dest; on success it replaces dest atomically."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=stage_prefix(dest.name), dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(0o666 & ~_UMASK)
        tmp.replace(dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _check_target(target: Path) -> None:
    """Raise the OSError that replacing `target` would raise, before anything is replaced."""
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(target))
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(parent))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "permission denied", str(parent))


@contextlib.contextmanager
def staged_files(root: Path, last: tuple = ()):
    """Yield a staging folder inside root. On success every file written under it replaces
    root/<same relative path> (files named in `last` go last: the file readers trust); every
    target is checked first, so a failure, before or while checking, leaves root as it was.
    Files in root that were not written are kept."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    clean_leftovers(root)
    tmp = Path(tempfile.mkdtemp(prefix=stage_prefix("staged"), dir=root))
    try:
        yield tmp
        files = sorted(
            (p for p in tmp.rglob("*") if p.is_file()),
            key=lambda p: (p.relative_to(tmp).as_posix() in last, str(p)),
        )
        targets = [(p, root / p.relative_to(tmp)) for p in files]
        for _, target in targets:
            _check_target(target)
        for p, target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            p.chmod(0o666 & ~_UMASK)
            p.replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(dest: Path, text: str) -> Path:
    """dest's new content, all or nothing."""
    with staged_file(dest) as tmp:
        tmp.write_text(text)
    return Path(dest)


def scheme_path(processed, scheme: str):
    """Where a built scheme lives: <processed>/<scheme>/{train,valid,test}/part-*.parquet
    plus build.json (the one place this layout is spelled out; config.scheme_dir resolves
    the settings to it)."""
    return Path(processed) / scheme
