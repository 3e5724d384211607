"""Pure parsers for the kernel text files the exporters read: text in, numbers out.

Formats per Documentation/admin-guide/iostats.rst, proc(5) and PSI docs. Sectors in
/proc/diskstats are always 512 bytes; /proc/stat times are in USER_HZ ticks.
"""
from __future__ import annotations

DISKSTAT_FIELDS = (
    "reads_completed", "reads_merged", "sectors_read", "read_time_ms",
    "writes_completed", "writes_merged", "sectors_written", "write_time_ms",
    "io_in_progress", "io_time_ms", "io_weighted_time_ms",
    "discards_completed", "discards_merged", "sectors_discarded", "discard_time_ms",  # kernel 4.18+
    "flushes_completed", "flush_time_ms",                                             # kernel 5.5+
)


def parse_diskstats(text: str) -> dict[str, dict]:
    """{device: {"major", "minor", field: int ...}}; fields a kernel does not print are absent."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 14:
            continue
        values = [int(v) for v in parts[3:3 + len(DISKSTAT_FIELDS)]]
        row = {"major": int(parts[0]), "minor": int(parts[1])}
        row.update(zip(DISKSTAT_FIELDS, values))
        out[parts[2]] = row
    return out


def parse_meminfo(text: str) -> dict[str, int]:
    """{field: value}; ``kB`` values converted to bytes, unitless ones (HugePages_*) kept as counts."""
    out = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        fields = rest.split()
        if not fields:
            continue
        value = int(fields[0])
        out[name.strip()] = value * 1024 if len(fields) > 1 and fields[1] == "kB" else value
    return out


def parse_vmstat(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = int(parts[1])
    return out


def parse_pressure(text: str) -> dict[str, dict[str, float]]:
    """{"some"|"full": {"avg10", "avg60", "avg300" (percent), "total" (microseconds)}}."""
    out = {}
    for line in text.splitlines():
        kind, *pairs = line.split()
        out[kind] = {k: float(v) for k, v in (p.split("=", 1) for p in pairs)}
    return out


CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def parse_stat_cpu(text: str, ticks_per_second: int) -> tuple[dict[str, float], int]:
    """(seconds per mode summed over all CPUs, number of CPUs) from /proc/stat.

    guest and guest_nice are already included in user and nice, so they are not repeated.
    """
    total, cpus = {}, 0
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:1 + len(CPU_MODES)]]
            total = {m: v / ticks_per_second for m, v in zip(CPU_MODES, values)}
        elif line.startswith("cpu"):
            cpus += 1
    return total, cpus
