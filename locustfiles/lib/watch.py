"""Is Prometheus scraping what this run's gates will need? Asked before step 1 and every few seconds after.

A run whose telemetry was lost used to show it only at report time. Before the first step this waits
(briefly) until Prometheus reports every target the run needs as up and scraped since the load
generator's metrics appeared, prints one line per target that is not, and records the answer in the
manifest (``telemetry``); while the run goes, a target or Prometheus itself that stops answering is a
``telemetry_outages`` entry, as a stack outage is an ``outages`` entry.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import gevent
import requests

from configs import Harness
from configs.discovery import LOADGEN_JOB, prometheus_url

CHECK_EVERY_S = 5.0


def needed_jobs(cfg: Harness, stack_name: str) -> list[str]:
    """Our exporters, the stack's own metrics, KVBM's where the stack tiers KV through it (TensorRT-LLM's
    offload reports on the worker's port, a worker job), and the load generator."""
    stack = cfg.stacks[stack_name]
    names = [f"sparkrig-{name}" for name in cfg.exporters.ports] + [f"stack-{stack_name}"]
    if stack.kv_tiering and stack.kv_offload == "kvbm" and stack.kvbm_metrics_url:
        names.append(f"kvbm-{stack_name}")
    return names + [LOADGEN_JOB]


def target_health(url: str, timeout_s: float = 2.0) -> Optional[dict[str, dict]]:
    """job -> {"up": bool, "last_scrape": epoch s, "error": str} from Prometheus' targets API (a job with
    several targets is up when all are); None when Prometheus does not answer."""
    try:
        resp = requests.get(f"{url}/api/v1/targets", params={"state": "active"}, timeout=timeout_s)
        resp.raise_for_status()
        active = resp.json()["data"]["activeTargets"]
    except (requests.RequestException, ValueError, KeyError):
        return None
    out: dict[str, dict] = {}
    for t in active:
        job = t.get("labels", {}).get("job") or t.get("scrapePool", "")
        last = _epoch(t.get("lastScrape", ""))
        prev = out.get(job, {"up": True, "last_scrape": last, "error": ""})
        out[job] = {"up": prev["up"] and t.get("health") == "up", "last_scrape": min(prev["last_scrape"], last),
                    "error": prev["error"] or t.get("lastError", "")}
    return out


def _epoch(rfc3339: str) -> float:
    """Prometheus' lastScrape (RFC 3339 with nanoseconds) as epoch seconds; 0 when never scraped."""
    from datetime import datetime
    if not rfc3339 or rfc3339.startswith("0001"):
        return 0.0
    head, _, frac = rfc3339.partition(".")
    tz = frac.lstrip("0123456789") if frac else rfc3339[19:]
    try:
        return datetime.fromisoformat(head + (tz.replace("Z", "+00:00") or "+00:00")).timestamp()
    except ValueError:
        return 0.0


def missing(health: Optional[dict], jobs: list[str], since: float) -> dict[str, str]:
    """job -> why it does not count: not configured in this Prometheus, down, or not scraped since ``since``."""
    if health is None:
        return {"prometheus": "Prometheus does not answer"}
    out = {}
    for job in jobs:
        h = health.get(job)
        if h is None:
            out[job] = "not a target of this Prometheus (is it the rig's? `make up`)"
        elif not h["up"]:
            out[job] = f"down: {h['error'] or 'no answer'}"
        elif h["last_scrape"] < since:
            out[job] = "not scraped yet"
    return out


def preflight(cfg: Harness, stack_name: str, since: float, wait_s: float,
              say: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)) -> dict:
    """Wait up to ``wait_s`` for every needed target to be scraped after ``since``; what was missing then."""
    url, jobs = prometheus_url(cfg), needed_jobs(cfg, stack_name)
    deadline = time.time() + wait_s
    while True:
        lacking = missing(target_health(url), jobs, since)
        # worth waiting for: a first scrape still to come (the load generator's target is down until its
        # metrics are served); a Prometheus that does not answer or lacks the target will not change
        pending = [j for j, why in lacking.items() if why == "not scraped yet" or j == LOADGEN_JOB]
        if not pending or time.time() >= deadline:
            break
        time.sleep(0.25)
    for job, why in lacking.items():
        say(f"warning: telemetry: {job} {why}; gates that need it will say TELEMETRY_MISSING")
    return {"prometheus": url, "checked_at": time.time(), "jobs": jobs, "missing": lacking}


@dataclass
class Watch:
    """Outages of the run's telemetry while it runs: one entry per target from when it was lost to when it
    came back."""
    cfg: Harness
    stack_name: str
    record: Callable[[list], None]          # called with the outage list whenever it changes
    outages: list = field(default_factory=list)
    _open: dict = field(default_factory=dict)

    def check(self, now: Optional[float] = None) -> None:
        now = time.time() if now is None else now
        lacking = missing(target_health(prometheus_url(self.cfg)), needed_jobs(self.cfg, self.stack_name),
                          now - 3 * self.cfg.prometheus.slow_interval_ms / 1000)
        changed = False
        for job, why in lacking.items():
            if job not in self._open:
                self._open[job] = {"target": job, "start": now, "end": None, "why": why}
                self.outages.append(self._open[job])
                print(f"warning: telemetry lost: {job} {why}", file=sys.stderr, flush=True)
                changed = True
        for job in [j for j in self._open if j not in lacking]:
            self._open.pop(job)["end"] = now
            changed = True
        if changed:
            self.record(self.outages)

    def run(self) -> None:
        while True:
            gevent.sleep(CHECK_EVERY_S)
            self.check()
