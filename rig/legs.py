"""One leg of a tier-mode experiment: Stack B restarted in a tier mode, one H9 run (populate, thrash,
replay) at a fixed concurrency, and what the leg showed — replay-phase TTFC and throughput, errors, the
KVBM disk counters and the tier2 bytes really read, the replay list's hash, and the storage evidence
(the tier2 disk's identity and health log, and the serving process's own I/O, before and after).

Shared by `rig pairs` (AB/BA repeats) and `rig rehydrate` (the fixed-pressure concurrency sweep).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import requests
from prometheus_client.parser import text_string_to_metric_families

from analysis.steps import pct
from configs import Harness
from configs.paths import resolve
from configs.probe import served_models
from configs.runfiles import CANCELLED_BY_STEP, read_manifest, read_records
from configs.vocabulary import series as S
from configs.vocabulary import stacks as V
from exporters.collectors import procio
from exporters.collectors.nvme import DiskCollector
from exporters.collectors.smart import SmartReader, pick_tool

from . import local
from .launch import end_locust, restart_real_stack_b, run_locust, say, start_simulator, stop_simulator
from .procs import Supervisor

SIM = "stacksim-B"


class LegError(Exception):
    """A leg left no readable run (Locust failed before it, or its files are damaged): the message says which."""


def kvbm_counters(url: Optional[str]) -> Optional[dict]:
    """Blocks offloaded to and onboarded from disk, and bytes read from the tier2 file, now; None when
    unreachable."""
    if not url:
        return None
    try:
        text = requests.get(url, timeout=5).text
    except requests.RequestException:
        return None
    out = {"onboard_disk_blocks": 0.0, "offload_disk_blocks": 0.0, "tier2_read_bytes": math.nan}
    to_disk = {V.KVBM + n + t for n in ("offload_blocks_h2d", "offload_blocks_d2d") for t in ("", "_total")}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in (V.KVBM + "onboard_blocks_d2d", V.KVBM + "onboard_blocks_d2d_total"):
                out["onboard_disk_blocks"] = s.value
            if s.name in to_disk:
                out["offload_disk_blocks"] += s.value
            if s.name == S.SIM_TIER2_IO.total and s.labels.get("direction") == "read":
                out["tier2_read_bytes"] = s.value
    return out


def increase(before: Optional[float], after: Optional[float]) -> tuple[float, bool]:
    """How much a counter grew over a leg, and whether it was reset meanwhile. A counter that went backwards
    started again from zero (its process restarted): what it counts now is the growth since, as Prometheus'
    increase() and the exporter's Monotonic take it — a lower bound, never a negative count."""
    if before is None or after is None or math.isnan(before) or math.isnan(after):
        return math.nan, False
    return (after - before, False) if after >= before else (after, True)


def leg_metrics(results: Path, run_id: str) -> tuple[dict, int, str]:
    """Replay-phase TTFC percentiles and throughput, errors of the whole leg, and the metric used."""
    run = results / run_id
    manifest = read_manifest(run / "manifest.json")
    records = read_records(run / "requests.jsonl")
    blocked = (manifest.get("blocked") or {}).get("reason") or ""
    errors = sum(1 for r in records if not r["ok"] and r.get("error_class") != CANCELLED_BY_STEP
                 and not (r.get("status") == 400 and r.get("error") and r["error"] in blocked))
    replay = [r for r in records if r["phase"] == "replay" and r["ok"]]
    ttfc = [r["ttft_s"] * 1000 for r in replay if r.get("ttft_s") is not None]
    used = "ttfc"
    if not ttfc:                       # no chunk carried text: end-to-end time stands in, and it is said
        ttfc, used = [r["e2e_s"] * 1000 for r in replay if r.get("e2e_s") is not None], "ttft"
    steps = [s for s in manifest.get("steps", []) if s.get("phase") == "replay"]
    span = sum((s.get("end") or s["start"]) - s["start"] for s in steps) or math.nan
    return ({"ttfc_p50_ms": pct(ttfc, .5), "ttfc_p95_ms": pct(ttfc, .95), "ttfc_p99_ms": pct(ttfc, .99),
             "throughput_rps": len(replay) / span, "replay_requests": len(replay)}, errors, used)


def process_io(pid: Optional[int]) -> Optional[dict]:
    """The serving process's own storage traffic (exporters.collectors.procio: the exporter reads the same)."""
    if not pid:
        return None
    out = procio.proc_io(pid)
    if out is not None:
        out["cgroup"] = procio.cgroup_io(pid)
    return out


def storage_snapshot(tier2_path: str, pid: Optional[int]) -> dict:
    """The tier2 disk's identity and health log (where smartctl or nvme-cli can read it) and the serving
    process's I/O counters, at one moment: what a leg's storage claims rest on."""
    disks = DiskCollector(tier2_path=tier2_path)
    devices = sorted(d for d, roles in disks.roles().items() if "kv_tier2" in roles)
    out: dict = {"tier2_path": tier2_path, "devices": {}, "process_io": process_io(pid)}
    reader = SmartReader(lambda: [d for d in devices if d in disks.nvme_namespaces()]) if pick_tool("auto") else None
    if reader is not None:
        reader.refresh()
    for dev in devices:
        labels, capacity = disks.identity(dev)
        out["devices"][dev] = {"model": labels[1], "serial_sha256": labels[2], "firmware": labels[3],
                               "capacity_bytes": capacity, "health": reader.results.get(dev) if reader else None}
    return out


@dataclass
class LegRunner:
    """Runs legs against the simulated Stack B (restarted per leg) or, with STACK_B_RESTART_CMD, a real one."""
    cfg: Harness                       # its overlay is what every leg's processes read
    out: Path
    running: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.real = bool(os.environ.get("STACK_B_RESTART_CMD"))
        self.sup = Supervisor(local.run_dir(self.cfg))
        self.results = resolve(self.cfg.results_dir)
        self.kvbm_url = self.cfg.stacks["stackB"].kvbm_metrics_url
        self.profile = self.cfg.hypotheses["H9"].profile

    def restart(self, mode: str) -> None:
        if self.real:
            restart_real_stack_b(self.cfg, self.profile, mode)
            return
        stop_simulator(self.sup, "stackB")
        start_simulator(self.cfg, self.sup, "stackB", self.profile, tier_mode=mode)

    def serving_pid(self) -> Optional[int]:
        if self.real:
            pid = os.environ.get("STACK_B_PID", "")
            return int(pid) if pid.isdigit() else None
        return self.sup.pid_of(SIM)

    def preflight(self, need_kvbm: bool) -> list[str]:
        stack = self.cfg.stacks["stackB"]
        base = stack.openai_base.rsplit("/v1", 1)[0]
        codes = []
        try:
            if requests.get(base + "/health", timeout=5).status_code != 200:
                codes.append("PREFLIGHT_FRONTEND_UNHEALTHY")
        except requests.RequestException:
            return ["PREFLIGHT_FRONTEND_UNREACHABLE"]
        if self.cfg.models[stack.model].handle not in (served_models(stack.openai_base)[0] or ()):
            codes.append("PREFLIGHT_MODEL_NOT_REGISTERED")
        if need_kvbm and kvbm_counters(self.kvbm_url) is None:
            codes.append("PREFLIGHT_KVBM_METRICS_UNREACHABLE")
        return codes

    def run(self, mode: str, run_id: str, concurrency: int, context_tokens: int, duration_s: int) -> dict:
        """One leg; the row of numbers it leaves (the storage evidence goes to storage-<run_id>.json)."""
        pid = self.serving_pid()
        tier2 = str(resolve(self.cfg.profiles[self.profile].tier2_path))
        evidence = {"before": storage_snapshot(tier2, pid)}
        before = kvbm_counters(self.kvbm_url)
        # SESSION_ID=off: a leg compares tier modes by replaying prefixes; session metadata (which Dynamo
        # 1.6.1's frontend refuses, blocking H9) is H9's own question, and a blocked leg is no comparison
        code, _ = run_locust("H9", "stackB", self.cfg, self.running,
                             (("CONCURRENCY", str(concurrency)), ("CONTEXT_TOKENS", str(context_tokens)),
                              ("DURATION_S", str(duration_s)), ("TIER_MODE", mode), ("RUN_ID", run_id),
                              ("SESSION_ID", "off")))
        after = kvbm_counters(self.kvbm_url)
        evidence["after"] = storage_snapshot(tier2, pid)
        (self.out / f"storage-{run_id}.json").write_text(json.dumps(evidence, indent=1) + "\n")
        try:
            metrics, errors, used = leg_metrics(self.results, run_id)
            manifest = read_manifest(self.results / run_id / "manifest.json")
            replay_hash = manifest["request_manifest_hash"]
        except (OSError, ValueError) as exc:
            raise LegError(f"leg {run_id} (locust exit {code}) left no readable run: {exc}") from None
        io_before, io_after = evidence["before"]["process_io"], evidence["after"]["process_io"]
        kv = {k: increase(before and before[k], after and after[k])
              for k in ("offload_disk_blocks", "onboard_disk_blocks", "tier2_read_bytes")}
        row = {"mode": mode, "run_id": run_id, "concurrency": concurrency, "request_manifest_hash": replay_hash,
               **metrics, "errors": errors, "metric_used": used, **{k: v for k, (v, _) in kv.items()},
               "process_read_bytes": increase(io_before and io_before["read_bytes"],
                                              io_after and io_after["read_bytes"])[0],
               "counter_reset": any(reset for _, reset in kv.values()), "locust_exit": code,
               "run_status": manifest["status"], "blocked": (manifest.get("blocked") or {}).get("reason") or ""}
        say(f"    TTFC p50 {row['ttfc_p50_ms']:.1f} ms, p99 {row['ttfc_p99_ms']:.1f} ms, {row['replay_requests']} "
            f"replayed, {errors} errors, {row['onboard_disk_blocks']:g} blocks onboarded from disk")
        return row

    def close(self) -> None:
        """Stops what the legs started (the simulated Stack B), nothing else: the demo's Prometheus and
        exporters go on."""
        end_locust(self.running)
        if not self.real:
            stop_simulator(self.sup, "stackB")
