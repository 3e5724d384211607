"""Where the harness may write, and the guard every writer goes through.

Tier files, adapter files, fio jobs and results all land under directories named in
the configuration; nothing else on the machine is ever written. Relative paths in
the configuration are taken from the project root so they mean the same thing
whatever directory a command is started from.

Modes: what the harness creates is readable by everyone on the machine and writable by its owner
only — directories 0o755 (``DIR_MODE``), files 0o644 (``FILE_MODE``) — set explicitly after creating
them, so the operator's umask neither opens results to everyone's writes (umask 000 made manifests
0666) nor hides them from the people they are for (umask 077). ``make_dir``, ``open_file`` and
``write_file`` are how results are created.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

from .checks import FieldError
from .errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
DIR_MODE, FILE_MODE = 0o755, 0o644
# The marker the harness writes into a directory it creates and may later replace as a whole: a directory
# without it is someone else's, and is never removed.
OWNED_MARKER = ".sparkrig-owned"


def resolve(path: str | os.PathLike) -> Path:
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else PROJECT_ROOT / p


# Directories that belong to the system: the harness writes only in a directory of its own below them.
SYSTEM_DIRS = frozenset(map(Path, ("/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64",
                                   "/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys",
                                   "/tmp", "/usr", "/var", "/var/lib", "/var/tmp", "/var/log")))
SYSTEM_TREES = tuple(map(Path, ("/proc", "/sys", "/dev", "/boot", "/etc", "/usr", "/bin", "/sbin", "/lib",
                                "/lib64")))


def dedicated_dir(value: str, key: str) -> None:
    """A directory the harness may fill and delete in: never empty, never a system directory itself, never
    inside /etc, /usr, /proc and the like."""
    if not value.strip():
        raise FieldError(key, "must not be empty")
    p = Path(resolve(value)).resolve()
    if p in SYSTEM_DIRS or p == Path.home() or any(p == t or t in p.parents for t in SYSTEM_TREES):
        raise FieldError(key, f"{p} is a system directory; use a directory of the harness's own (e.g. /srv/kv-tier2)")


def check_name(name: str, what: str = "name") -> str:
    """Accept one path component made of safe characters: no separators, no '..', bounded length. The whole
    name must match (fullmatch: a ``$`` would let a trailing newline through, and ``nl1\\n`` become a run)."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise ConfigError(f"invalid {what} {name!r}: use 1-128 letters, digits, '.', '_', ':' or '-', "
                          "starting with a letter or digit, without '..'")
    return name


def inside(root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """``path`` resolved (symlinks followed), proven to lie in ``root``: a path built from an option or from a
    file read back (a pack's name, a run id in legs.csv) may lead nowhere else."""
    base = Path(root).resolve()
    target = Path(path).resolve()
    if target != base and base not in target.parents:
        raise ConfigError(f"refusing to write outside {base}: {target}")
    return target


def safe_join(root: str | os.PathLike, *names: str) -> Path:
    """Join validated components under ``root`` and prove the result stays inside it."""
    return inside(root, Path(root).resolve().joinpath(*(check_name(n) for n in names)))


def make_dir(path: str | os.PathLike, exist_ok: bool = False) -> Path:
    """Create ``path`` (and its missing parents) with DIR_MODE. One ``os.mkdir``: of two processes creating
    the same directory exactly one succeeds, the other gets FileExistsError (unless ``exist_ok``)."""
    p = Path(path)
    if not p.parent.is_dir():
        make_dir(p.parent, exist_ok=True)
    try:
        os.mkdir(p, DIR_MODE)
    except FileExistsError:
        if exist_ok and p.is_dir():
            return p
        raise
    os.chmod(p, DIR_MODE)
    return p


def open_file(path: str | os.PathLike, flags: int = os.O_WRONLY | os.O_TRUNC) -> int:
    """``os.open`` of a file the harness writes (created if missing), with FILE_MODE."""
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd


def write_file(path: str | os.PathLike, data: str | bytes) -> Path:
    """The whole file, with FILE_MODE."""
    with os.fdopen(open_file(path), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return Path(path)


def fresh_owned_dir(path: str | os.PathLike) -> Path:
    """An empty directory the harness owns at ``path``: created with OWNED_MARKER, or, when one made that way
    is there already, removed and made again. A directory without the marker is not the harness's: refused,
    untouched."""
    p = Path(path)
    if p.exists() or p.is_symlink():
        if p.is_symlink() or not (p / OWNED_MARKER).is_file():
            raise ConfigError(f"{p} exists and was not created by the rig (no {OWNED_MARKER} in it); "
                              "not removing it: move it away or choose another name")
        shutil.rmtree(p)
    make_dir(p)
    write_file(p / OWNED_MARKER, "created by the spark storage harness; it may replace this directory\n")
    return p


def ensure_data_dir(path: str | os.PathLike) -> Path:
    """Create (if needed) a directory the harness owns; refuse devices and non-directories."""
    p = resolve(path)
    if p.exists() or p.is_symlink():
        mode = os.stat(p).st_mode
        if stat.S_ISBLK(mode) or stat.S_ISCHR(mode):
            raise ConfigError(f"{p} is a raw device; the harness only writes files inside a directory")
        if not stat.S_ISDIR(mode):
            raise ConfigError(f"{p} exists and is not a directory")
    elif str(p).startswith("/dev/"):
        raise ConfigError(f"{p} is under /dev; the harness only writes files inside a regular directory")
    try:
        dedicated_dir(str(p), "directory")
    except FieldError as exc:
        raise ConfigError(exc.message) from None
    return make_dir(p, exist_ok=True)


def nearest_existing(path) -> Path:
    """A directory not created yet will live on its nearest existing parent's filesystem: the one a check
    of its filesystem or disk has to look at (the KV tier2 directory before KVBM or the operator makes it)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return p
