"""Supervised local processes with pid files and logs under the run directory.

`make up` and the demo start Prometheus, the exporters and the simulator this way; `make down`
(or Ctrl-C in the demo) stops exactly the processes the pid files name, even from another shell.
"""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import requests

from configs.net import REASONS, ListenError, listen


@dataclass
class Started:
    name: str
    pid: int
    log: Path


class StartError(RuntimeError):
    """A process exited or never became ready; the message names it and points at its log."""


def ensure_free(host: str, port: int, what: str, hint: str = "") -> None:
    """Fail before starting ``what`` when it could not listen there, saying why (busy, not this machine's
    address, unresolvable)."""
    try:
        listen(host, port, what).close()
    except ListenError as exc:
        busy = str(exc).endswith(REASONS[errno.EADDRINUSE])
        raise StartError(f"{exc}{'; ' + hint if hint and busy else ''}") from None


def _start_time(pid: int) -> Optional[str]:
    """The kernel's start time of ``pid`` (clock ticks since boot, /proc/<pid>/stat field 22): with the pid it
    names one process for good, where a pid alone may since have been given to another."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int) -> bool:
    """Running: a zombie has exited, only its parent has not collected it yet (a process `rig up` started is
    init's child once `rig up` exits, and this machine's init collects every 2 s: each stop waited for it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:              # gone between the two looks
        return False


def _me() -> str:
    """This process as a pid file's owner field: pid and start time, so a recycled pid is no owner."""
    return f"{os.getpid()} {_start_time(os.getpid())}"


class Supervisor:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.pids = run_dir / "pids"
        self.logs = run_dir / "logs"

    def _record(self, name: str) -> tuple[Optional[int], Optional[str]]:
        """The live process a pid file names (a pid whose start time no longer matches, or a file that records
        none, is stale: None), and who started it (``owner``: its pid and start time)."""
        try:
            pid_text, started, *owner = (self.pids / f"{name}.pid").read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None, None
        return (pid if _alive(pid) and _start_time(pid) == started else None), " ".join(owner) or None

    def pid_of(self, name: str) -> Optional[int]:
        return self._record(name)[0]

    def mine(self, name: str) -> bool:
        """Whether this process started the running ``name``: a command stops only what it started, so a
        refused `rig demo` leaves `rig up`'s Prometheus alone and a second `rig pairs` the first one's stack."""
        pid, owner = self._record(name)
        return pid is not None and owner == _me()

    def refuse_running(self, name: str) -> None:
        """Before a start: one ``name`` at a time, whoever started it (two `rig pairs` sharing one Stack B
        would restart it under each other's legs)."""
        pid, owner = self._record(name)
        if pid is not None:
            by = "" if owner == _me() else f", started by another command (pid {owner.split()[0] if owner else '?'})"
            raise StartError(f"{name} is already running (pid {pid}{by}); wait for it to end, or `make down`")

    def start(self, name: str, cmd: list[str], ready_url: Optional[str] = None, timeout_s: float = 30.0,
              cwd: Optional[Path] = None, env: Optional[dict] = None) -> Started:
        self.pids.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.refuse_running(name)
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd,
                                    env=env, start_new_session=True)   # Ctrl-C in the terminal is ours to handle
        (self.pids / f"{name}.pid").write_text(f"{proc.pid} {_start_time(proc.pid)} {_me()}\n")
        deadline = time.monotonic() + timeout_s
        while ready_url:
            if proc.poll() is not None:
                raise StartError(f"{name} exited with status {proc.returncode} at start; see {log}")
            try:
                if requests.get(ready_url, timeout=1).status_code < 500:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop(name)
                raise StartError(f"{name} not ready at {ready_url} after {timeout_s:g} s; see {log}")
            time.sleep(0.1)
        return Started(name, proc.pid, log)

    def stop(self, name: str, timeout_s: float = 10.0) -> bool:
        pidfile = self.pids / f"{name}.pid"
        pid = self.pid_of(name)
        pidfile.unlink(missing_ok=True)
        if pid is None:
            return False
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
            _reap(pid)
        return True

    def running(self) -> dict[str, int]:
        if not self.pids.exists():
            return {}
        return {p.stem: pid for p in sorted(self.pids.glob("*.pid")) if (pid := self.pid_of(p.stem)) is not None}

    def listing(self, width: int) -> list[str]:
        """What runs, a line each: name, pid, log (the `status` commands)."""
        return [f"{name:<{width}} pid {pid:<7} log {self.logs / (name + '.log')}"
                for name, pid in self.running().items()]

    def stop_all(self) -> list[str]:
        """Everything the pid files name, whoever started it: `make down`, the operator's own word."""
        names = sorted(p.stem for p in self.pids.glob("*.pid")) if self.pids.exists() else []
        return [n for n in reversed(names) if self.stop(n)]

    def stop_mine(self) -> list[str]:
        """What this process started (in stop_all's order); the rest keeps running."""
        names = sorted(p.stem for p in self.pids.glob("*.pid")) if self.pids.exists() else []
        return [n for n in reversed(names) if self.mine(n) and self.stop(n)]


def _reap(pid: int) -> None:
    """Collect our own exited child so it does not linger as a zombie that looks alive."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
