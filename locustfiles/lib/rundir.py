"""One run as the load generator starts it: its id, its directory under results/ (room for it checked first),
the manifest's first document (plan, config, host, git), the endpoint's readiness and Grafana step
annotations. The files themselves follow configs.runfiles."""
from __future__ import annotations

import math
import os
import platform
import resource
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

import requests

from configs import ConfigError, Harness, RunPlan, WorkloadParams, redact
from configs.paths import PROJECT_ROOT, check_name, ensure_data_dir, make_dir, safe_join
from configs.runfiles import SCHEMA_VERSION, WRITER_LOCK, Manifest, hold_writer_lock, utc
from configs.schema import to_plain

# What a run's records take: a record's line without its chunk gaps (about 720 bytes with every field set),
# one more gap per output token (itl_s), and the requests a closed-loop user is taken to send a second.
RECORD_BYTES, GAP_BYTES, CLOSED_LOOP_RPS = 720, 9, 1.0


def run_dir(cfg: Harness, run_id: str) -> Path:
    return safe_join(ensure_data_dir(cfg.results_dir), check_name(run_id, "run id"))


def create_run_dir(cfg: Harness, run_id: str, reuse: bool) -> tuple[Path, int]:
    """The run's directory, made by this process (one os.mkdir: of two runs started with one RUN_ID, one
    gets it and the other is refused), and its writer lock, held for the process's life. An existing
    directory is refused, untouched, unless ``reuse`` (RUN_ID_REUSE=1) — and even then while its writer lives."""
    directory = run_dir(cfg, run_id)
    try:
        make_dir(directory)
    except FileExistsError:
        if not reuse:
            raise ConfigError(f"run {run_id} exists already ({directory}): a RUN_ID names one run; choose another "
                              "RUN_ID, or set RUN_ID_REUSE=1 to add this run to it") from None
    lock = hold_writer_lock(directory)
    if lock is None:
        raise ConfigError(f"run {run_id} is being written by a live process (it holds {directory / WRITER_LOCK})")
    return directory, lock


def expected_bytes(steps: list[WorkloadParams], step_s: float, run_time: Optional[float], trace_requests: int) -> int:
    """The records a run is expected to write, in bytes: per slot, in order and cut at Locust's ``-t``, its
    requests (a trace's, an open loop's rate x time, or a closed loop's users x time at CLOSED_LOOP_RPS each,
    think time added) times a record's size for the step's max_tokens."""
    total, left = 0.0, run_time or math.inf
    for p in steps:
        t = min(step_s, left)
        if t <= 0:
            break
        left -= t
        if trace_requests:
            n = trace_requests
        elif p.arrival_rate_rps > 0:
            n = p.arrival_rate_rps * t
        else:
            n = p.concurrency * t / (1 / CLOSED_LOOP_RPS + p.think_time_s)
        total += n * (RECORD_BYTES + GAP_BYTES * p.max_tokens)
    return int(total)


def space_problem(cfg: Harness, need: int) -> Optional[str]:
    """One line when the results filesystem (or this process's file-size limit, ulimit -f) cannot hold the
    records the run is expected to write: said before the run directory exists, not found out mid-run."""
    results = ensure_data_dir(cfg.results_dir)
    room = shutil.disk_usage(results).free
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        room = min(room, limit)
    if room >= need:
        return None
    return (f"{results} has room for {room / 2**20:.2f} MiB of records, but this run is expected to write "
            f"{need / 2**20:.2f} MiB: free space there, or shorten the run (DURATION_S, CONCURRENCY, -t)")


def git_revision() -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                                  timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    rev = git("rev-parse", "HEAD")
    return {"commit": rev or None, "dirty": bool(git("status", "--porcelain")) if rev else None}


def host_facts() -> dict:
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    import locust
    return {"hostname": socket.gethostname(), "kernel": platform.release(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "mem_total_bytes": mem, "python": platform.python_version(),
            "locust": locust.__version__}


def start_manifest(directory: Path, run_id: str, plan: RunPlan, cfg: Harness, extra: dict) -> Manifest:
    """The run's manifest as it starts: everything that shaped the run, before any step."""
    now = time.time()
    doc = redact.plain({
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "hypothesis": plan.hypothesis_id,
        "title": plan.hypothesis.title, "stack": plan.stack_name, "profile": plan.profile_name,
        "workload": plan.hypothesis.workload, "model": plan.model_handle, "endpoint": plan.openai_base, "tier_mode": plan.tier_mode,
        # who moved the KV between tiers (None: a stack without tiers), and KVBM's disk-offload filter as the
        # profile sets it for the worker (None: no disk tier in this run, or TensorRT-LLM's offload, which has none)
        "kv_offload": plan.stack.kv_offload if plan.stack.kv_tiering else None,
        "disk_offload_filter": cfg.profiles[plan.profile_name].disk_offload_filter
        if plan.stack.kv_tiering and plan.stack.kv_offload == "kvbm" and plan.tier_mode == "B2"
        and cfg.profiles[plan.profile_name].tier2_bytes else None,
        "rig": cfg.rig_labels()["rig"], "site": cfg.site,
        "seed": plan.seed, "repetitions": plan.repetitions, "step_duration_s": plan.step_duration_s,
        "status": "running", "blocked": None, "session_id_ignored": False, "started_at": utc(now), "start": now,
        "ended_at": None, "end": None, "git": git_revision(), "host": host_facts(), "plan": plan.snapshot(),
        "config": to_plain(cfg), "steps": [], "notes": [], **extra,
    })
    return Manifest(directory / "manifest.json", doc)


class GrafanaAnnotator:
    """Step boundaries as Grafana annotations (POST /api/annotations). Best effort: a Grafana that
    is down or refuses the token is reported once in the manifest and the run goes on."""

    def __init__(self, url: str, token: Optional[str], tags: list[str]) -> None:
        self.url = url.rstrip("/") + "/api/annotations"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.tags = tags
        self.failed: Optional[str] = None

    def post(self, text: str, extra_tags: list[str]) -> Optional[str]:
        """None when posted, else the reason (only the first failure is returned)."""
        if self.failed:
            return None
        try:
            r = requests.post(self.url, json={"time": int(time.time() * 1000), "tags": self.tags + extra_tags,
                                              "text": text}, headers=self.headers, timeout=2)
            if r.status_code < 300:
                return None
            self.failed = f"Grafana annotations refused: HTTP {r.status_code} from {redact.url(self.url)}"
        except requests.RequestException as exc:
            self.failed = f"Grafana annotations failed: {type(exc).__name__} at {redact.url(self.url)}"
        return self.failed
