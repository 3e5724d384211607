"""Block devices from /proc/diskstats, under node_exporter's ``node_disk_*`` semantics with our prefix.

Raw counters only (iostat's r/s, r_await, aqu-sz, %util are Prometheus recording rules). Each
disk carries a ``role`` label: ``kv_tier2`` for the disk holding the KV tier2 directory,
``system`` for the root filesystem's disk, ``other`` otherwise.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path
from typing import Callable, Optional

from prometheus_client.core import CounterMetricFamily

from configs.paths import nearest_existing
from configs.vocabulary import series as S

from .procfs import ProcReader, parse_diskstats

FACTS_TTL_S = 10.0
NVME_NAMESPACE = re.compile(r"^nvme\d+n\d+$")
SECTOR = 512                     # /sys/block/<dev>/size counts 512-byte sectors, whatever the device's own


def _devnum(path: str) -> tuple[int, int]:
    st = os.stat(nearest_existing(path))
    return os.major(st.st_dev), os.minor(st.st_dev)


def disk_of(sysfs: Path, major: int, minor: int) -> Optional[str]:
    """Whole-disk name for a device number: /sys/dev/block/M:m, then up from a partition to its disk."""
    link = sysfs / "dev" / "block" / f"{major}:{minor}"
    if not link.exists():
        return None
    target = Path(os.path.realpath(link))
    return target.parent.name if (target / "partition").exists() else target.name


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text().strip()
    except OSError:
        return None


class DiskCollector:
    def __init__(self, procfs: str = "/proc", sysfs: str = "/sys", exclude: str = "", tier2_path: Optional[str] = None,
                 root_path: str = "/", devnum: Callable[[str], tuple[int, int]] = _devnum) -> None:
        self.sysfs = Path(sysfs)
        self.proc = ProcReader(procfs, ("diskstats",))
        self.exclude = re.compile(exclude) if exclude else None
        self.tier2_path, self.root_path = tier2_path, root_path
        self.devnum = devnum
        self._facts: Optional[tuple] = None

    def roles(self) -> dict[str, set[str]]:
        roles: dict[str, set[str]] = {}
        for role, path in (("kv_tier2", self.tier2_path), ("system", self.root_path)):
            if not path:
                continue
            try:
                disk = disk_of(self.sysfs, *self.devnum(path))
            except OSError:
                disk = None
            if disk:
                roles.setdefault(disk, set()).add(role)
        return roles

    def disks(self) -> dict[str, dict]:
        stats = self.proc.parse("diskstats", parse_diskstats)
        return {d: s for d, s in stats.items() if not (self.exclude and self.exclude.match(d))}

    def nvme_namespaces(self) -> list[str]:
        """Whole NVMe namespaces, the devices whose health log the SMART reader asks for."""
        return [d for d in self.disks() if NVME_NAMESPACE.match(d)]

    def identity(self, dev: str) -> tuple[list[str], Optional[int]]:
        """Info labels and capacity from sysfs."""
        base = self.sysfs / "block" / dev
        serial = _read(base / "device" / "serial") or ""
        labels = [dev, _read(base / "device" / "model") or "",
                  hashlib.sha256(serial.encode()).hexdigest()[:12] if serial else "",
                  _read(base / "device" / "firmware_rev") or "", _read(base / "queue" / "rotational") or ""]
        sectors = _read(base / "size")
        return labels, int(sectors) * SECTOR if sectors and sectors.isdigit() else None

    def _slow_facts(self, disks, tier2_exists: bool) -> tuple[dict, dict]:
        """Roles and identities cost a stat, a realpath and five sysfs reads per disk, and change only
        when disks come or go or the tier2 directory moves: refreshed every FACTS_TTL_S, on a new disk set, or
        when the tier2 directory appears or goes."""
        key = (tuple(sorted(disks)), tier2_exists)
        if self._facts is None or self._facts[0] != key or time.monotonic() >= self._facts[1]:
            self._facts = (key, time.monotonic() + FACTS_TTL_S, self.roles(), {d: self.identity(d) for d in disks})
        return self._facts[2], self._facts[3]

    def collect(self):
        disks = self.disks()
        tier2_exists = bool(self.tier2_path) and Path(self.tier2_path).is_dir()
        roles, identities = self._slow_facts(disks, tier2_exists)

        def role(dev: str) -> str:
            r = roles.get(dev, set())
            return "kv_tier2" if "kv_tier2" in r else ("system" if "system" in r else "other")

        labels = list(S.DISK_LABELS)
        for field, name, doc, scale in S.DISK_COUNTERS:
            fam = CounterMetricFamily(S.DISK(name), doc, labels=labels)
            for dev, s in disks.items():
                if field in s:
                    fam.add_metric([dev, role(dev)], s[field] * scale)
            if fam.samples:
                yield fam
        now = S.DISK_IO_NOW.family()
        for dev, s in disks.items():
            now.add_metric([dev, role(dev)], s["io_in_progress"])
        yield now
        info, size = S.DISK_INFO.family(), S.DISK_SIZE.family()
        for dev in disks:
            info_labels, capacity = identities[dev]
            info.add_metric(info_labels, 1)
            if capacity is not None:
                size.add_metric([dev], capacity)
        yield info
        yield size
        role_info = S.DISK_ROLE_INFO.family()
        for dev, rs in sorted(roles.items()):
            for r in sorted(rs):
                role_info.add_metric([dev, r], 1)
        yield role_info
        yield self.proc.family()
        if self.tier2_path:
            # a typo'd or unmounted path still gets the disk it would be created on, but never silently
            yield S.TIER2_PATH_EXISTS.family(1.0 if tier2_exists else 0.0)
            try:
                fs = os.statvfs(nearest_existing(self.tier2_path))
            except OSError:
                return
            yield S.TIER2_FS_SIZE.family(fs.f_blocks * fs.f_frsize)
            yield S.TIER2_FS_AVAIL.family(fs.f_bavail * fs.f_frsize)

