"""Pure parsers for the kernel text files the exporters read: text in, numbers out.

Formats per Documentation/admin-guide/iostats.rst, proc(5) and PSI docs. Sectors in
/proc/diskstats are always 512 bytes; /proc/stat times are in USER_HZ ticks.

A line a parser cannot read (a torn read, a kernel that prints a field we do not expect) is skipped
and handed to ``damaged``: one bad line costs its own values, never the file's or the scrape's.
``ProcReader`` reads the files and counts those lines per file.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable, Iterable, Optional

from configs.vocabulary import series as S

log = logging.getLogger("exporters.procfs")

DISKSTAT_FIELDS = (
    "reads_completed", "reads_merged", "sectors_read", "read_time_ms",
    "writes_completed", "writes_merged", "sectors_written", "write_time_ms",
    "io_in_progress", "io_time_ms", "io_weighted_time_ms",
    "discards_completed", "discards_merged", "sectors_discarded", "discard_time_ms",  # kernel 4.18+
    "flushes_completed", "flush_time_ms",                                             # kernel 5.5+
)


def _skip(damaged: Optional[list], line: str) -> None:
    if damaged is not None:
        damaged.append(line)


def parse_diskstats(text: str, damaged: Optional[list] = None) -> dict[str, dict]:
    """{device: {"major", "minor", field: int ...}}; fields a kernel does not print are absent."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) < 14:             # every kernel since 2.6 prints at least 3 + 11 fields
                raise ValueError("too few fields")
            row = {"major": int(parts[0]), "minor": int(parts[1])}
            row.update(zip(DISKSTAT_FIELDS, (int(v) for v in parts[3:3 + len(DISKSTAT_FIELDS)])))
        except ValueError:
            _skip(damaged, line)
            continue
        out[parts[2]] = row
    return out


def parse_meminfo(text: str, damaged: Optional[list] = None) -> dict[str, int]:
    """{field: value}; ``kB`` values converted to bytes, unitless ones (HugePages_*) kept as counts."""
    out = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, _, rest = line.partition(":")
        fields = rest.split()
        try:
            value = int(fields[0])
        except (IndexError, ValueError):
            _skip(damaged, line)
            continue
        out[name.strip()] = value * 1024 if len(fields) > 1 and fields[1] == "kB" else value
    return out


def parse_vmstat(text: str, damaged: Optional[list] = None) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        try:
            name, value = parts
            out[name] = int(value)
        except ValueError:
            _skip(damaged, line)
    return out


def parse_pressure(text: str, damaged: Optional[list] = None) -> dict[str, dict[str, float]]:
    """{"some"|"full": {"avg10", "avg60", "avg300" (percent), "total" (microseconds)}}."""
    out = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        kind, *pairs = line.split()
        try:
            out[kind] = {k: float(v) for k, v in (p.split("=", 1) for p in pairs)}
        except ValueError:
            _skip(damaged, line)
    return out


CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def parse_stat_cpu(text: str, ticks_per_second: int, damaged: Optional[list] = None) -> tuple[dict[str, float], int]:
    """(seconds per mode summed over all CPUs, number of CPUs) from /proc/stat.

    guest and guest_nice are already included in user and nice, so they are not repeated.
    """
    total, cpus = {}, 0
    for line in text.splitlines():
        if line.startswith("cpu "):
            try:
                values = [int(v) for v in line.split()[1:1 + len(CPU_MODES)]]
            except ValueError:
                _skip(damaged, line)
                continue
            total = {m: v / ticks_per_second for m, v in zip(CPU_MODES, values)}
        elif line.startswith("cpu"):
            cpus += 1
    return total, cpus


class ProcReader:
    """Reads ``files`` under a procfs root through their parsers and counts the damaged lines skipped, per
    file (``family``: the counter a collector exports). The first damaged line of each file is logged."""

    def __init__(self, root: str | Path, files: Iterable[str]) -> None:
        self.root = Path(root)
        self.errors = dict.fromkeys(files, 0)
        self._lock = threading.Lock()    # the SMART reader's thread reads diskstats beside the scrapes

    def parse(self, file: str, parser: Callable, *args):
        """``parser(text of root/file, *args)``; an unreadable file raises OSError (the collector fails)."""
        damaged: list[str] = []
        out = parser((self.root / file).read_text(), *args, damaged=damaged)
        if damaged:
            with self._lock:
                first = not self.errors[file]
                self.errors[file] += len(damaged)
            if first:
                log.warning("skipping damaged lines of %s, the first: %.120r (%s counts them)", self.root / file,
                            damaged[0], S.PROCFS_PARSE_ERRORS.total)
        return out

    def family(self):
        fam = S.PROCFS_PARSE_ERRORS.family()
        for file, n in self.errors.items():
            fam.add_metric([file], n)
        return fam
