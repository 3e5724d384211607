"""Where each service of the rig is found, for every floor that needs it: the address a listener is reached
on from this host and from others, this host's Prometheus, and the file_sd target files through which
Prometheus finds what starts later (Locust processes announce themselves there while they run)."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from .model import Harness
from .paths import ensure_data_dir

LOADGEN_JOB = "loadgen"


def connect_host(listen: str) -> str:
    """Where to reach a service that listens on ``listen`` (all interfaces: via loopback)."""
    return "127.0.0.1" if listen in ("0.0.0.0", "::") else listen


def advertise_host(listen: str) -> str:
    """Where another host reaches a service that listens on ``listen`` (all interfaces: this host's name)."""
    return socket.getfqdn() if listen in ("0.0.0.0", "::") else listen


def prometheus_url(cfg: Harness) -> str:
    """Where this host reaches its Prometheus (a wildcard listen address is reached on loopback)."""
    return f"http://{connect_host(cfg.prometheus.listen)}:{cfg.prometheus.port}"


def targets_dir(cfg: Harness) -> Path:
    """The file_sd directory of the Prometheus that `make up` runs (under the run directory)."""
    return ensure_data_dir(cfg.run_dir) / "prometheus" / "targets"


def register_loadgen(directory: Path, address: str, labels: dict[str, str]) -> Path:
    """Announce a Locust metrics endpoint to Prometheus; returns the file to remove at exit."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{LOADGEN_JOB}-{address.replace(':', '_')}.json"
    atomic_write(path, json.dumps([{"targets": [address], "labels": {"role": "loadgen", **labels}}]) + "\n")
    return path


def atomic_write(path: Path, text: str) -> None:
    """Prometheus watches these files; a half-written one would be read as an error."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
