"""A process's own storage traffic: /proc/<pid>/io and, in a container, its cgroup v2 io.stat.

These are the only bytes the rig may attribute to a serving process: device-wide counters
(/proc/diskstats) move for every reader of the disk — fio, a backup, a pip install — and on a DGX
Spark the tier2 directory sits on the system disk. ``read_bytes`` counts what the process caused
to be fetched from the storage layer (proc(5)), so page-cache hits do not count and O_DIRECT reads
(KVBM's disk tier, the simulator's) always do. Reading another user's file needs root.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional


def parse_proc_io(text: str) -> dict[str, int]:
    """{"read_bytes", "write_bytes", ...} from /proc/<pid>/io; a damaged line is left out."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip().isdigit():
            out[key.strip()] = int(value)
    return out


def proc_io(pid: int | str, procfs: str | Path = "/proc") -> Optional[dict[str, int]]:
    """The process's read_bytes / write_bytes; None when it is gone or not ours to read."""
    try:
        io = parse_proc_io((Path(procfs) / str(pid) / "io").read_text())
    except OSError:
        return None
    return {k: io[k] for k in ("read_bytes", "write_bytes") if k in io} or None


def cgroup_io(pid: int | str, procfs: str | Path = "/proc", cgroupfs: str | Path = "/sys/fs/cgroup") -> Optional[dict]:
    """rbytes / wbytes summed over devices from the cgroup v2 io.stat of ``pid``'s cgroup (the whole
    container: a worker's helpers too); None without one."""
    try:
        line = next(x for x in (Path(procfs) / str(pid) / "cgroup").read_text().splitlines() if x.startswith("0::"))
        stat = (Path(cgroupfs) / line[3:].lstrip("/") / "io.stat").read_text()
    except (OSError, StopIteration):
        return None
    total = {"read_bytes": 0, "write_bytes": 0}
    for row in stat.splitlines():
        fields = dict(f.split("=", 1) for f in row.split()[1:] if "=" in f)
        total["read_bytes"] += int(fields.get("rbytes", 0)) if fields.get("rbytes", "0").isdigit() else 0
        total["write_bytes"] += int(fields.get("wbytes", 0)) if fields.get("wbytes", "0").isdigit() else 0
    return total
