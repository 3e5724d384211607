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
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd
import requests

from analysis.steps import by_step, load_run, server_outcomes, step_table
from configs import Harness
from configs.paths import resolve
from configs.probe import served_models
from configs.runfiles import read_manifest
from configs.vocabulary import series as S
from exporters.collectors import procio
from exporters.collectors.nvme import DiskCollector
from exporters.collectors.smart import SmartReader, pick_tool
from exporters.registry import kvbm_collector

from . import local
from .launch import end_locust, restart_stack_b, run_locust, say, stop_simulator
from .procs import Supervisor

SIM = "stacksim-B"


class LegError(Exception):
    """A leg left no readable run (Locust failed before it, or its files are damaged): the message says which."""


def kv_reader(cfg: Harness, profile: str):
    """The exporter's own KV tier collector for Stack B's offload, KVBM or TensorRT-LLM's
    (exporters.registry.kvbm_collector), or None without one: a leg reads its KV evidence as the analysis
    does, the same names, block size and bytes."""
    b = cfg.stacks["stackB"]
    urls = b.kv_metrics_urls
    return kvbm_collector(cfg, profile, urls[0], worker_urls=urls[1:]) if urls else None


def kv_evidence(reader) -> Optional[dict]:
    """KV moved through the disk tier so far (blocks, and bytes: blocks x the block size the collector
    resolves), the bytes the simulator says it read from its tier2 file, and the counter resets the collector
    has seen; None while KVBM does not answer. One reader per leg: its counters carry on across a restart of
    KVBM (the collector's Monotonic), so after - before is the leg's growth and never negative. nan where
    KVBM exposes no such counter: not a measured zero."""
    if reader is None:
        return None
    fams = {f.name: f for f in reader.collect()}
    if not any(s.value for s in fams[S.KVBM_UP.name].samples if re.fullmatch(S.KV_SOURCE_TARGET_RE, s.labels["target"])):
        return None

    def summed(series, keep) -> float:
        got = [s.value for s in getattr(fams.get(series.name), "samples", ())
               if s.name == series.total and keep(s.labels)]
        return float(sum(got)) if got else math.nan
    to_disk = lambda lb: lb["direction"] == "offload" and lb["to_tier"] == "disk"          # noqa: E731
    from_disk = lambda lb: lb["direction"] == "onboard" and lb["from_tier"] == "disk"      # noqa: E731
    return {"offload_disk_blocks": summed(S.KV_TRANSFER_BLOCKS, to_disk),
            "onboard_disk_blocks": summed(S.KV_TRANSFER_BLOCKS, from_disk),
            "offload_disk_bytes": summed(S.KV_TRANSFER_BYTES, to_disk),
            "onboard_disk_bytes": summed(S.KV_TRANSFER_BYTES, from_disk),
            "tier2_read_bytes": summed(S.KV_TIER2_FILE_BYTES, lambda lb: lb["direction"] == "read"),
            "resets": summed(S.KVBM_COUNTER_RESETS, lambda lb: True)}


KV_FIELDS = ("offload_disk_blocks", "onboard_disk_blocks", "offload_disk_bytes", "onboard_disk_bytes",
             "tier2_read_bytes")


def grown(before: Optional[dict], after: Optional[dict]) -> dict:
    """Each KV field's growth over the leg (nan where either end is unknown) and whether KVBM restarted."""
    out = {k: (after[k] - before[k]) if before and after else math.nan for k in KV_FIELDS}
    out["counter_reset"] = bool(before and after and after["resets"] > before["resets"])
    return out


def leg_metrics(results: Path, run_id: str) -> tuple[dict, int, str]:
    """The replay phase's TTFC percentiles and throughput over its measured window, as analysis.steps takes
    every step (its warm-up left out), the server's errors over the whole leg (analysis.steps' rule), and the
    latency used: TTFC, or end-to-end time ("e2e") where no chunk carried text."""
    manifest, records = load_run(results / run_id)
    errors = int((server_outcomes(manifest, records) & ~records["ok"].astype(bool)).sum()) if len(records) else 0
    table = step_table(manifest, records) if manifest.get("steps") else pd.DataFrame()
    replay = by_step(table[table["phase"] == "replay"]) if not table.empty else table
    if replay.empty:
        return ({"ttfc_p50_ms": math.nan, "ttfc_p95_ms": math.nan, "ttfc_p99_ms": math.nan,
                 "throughput_rps": math.nan, "replay_requests": 0}, errors, "ttfc")
    row = replay.median(numeric_only=True)
    used, key = ("ttfc", "ttft") if not math.isnan(row["ttft_p50_s"]) else ("e2e", "e2e")
    return ({"ttfc_p50_ms": row[f"{key}_p50_s"] * 1000, "ttfc_p95_ms": row[f"{key}_p95_s"] * 1000,
             "ttfc_p99_ms": row[f"{key}_p99_s"] * 1000, "throughput_rps": float(row["throughput_rps"]),
             "replay_requests": int(replay["requests"].sum())}, errors, used)


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
        self.profile = self.cfg.hypotheses["H9"].profile

    def restart(self, mode: str) -> None:
        restart_stack_b(self.cfg, self.sup, self.profile, mode)

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
        if need_kvbm and kv_evidence(kv_reader(self.cfg, self.profile)) is None:
            codes.append("PREFLIGHT_KVBM_METRICS_UNREACHABLE")
        return codes

    def run(self, mode: str, run_id: str, concurrency: int, context_tokens: int, duration_s: int,
            control: bool = False) -> dict:
        """One leg; the row of numbers it leaves (the storage evidence goes to storage-<run_id>.json). A
        ``control`` leg leaves the thrash out: its prefixes stay in tier0, where no tier mode can help."""
        pid = self.serving_pid()
        tier2 = str(resolve(self.cfg.profiles[self.profile].tier2_path))
        evidence = {"before": storage_snapshot(tier2, pid)}
        reader = kv_reader(self.cfg, self.profile)
        before = kv_evidence(reader)
        # SESSION_ID=off: a leg compares tier modes by replaying prefixes; session metadata (which Dynamo
        # 1.6.1's frontend refuses, blocking H9) is H9's own question, and a blocked leg is no comparison
        code, _ = run_locust("H9", "stackB", self.cfg, self.running,
                             (("CONCURRENCY", str(concurrency)), ("CONTEXT_TOKENS", str(context_tokens)),
                              ("DURATION_S", str(duration_s)), ("TIER_MODE", mode), ("RUN_ID", run_id),
                              ("SESSION_ID", "off"), *((("PHASES", "populate,replay"),) if control else ())))
        after = kv_evidence(reader)
        evidence["after"] = storage_snapshot(tier2, pid)
        (self.out / f"storage-{run_id}.json").write_text(json.dumps(evidence, indent=1) + "\n")
        try:
            metrics, errors, used = leg_metrics(self.results, run_id)
            manifest = read_manifest(self.results / run_id / "manifest.json")
            replay_hash = manifest["request_manifest_hash"]
        except (OSError, ValueError) as exc:
            raise LegError(f"leg {run_id} (locust exit {code}) left no readable run: {exc}") from None
        io_before, io_after = evidence["before"]["process_io"], evidence["after"]["process_io"]
        row = {"mode": mode, "control": control, "run_id": run_id, "concurrency": concurrency,
               "context_tokens": context_tokens, "request_manifest_hash": replay_hash,
               **metrics, "errors": errors, "metric_used": used, **grown(before, after),
               "process_read_bytes": io_after["read_bytes"] - io_before["read_bytes"] if io_before and io_after
               else math.nan, "locust_exit": code,
               "run_status": manifest["status"], "blocked": (manifest.get("blocked") or {}).get("reason") or "",
               "disk_offload_filter": manifest.get("disk_offload_filter")}
        say(f"    TTFC p50 {row['ttfc_p50_ms']:.1f} ms, p99 {row['ttfc_p99_ms']:.1f} ms, {row['replay_requests']} "
            f"replayed, {errors} errors, {row['onboard_disk_blocks']:g} blocks onboarded from disk")
        return row

    def close(self) -> None:
        """Stops what the legs started (the simulated Stack B), nothing else: the demo's Prometheus and
        exporters go on."""
        end_locust(self.running)
        if not self.real:
            stop_simulator(self.sup, "stackB")
