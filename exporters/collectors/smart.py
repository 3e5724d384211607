"""NVMe health (SMART / Health Information log) through smartctl or nvme-cli, read in the background.

Health values move over minutes, and an admin command on every 250 ms scrape would itself be
traffic on the device under test, so one thread refreshes them every ``interval_s`` and scrapes
publish the last answer. A missing tool, a missing permission or a device without a health log
gives ``sparkrig_nvme_smart_up 0`` and one log line, never an exception.
"""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
from typing import Callable, Iterable, Optional

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from configs.vocabulary import series as S

log = logging.getLogger("exporters.smart")
DATA_UNIT_BYTES = 512_000          # NVMe "data unit": 1000 blocks of 512 bytes
KELVIN = 273.15
TOOLS = ("smartctl", "nvme")

# our key -> (smartctl key in nvme_smart_health_information_log, nvme-cli key, scale)
HEALTH_FIELDS = {
    "critical_warning": ("critical_warning", "critical_warning", 1),
    "available_spare_ratio": ("available_spare", "avail_spare", 0.01),
    "available_spare_threshold_ratio": ("available_spare_threshold", "spare_thresh", 0.01),
    "percentage_used_ratio": ("percentage_used", "percent_used", 0.01),
    "data_read_bytes": ("data_units_read", "data_units_read", DATA_UNIT_BYTES),
    "data_written_bytes": ("data_units_written", "data_units_written", DATA_UNIT_BYTES),
    "media_errors": ("media_errors", "media_errors", 1),
    "error_log_entries": ("num_err_log_entries", "num_err_log_entries", 1),
    "unsafe_shutdowns": ("unsafe_shutdowns", "unsafe_shutdowns", 1),
    "warning_temperature_time_seconds": ("warning_temp_time", "warning_temp_time", 60),
    "critical_temperature_time_seconds": ("critical_comp_time", "critical_comp_time", 60),
}
class SmartError(Exception):
    """The tool ran but gave no health log; the message is the tool's own."""


def parse_smartctl(doc: dict) -> dict[str, float]:
    """Health values from `smartctl -j -a` output (temperatures already in Celsius)."""
    health = doc.get("nvme_smart_health_information_log")
    if not isinstance(health, dict):
        messages = [m.get("string", "") for m in doc.get("smartctl", {}).get("messages", [])]
        raise SmartError("; ".join(m for m in messages if m) or "no NVMe health log in smartctl output")
    out = {key: float(health[src]) * scale for key, (src, _, scale) in HEALTH_FIELDS.items() if src in health}
    if "temperature" in health:
        out["temperature_celsius"] = float(health["temperature"])
    thresholds = doc.get("nvme_composite_temperature_threshold") or {}
    for level in ("warning", "critical"):
        if thresholds.get(level):
            out[f"temperature_{level}_celsius"] = float(thresholds[level])
    return out


def parse_nvme_cli(doc: dict) -> dict[str, float]:
    """Health values from `nvme smart-log -o json`: temperature in kelvin; newer releases nest
    critical_warning as an object with its bits and a ``value``."""
    if "temperature" not in doc and "critical_warning" not in doc:
        raise SmartError("no health log in nvme smart-log output")
    out = {}
    for key, (_, src, scale) in HEALTH_FIELDS.items():
        value = doc.get(src)
        if isinstance(value, dict):
            value = value.get("value")
        if isinstance(value, (int, float)):
            out[key] = float(value) * scale
    if isinstance(doc.get("temperature"), (int, float)):
        out["temperature_celsius"] = round(doc["temperature"] - KELVIN, 2)
    return out


def pick_tool(preference: str, which: Callable[[str], Optional[str]] = shutil.which) -> Optional[str]:
    candidates = TOOLS if preference == "auto" else (preference,)
    return next((t for t in candidates if which(t)), None)


def read_health(tool: str, device: str, timeout_s: float = 10.0) -> dict[str, float]:
    """One device's health; raises SmartError with the tool's reason when it has none."""
    cmd = (["smartctl", "-j", "-a", f"/dev/{device}"] if tool == "smartctl"
           else ["nvme", "smart-log", "-o", "json", f"/dev/{device}"])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise SmartError(f"{tool} gave no answer within {timeout_s:g} s") from None
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise SmartError(lines[0] if lines else f"{tool} exited with status {proc.returncode}") from None
    return parse_smartctl(doc) if tool == "smartctl" else parse_nvme_cli(doc)


class SmartReader:
    """Background refresher of health logs for the disks named by ``devices()``."""

    def __init__(self, devices: Callable[[], Iterable[str]], tool: str = "auto", interval_s: float = 60.0) -> None:
        self.devices = devices
        self.interval_s = interval_s
        self.tool = pick_tool(tool)
        self.results: dict[str, dict[str, float] | None] = {}
        self._reported: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        if self.tool is None:
            wanted = "smartctl or nvme" if tool == "auto" else tool
            log.warning("NVMe health: %s is not installed (apt-get install smartmontools nvme-cli); %s is 0",
                        wanted, S.NVME_SMART_UP.name)

    def _report_once(self, device: str, message: str) -> None:
        if (device, message) not in self._reported:
            self._reported.add((device, message))
            log.warning("NVMe health for %s unavailable: %s; %s is 0", device, message, S.NVME_SMART_UP.name)

    def refresh(self) -> None:
        for device in list(self.devices()):
            if self.tool is None:
                result = None
            else:
                try:
                    result = read_health(self.tool, device)
                except (SmartError, OSError) as exc:
                    self._report_once(device, str(exc))
                    result = None
            with self._lock:
                self.results[device] = result

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="smart-refresh", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            self.refresh()
            if self._stop.wait(self.interval_s):
                return

    def stop(self) -> None:
        self._stop.set()

    def collect(self):
        with self._lock:
            results = dict(self.results)
        up = S.NVME_SMART_UP.family()
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for device, values in sorted(results.items()):
            up.add_metric([device], 0 if values is None else 1)
            for key, value in (values or {}).items():
                fam = families.get(key)
                if fam is None:
                    kind = CounterMetricFamily if key in S.NVME_HEALTH_COUNTERS else GaugeMetricFamily
                    fam = families[key] = kind(S.NVME(key), S.NVME.fields[key], labels=["device"])
                fam.add_metric([device], value)
        yield up
        yield from families.values()
