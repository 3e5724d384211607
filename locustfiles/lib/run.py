"""One run as the load generator starts it: its id, its directory under results/, the manifest's
first document (plan, config, host, git), the endpoint's readiness and Grafana step annotations.
The files themselves follow configs.runfiles."""
from __future__ import annotations

import os
import platform
import random
import socket
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import requests

from configs import Harness, RunPlan, redact
from configs.paths import PROJECT_ROOT, check_name, ensure_data_dir, safe_join
from configs.runfiles import SCHEMA_VERSION, Manifest, utc
from configs.schema import to_plain


def new_run_id(plan: RunPlan) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{plan.hypothesis_id.lower()}-{plan.stack_name}-{stamp}-{random.getrandbits(16):04x}"


def run_dir(cfg: Harness, run_id: str) -> Path:
    return safe_join(ensure_data_dir(cfg.results_dir), check_name(run_id, "run id"))


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
        "rig": cfg.rig_labels()["rig"], "site": cfg.site,
        "seed": plan.seed, "repetitions": plan.repetitions, "step_duration_s": plan.step_duration_s,
        "status": "running", "blocked": None, "session_id_ignored": False, "started_at": utc(now), "start": now,
        "ended_at": None, "end": None, "git": git_revision(), "host": host_facts(), "plan": plan.snapshot(),
        "config": to_plain(cfg), "steps": [], "notes": [], **extra,
    })
    return Manifest(directory / "manifest.json", doc)


def wait_for_model(base: str, model: str, timeout_s: float) -> Optional[str]:
    """None when ``base``/models lists ``model`` within the timeout, else the one-line reason."""
    deadline = time.monotonic() + timeout_s
    reason = ""
    shown = redact.url(base)
    while True:
        try:
            r = requests.get(f"{base}/models", timeout=5)
            if r.status_code == 200:
                ids = [m.get("id") for m in r.json().get("data", [])]
                if model in ids:
                    return None
                reason = f"{shown}/models does not list {model!r} (it lists {', '.join(map(str, ids[:5])) or 'none'})"
            else:
                reason = f"{shown}/models answered HTTP {r.status_code}"
        except requests.RequestException as exc:
            reason = f"cannot reach {shown}/models ({type(exc).__name__})"
        except ValueError:
            reason = f"{shown}/models did not answer JSON"
        if time.monotonic() >= deadline:
            return f"{reason}; waited {timeout_s:g} s"
        time.sleep(1)


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
