"""Unified memory and host pressure: /proc/meminfo, /proc/vmstat, PSI, CPU time by mode, per-process RSS.

On GB10 the GPU's memory *is* this memory and NVML cannot report it, so MemAvailable, Cached,
major faults, PSI and the serving processes' RSS carry the UMA story; iowait (H8) comes from
the CPU modes.
"""
from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Callable, Optional

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from configs.vocabulary import series as S

from .procfs import ProcReader, parse_meminfo, parse_pressure, parse_stat_cpu, parse_vmstat
from .procio import proc_io

log = logging.getLogger("exporters.uma")
COUNT_FIELDS = re.compile(r"^HugePages_")
RESCAN_S = 5.0


def metric_name(field: str) -> str:
    """node_exporter's spelling: Active(anon) -> Active_anon."""
    return re.sub(r"[^A-Za-z0-9_]", "_", field.replace("(", "_").replace(")", ""))


class UmaCollector:
    def __init__(self, procfs: str = "/proc", processes: dict[str, str] | None = None,
                 gpu_memory: Optional[Callable[[], Optional[dict[int, int]]]] = None) -> None:
        """``gpu_memory`` gives GPU memory by pid (NVML), or None when it cannot tell."""
        self.procfs = Path(procfs)
        self.proc = ProcReader(procfs, ("meminfo", "vmstat", "stat", *(f"pressure/{r}" for r in S.PSI_RESOURCES)))
        self.gpu_memory = gpu_memory
        self.page = os.sysconf("SC_PAGE_SIZE")
        self._matches: dict[str, tuple[str, ...]] = {}
        self._rescan_at = 0.0
        self.processes = {name: re.compile(p) for name, p in (processes or {}).items()}
        self.ticks = os.sysconf("SC_CLK_TCK")
        self._warned: set[str] = set()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    def collect(self):
        yield from self._meminfo()
        yield from self._vmstat()
        yield from self._pressure()
        yield from self._cpu()
        yield self.proc.family()
        if self.processes:
            yield from self._processes()

    def _meminfo(self):
        for field, value in self.proc.parse("meminfo", parse_meminfo).items():
            if COUNT_FIELDS.match(field):
                yield GaugeMetricFamily(S.MEMORY(metric_name(field)), f"{field} from /proc/meminfo", value)
            else:
                yield GaugeMetricFamily(S.MEMORY(metric_name(field) + "_bytes"), f"{field} from /proc/meminfo", value)

    def _vmstat(self):
        stats = self.proc.parse("vmstat", parse_vmstat)
        for field, doc in S.VMSTAT.fields.items():
            if field in stats:
                yield CounterMetricFamily(S.VMSTAT(field), doc, stats[field])

    def _pressure(self):
        up, avg = S.PRESSURE_UP.family(), S.PRESSURE_AVG10.family()
        totals = []
        ok = True
        for resource in S.PSI_RESOURCES:
            try:
                psi = self.proc.parse(f"pressure/{resource}", parse_pressure)
            except OSError as exc:
                ok = False
                self._warn_once("psi", f"PSI unavailable ({exc.strerror}: {exc.filename}); "
                                       f"{S.PRESSURE_UP.name} is 0")
                continue
            for kind, suffix in S.PSI_KINDS:
                if kind in psi:
                    avg.add_metric([resource, kind], psi[kind]["avg10"] / 100.0)
                    field = f"{resource}_{suffix}_seconds"
                    totals.append(CounterMetricFamily(S.PRESSURE(field), S.PRESSURE.fields[field],
                                                      psi[kind]["total"] / 1e6))
        up.add_metric([], 1 if ok else 0)
        yield up
        yield avg
        yield from totals

    def _cpu(self):
        modes, cpus = self.proc.parse("stat", parse_stat_cpu, self.ticks)
        fam = S.CPU_SECONDS.family()
        for mode, seconds in modes.items():
            fam.add_metric([mode], seconds)
        yield fam
        yield S.CPU_COUNT.family(cpus)

    def _matching_pids(self) -> dict[str, tuple[str, ...]]:
        """pid -> names whose pattern its command line matches. Command lines are read again only for
        new pids and, since a forked pid can exec into a serving process later, in a full rescan
        every RESCAN_S; in between a scrape costs one directory listing plus one statm per match."""
        now = time.monotonic()
        pids = [n for n in os.listdir(self.procfs) if n.isdigit()]
        if now >= self._rescan_at:
            self._matches, self._rescan_at = {}, now + RESCAN_S
        fresh = {}
        for pid in pids:
            if pid in self._matches:
                fresh[pid] = self._matches[pid]
                continue
            try:
                with open(f"{self.procfs}/{pid}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:  # exited between listing and reading
                continue
            fresh[pid] = tuple(n for n, rx in self.processes.items() if cmdline and rx.search(cmdline))
        self._matches = fresh
        return {pid: names for pid, names in fresh.items() if names}

    def _processes(self):
        """RSS, count, GPU memory and storage bytes of each name's matching processes. The byte counters
        are sums over live pids: one that exits takes its bytes with it, which rate() reads as a reset.
        A name with no matching process, or one whose /proc/<pid>/io cannot be read, has no byte counters
        (nor, without a process, GPU memory): a zero there would be no measurement, and H2A's gate would take
        it for a stack that read nothing."""
        rss = {name: 0 for name in self.processes}
        count, gpu, read, written = dict(rss), dict(rss), dict(rss), dict(rss)
        unread = set()
        by_pid = self.gpu_memory() if self.gpu_memory else None
        for pid, matched in self._matching_pids().items():
            try:
                with open(f"{self.procfs}/{pid}/statm", "rb") as f:
                    resident = int(f.read().split()[1]) * self.page
            except (OSError, IndexError, ValueError):
                continue
            io = proc_io(pid, self.procfs) or {}
            if not io and os.path.exists(f"{self.procfs}/{pid}"):
                unread.update(matched)
                self._warn_once("io", f"cannot read {self.procfs}/{pid}/io (needs root for another user's "
                                      f"process): {S.PROCESS_READ_BYTES.total} leaves out {', '.join(matched)}")
            for name in matched:
                count[name] += 1
                rss[name] += resident
                gpu[name] += (by_pid or {}).get(int(pid), 0)
                read[name] += io.get("read_bytes", 0)
                written[name] += io.get("write_bytes", 0)
        families = [S.PROCESS_RSS.family(), S.PROCESS_COUNT.family(), S.PROCESS_READ_BYTES.family(),
                    S.PROCESS_WRITTEN_BYTES.family()]
        measured = [name for name in self.processes if count[name] and name not in unread]
        for fam, values, names in zip(families, (rss, count, read, written),
                                      (self.processes, self.processes, measured, measured)):
            for name in names:
                fam.add_metric([name], values[name])
        yield from families
        if by_pid is not None:
            g = S.PROCESS_GPU_MEMORY.family()
            for name in self.processes:
                if count[name]:
                    g.add_metric([name], gpu[name])
            yield g

