"""GPU through NVML (nvidia-ml-py): utilisation, memory where supported, power, energy, temperature,
clocks, throttle reasons, PCIe throughput and per-process memory.

On GB10 (unified memory) NVML answers NOT_SUPPORTED for device memory and PCIe figures while the
rest works. Each field that answers NOT_SUPPORTED once is skipped from then on and reported as
``sparkrig_gpu_field_supported 0``; no NVML library, no driver or no GPU gives ``sparkrig_gpu_up 0``
and one log line, and the exporter keeps serving the other collectors.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from configs.vocabulary import series as S

log = logging.getLogger("exporters.gpu")
RETRY_INIT_S = 30.0

try:
    import pynvml
except ImportError:  # the package is a dependency, but a stripped-down image may lack it
    pynvml = None

# Bits of nvmlDeviceGetCurrentClocksEventReasons (formerly ...ThrottleReasons), nvml.h names.
THROTTLE_REASONS = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting",
}


def _not_supported(exc: Exception) -> bool:
    return pynvml is not None and isinstance(exc, pynvml.NVMLError) and \
        exc.value in (pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)


class FieldGate:
    """Remembers which (device, field) pairs NVML does not support, so they are asked once only."""

    def __init__(self) -> None:
        self.unsupported: set[tuple[int, str]] = set()
        self.seen: set[tuple[int, str]] = set()

    def read(self, index: int, field: str, call: Callable[[], object]):
        key = (index, field)
        if key in self.unsupported:
            return None
        self.seen.add(key)
        try:
            return call()
        except Exception as exc:  # NVMLError subclasses are created at import time by pynvml
            if _not_supported(exc):
                self.unsupported.add(key)
                log.info("GPU %d: %s is not supported by NVML here; not asking again", index, field)
                return None
            raise


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Nvml:
    """One NVML session shared by the GPU collector and the UMA collector's per-process GPU memory."""

    def __init__(self) -> None:
        self.ok = False
        self.reason = ""
        self._next_try = 0.0
        self._lock = threading.Lock()
        self._logged: set[str] = set()

    def ready(self) -> bool:
        with self._lock:
            if self.ok or time.monotonic() < self._next_try:
                return self.ok
            self._next_try = time.monotonic() + RETRY_INIT_S
            if pynvml is None:
                self.reason = "nvidia-ml-py is not installed"
            else:
                try:
                    pynvml.nvmlInit()
                    self.ok = pynvml.nvmlDeviceGetCount() > 0
                    self.reason = "" if self.ok else "NVML sees no GPU"
                except pynvml.NVMLError as exc:
                    self.reason = f"NVML unavailable: {exc}"
            if not self.ok:
                self.report(self.reason)
            return self.ok

    def report(self, reason: str) -> None:
        if reason not in self._logged:
            self._logged.add(reason)
            log.warning("%s; %s is 0 (the other collectors keep serving)", reason, S.GPU_UP.name)

    def handles(self) -> list:
        return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]

    def processes(self, handle) -> list:
        procs = []
        for name in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            try:
                procs.extend(getattr(pynvml, name)(handle))
            except pynvml.NVMLError:
                continue
        return procs

    def memory_by_pid(self) -> Optional[dict[int, int]]:
        """GPU memory per process over all GPUs, or None when NVML cannot tell."""
        if not self.ready():
            return None
        out: dict[int, int] = {}
        for handle in self.handles():
            for p in self.processes(handle):
                if p.usedGpuMemory is not None:
                    out[p.pid] = out.get(p.pid, 0) + p.usedGpuMemory
        return out


def _memory_info(handle):
    """v2 first: its ``used`` leaves out driver-reserved memory, as nvidia-smi does."""
    try:
        return pynvml.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2)
    except pynvml.NVMLError as exc:
        if not _not_supported(exc):
            raise
        return pynvml.nvmlDeviceGetMemoryInfo(handle)


def _throttle_call(handle):
    fn = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
        pynvml.nvmlDeviceGetCurrentClocksThrottleReasons
    return fn(handle)


class GpuCollector:
    def __init__(self, nvml: Optional[Nvml] = None) -> None:
        self.nvml = nvml or Nvml()
        self.gate = FieldGate()

    def collect(self):
        up = S.GPU_UP.family()
        families = []
        if self.nvml.ready():
            try:
                families = self._families()
            except pynvml.NVMLError as exc:   # e.g. GPU lost, driver unloaded: this scrape has no GPU data
                self.nvml.report(f"NVML failed during the scrape: {exc}")
        up.add_metric([], 1 if families else 0)
        yield up
        yield from families

    def _families(self) -> list:
        g = {}

        def gauge(series: S.Series):
            if series.name not in g:
                g[series.name] = series.family()
            return g[series.name]
        energy, info = S.GPU_ENERGY.family(), S.GPU_INFO.family()
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        for index, h in enumerate(self.nvml.handles()):
            read = lambda field, call: self.gate.read(index, field, call)  # noqa: E731
            lb = [str(index), _text(pynvml.nvmlDeviceGetUUID(h))]
            info.add_metric(lb + [_text(pynvml.nvmlDeviceGetName(h)), driver], 1)
            util = read("utilization", lambda: pynvml.nvmlDeviceGetUtilizationRates(h))
            if util is not None:
                gauge(S.GPU_UTILIZATION).add_metric(lb, util.gpu / 100)
                gauge(S.GPU_MEMORY_UTILIZATION).add_metric(lb, util.memory / 100)
            mem = read("memory", lambda: _memory_info(h))
            if mem is not None:
                gauge(S.GPU_MEMORY_TOTAL).add_metric(lb, mem.total)
                gauge(S.GPU_MEMORY_USED).add_metric(lb, mem.used)
            for field, series, call, scale in (
                ("power", S.GPU_POWER, pynvml.nvmlDeviceGetPowerUsage, 1e-3),
                ("temperature", S.GPU_TEMPERATURE,
                 lambda x: pynvml.nvmlDeviceGetTemperature(x, pynvml.NVML_TEMPERATURE_GPU), 1),
                ("sm_clock", S.GPU_SM_CLOCK, lambda x: pynvml.nvmlDeviceGetClockInfo(x, pynvml.NVML_CLOCK_SM), 1e6),
                ("memory_clock", S.GPU_MEMORY_CLOCK,
                 lambda x: pynvml.nvmlDeviceGetClockInfo(x, pynvml.NVML_CLOCK_MEM), 1e6),
                ("pcie_tx", S.GPU_PCIE_TX,
                 lambda x: pynvml.nvmlDeviceGetPcieThroughput(x, pynvml.NVML_PCIE_UTIL_TX_BYTES), 1024),
                ("pcie_rx", S.GPU_PCIE_RX,
                 lambda x: pynvml.nvmlDeviceGetPcieThroughput(x, pynvml.NVML_PCIE_UTIL_RX_BYTES), 1024),
            ):
                value = read(field, lambda: call(h))
                if value is not None:
                    gauge(series).add_metric(lb, value * scale)
            joules = read("energy", lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(h))
            if joules is not None:
                energy.add_metric(lb, joules / 1000)
            reasons = read("throttle_reasons", lambda: _throttle_call(h))
            if reasons is not None:
                fam = gauge(S.GPU_THROTTLE)
                for bit, reason in THROTTLE_REASONS.items():
                    fam.add_metric(lb + [reason], 1 if reasons & bit else 0)
            procs = gauge(S.GPU_PROCESS_MEMORY)
            for p in self.nvml.processes(h):
                if p.usedGpuMemory is not None:
                    procs.add_metric(lb + [str(p.pid)], p.usedGpuMemory)
            supported = gauge(S.GPU_FIELD_SUPPORTED)
            for (i, field) in sorted(self.gate.seen):
                if i == index:
                    supported.add_metric(lb + [field], 0 if (i, field) in self.gate.unsupported else 1)
        return [info, *g.values()] + ([energy] if energy.samples else [])

