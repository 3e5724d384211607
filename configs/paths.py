"""Where the harness may write, and the guard every writer goes through.

Tier files, adapter files, fio jobs and results all land under directories named in
the configuration; nothing else on the machine is ever written. Relative paths in
the configuration are taken from the project root so they mean the same thing
whatever directory a command is started from.
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from .checks import FieldError
from .errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


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
    """Accept one path component made of safe characters: no separators, no '..', bounded length."""
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
        raise ConfigError(f"invalid {what} {name!r}: use 1-128 letters, digits, '.', '_', ':' or '-', "
                          "starting with a letter or digit, without '..'")
    return name


def safe_join(root: str | os.PathLike, *names: str) -> Path:
    """Join validated components under ``root`` and prove the result stays inside it."""
    base = Path(root).resolve()
    target = base.joinpath(*(check_name(n) for n in names)).resolve()
    if target != base and base not in target.parents:
        raise ConfigError(f"refusing to write outside {base}: {target}")
    return target


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
    p.mkdir(parents=True, exist_ok=True)
    return p
