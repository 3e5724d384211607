"""Prometheus scrape configuration generated from configs, so compose and `make up` scrape the same
targets at the same cadence and no port is written down twice.

Targets live in file_sd JSON files (one per job) in a targets directory; the load generator adds
and removes its own file there while it runs, so Prometheus finds Locust workers without a restart.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from configs import ConfigError, Harness
from configs.discovery import LOADGEN_JOB, atomic_write, connect_host
from configs.paths import resolve


@dataclass(frozen=True)
class Job:
    name: str
    interval_ms: int
    metrics_path: str
    targets: list[dict] = field(default_factory=list)   # file_sd groups: {"targets": [...], "labels": {...}}
    honor_labels: bool = False


def _hostport(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}", parts.path or "/metrics"


def jobs(cfg: Harness) -> list[Job]:
    fast, slow = cfg.prometheus.fast_interval_ms, cfg.prometheus.slow_interval_ms
    ex = cfg.exporters
    host = connect_host(ex.listen)
    # honor_labels: our series' own labels win over the target's (a disk's role="kv_tier2" stays;
    # Locust series keep their stack), everything else gets role="exporter" / "loadgen".
    out = [Job(f"sparkrig-{name}", fast if name in ("nvme", "kvbm") else slow, "/metrics",
               [{"targets": [f"{host}:{port}"], "labels": {"role": "exporter", "collector": name}}], True)
           for name, port in ex.ports.items()]
    for stack_name, stack in cfg.stacks.items():
        addr, path = _hostport(stack.metrics_url)
        out.append(Job(f"stack-{stack_name}", slow, path,
                       [{"targets": [addr], "labels": {"stack": stack_name, "role": "frontend"}}]))
        if stack.kvbm_metrics_url and stack.kv_offload == "kvbm":    # TensorRT-LLM's offload: no KVBM listener
            addr, path = _hostport(stack.kvbm_metrics_url)
            out.append(Job(f"kvbm-{stack_name}", fast, path,
                           [{"targets": [addr], "labels": {"stack": stack_name, "role": "kvbm"}}]))
        by_path: dict[str, list[dict]] = {}          # every worker behind the frontend, one job per metrics path
        for url in stack.worker_urls:
            addr, path = _hostport(url)
            by_path.setdefault(path, []).append({"targets": [addr], "labels": {"stack": stack_name, "role": "worker"}})
        for n, (path, groups) in enumerate(by_path.items()):
            out.append(Job(f"worker-{stack_name}" + (f"-{n}" if n else ""), slow, path, groups))
    # The Locust process's own port is a static target (Prometheus applies new file_sd targets only
    # every 5 s, which would cut the start of each run); worker processes on other ports add theirs.
    lg = cfg.loadgen
    lg_host = connect_host(lg.listen)
    out.append(Job(LOADGEN_JOB, slow, "/metrics",
                   [{"targets": [f"{lg_host}:{lg.metrics_port}"], "labels": {"role": "loadgen"}}], honor_labels=True))
    return out


# compose's Prometheus takes the rig's name from .env (prometheus.yml is committed, the host name is not)
COMPOSE_RIG = "${SPARKRIG_RIG}"


def remote_write(cfg: Harness, path=lambda p: p) -> list[dict]:
    """Prometheus' remote_write entries; ``path`` places credential files (absolute for `make up`)."""
    out = []
    for rw in cfg.prometheus.remote_write:
        entry: dict = {"url": rw.url}
        if rw.username:
            entry["basic_auth"] = {"username": rw.username, "password_file": path(rw.password_file)}
        if rw.bearer_token_file:
            entry["authorization"] = {"type": "Bearer", "credentials_file": path(rw.bearer_token_file)}
        entry["queue_config"] = {"capacity": rw.capacity, "max_shards": rw.max_shards,
                                 "max_samples_per_send": rw.max_samples_per_send,
                                 "batch_send_deadline": f"{rw.batch_send_deadline_ms}ms",
                                 "min_backoff": f"{rw.min_backoff_ms}ms", "max_backoff": f"{rw.max_backoff_ms}ms"}
        out.append(entry)
    return out


def render(cfg: Harness, rules_dir: str, targets_dir: str, compose: bool = False) -> str:
    """prometheus.yml text; paths are written as given (absolute for `make up`, container paths for compose).
    Every sample leaves with the rig's labels (external_labels), so a store holding many rigs tells them apart."""
    labels = cfg.rig_labels()
    if compose and not cfg.rig:
        labels["rig"] = COMPOSE_RIG
    doc = {
        "global": {"scrape_interval": f"{cfg.prometheus.slow_interval_ms}ms",
                   "evaluation_interval": f"{cfg.prometheus.evaluation_interval_ms}ms",
                   "scrape_timeout": f"{cfg.prometheus.slow_interval_ms}ms",
                   "external_labels": labels},
        "rule_files": [f"{rules_dir}/*.rules.yml"],
        "scrape_configs": [{
            "job_name": j.name,
            "scrape_interval": f"{j.interval_ms}ms",
            "scrape_timeout": f"{j.interval_ms}ms",
            "metrics_path": j.metrics_path,
            **({"honor_labels": True} if j.honor_labels else {}),
            "file_sd_configs": [{"files": [f"{targets_dir}/{j.name}*.json"], "refresh_interval": "1s"}],
        } for j in jobs(cfg)],
    }
    if cfg.prometheus.remote_write:
        doc["remote_write"] = remote_write(cfg, (lambda p: p) if compose else lambda p: str(resolve(p)))
    header = ("# Generated by `python -m rig render` from configs/harness.yaml; do not edit by hand.\n"
              "# Targets are file_sd files in the targets directory, one per job.\n")
    return header + yaml.safe_dump(doc, sort_keys=False)


def write_targets(cfg: Harness, targets_dir: Path) -> list[Path]:
    targets_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for j in jobs(cfg):
        if j.targets:
            path = targets_dir / f"{j.name}.json"
            atomic_write(path, json.dumps(j.targets, indent=1) + "\n")
            written.append(path)
    return written


# docker-compose.yml takes these from .env; they must say what configs say, or Prometheus would listen
# where nothing else looks for it.
COMPOSE_ENV = {"PROMETHEUS_PORT": lambda cfg: str(cfg.prometheus.port),
               "PROMETHEUS_RETENTION": lambda cfg: cfg.prometheus.retention,
               "SPARKRIG_RIG": lambda cfg: cfg.rig}


def check_compose_env(cfg: Harness, env) -> None:
    wrong = [f"{name}={env[name]} in .env but {want(cfg)} in configs" for name, want in COMPOSE_ENV.items()
             if env.get(name) and want(cfg) is not None and env[name] != want(cfg)]
    if wrong:
        raise ConfigError("; ".join(wrong) + " (make them equal: prometheus.port / prometheus.retention / rig)")
