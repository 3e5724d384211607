"""What a simulator instance owns on this machine, claimed before anything is written.

A second simulator started for the same stack and port must fail without touching the live one's
files: it takes an exclusive lock beside its data directory first, binds its ports second, and only
then clears a leftover data directory, and only one that carries the marker a simulator writes. A
start that fails removes what it created and nothing else.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import socket
from pathlib import Path

from configs.net import ListenError, listen

MARKER = ".stacksim-owned"


class StartError(Exception):
    """A start refused for a reason the operator can act on; the message is the whole story."""


class DirLock:
    """An exclusive ``flock`` on ``path``; the kernel drops it when the holder dies, so a killed
    simulator never blocks the next start."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise StartError(f"{what} is already running (pid {holder} holds {path}); nothing was touched") \
                    from None
            raise
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        self.path.unlink(missing_ok=True)
        os.close(self.fd)


def bind(host: str, port: int, what: str) -> socket.socket:
    try:
        return listen(host, port, what)
    except ListenError as exc:
        raise StartError(str(exc)) from None


def claim_dir(path: Path) -> Path:
    """A fresh data directory. A leftover from a killed simulator (it carries the marker) is cleared; any
    other existing directory is refused, never deleted."""
    if path.exists() or path.is_symlink():
        if path.is_symlink() or not (path / MARKER).is_file():
            raise StartError(f"{path} exists and was not created by stacksim (no {MARKER} marker); "
                             "move it away or choose another tier2_path")
        shutil.rmtree(path)
    path.mkdir()
    (path / MARKER).write_text(f"{os.getpid()}\n")
    return path


def check_free(directory: Path, need: int, what: str) -> None:
    """Refuse up front what would fill the filesystem, rather than fail half-way through writing it."""
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    if need > free:
        raise StartError(f"{what} need {need / 2**20:.0f} MiB but {directory} has only {free / 2**20:.0f} MiB free")
