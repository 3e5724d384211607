"""`make up` / `make down`: Prometheus (distribution binary) and the exporters as local processes,
with the very configuration compose uses (same generated scrape jobs, same rules)."""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Iterable

from configs import ConfigError, Harness, load
from configs.discovery import connect_host, prometheus_url, targets_dir
from configs.paths import PROJECT_ROOT, ensure_data_dir
from exporters.registry import NAMES

from . import promconfig
from .procs import StartError, Started, Supervisor, ensure_free

RULES_DIR = PROJECT_ROOT / "prometheus" / "rules"


def run_dir(cfg: Harness) -> Path:
    return ensure_data_dir(cfg.run_dir)


def write_prometheus_config(cfg: Harness) -> Path:
    prom = run_dir(cfg) / "prometheus"
    prom.mkdir(parents=True, exist_ok=True)
    promconfig.write_targets(cfg, targets_dir(cfg))
    path = prom / "prometheus.yml"
    path.write_text(promconfig.render(cfg, str(RULES_DIR), str(targets_dir(cfg))))
    return path


def start_prometheus(cfg: Harness, sup: Supervisor) -> Started:
    binary = shutil.which("prometheus")
    if not binary:
        raise ConfigError("prometheus is not installed: `make tools` (or apt-get install -y prometheus)")
    p = cfg.prometheus
    ensure_free(p.listen, p.port, "Prometheus", "a distribution prometheus service may be running "
                "(systemctl stop prometheus), or set prometheus.port in an overlay")
    config = write_prometheus_config(cfg)
    cmd = [binary, f"--config.file={config}", f"--storage.tsdb.path={config.parent / 'data'}",
           f"--storage.tsdb.retention.time={p.retention}", f"--web.listen-address={p.listen}:{p.port}"]
    started = sup.start("prometheus", cmd, ready_url=f"{prometheus_url(cfg)}/-/ready", timeout_s=60)
    wait_for_targets(cfg)
    return started


def wait_for_targets(cfg: Harness, timeout_s: float = 15.0) -> None:
    """Ready is not scraping: Prometheus applies file_sd targets a few seconds after it starts, and a run
    begun before then loses its first seconds of telemetry. Wait until every job lists its targets."""
    from locustfiles.lib.watch import target_health
    wanted = {j.name for j in promconfig.jobs(cfg)}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        health = target_health(prometheus_url(cfg)) or {}
        if wanted <= set(health):
            return
        time.sleep(0.25)


def start_exporters(cfg: Harness, sup: Supervisor, profile: str, names: Iterable[str] = NAMES) -> list[Started]:
    started = []
    for name in names:
        port = cfg.exporters.ports[name]
        cmd = [sys.executable, "-m", f"exporters.{name}", "--profile", profile]
        if cfg.overlay:
            cmd += ["--config", cfg.overlay]
        host = connect_host(cfg.exporters.listen)
        ensure_free(cfg.exporters.listen, port, f"the {name} exporter", "set exporters.ports in an overlay")
        started.append(sup.start(f"exporter-{name}", cmd, ready_url=f"http://{host}:{port}/metrics",
                                 cwd=PROJECT_ROOT))
    return started


def up(cfg: Harness, profile: str) -> list[Started]:
    """Start the exporters and Prometheus. On a running stack it says so and touches nothing; when a start
    fails it stops only what this call started."""
    sup = Supervisor(run_dir(cfg))
    ours = [f"exporter-{name}" for name in NAMES] + ["prometheus"]
    if running := [name for name in ours if sup.pid_of(name) is not None]:
        raise StartError(f"already running: {', '.join(running)} (pid files in {sup.pids}); `make down` first")
    try:
        started = start_exporters(cfg, sup, profile)
        started.append(start_prometheus(cfg, sup))
    except Exception:
        for name in reversed(ours):   # none of them ran before this call: what runs now, it started
            sup.stop(name)
        raise
    return started


def down(cfg: Harness) -> list[str]:
    return Supervisor(run_dir(cfg)).stop_all()


COMPOSE_RULES, COMPOSE_TARGETS = "/etc/prometheus/rules", "/etc/prometheus/targets"


def register(sub) -> None:
    """`rig up`, `down`, `status` and `render`."""
    p = sub.add_parser("up", help="start the exporters and Prometheus as local processes")
    p.add_argument("--profile", default="spill", help="profile whose tier2_path and block size the exporters use")
    p.set_defaults(func=_up)
    sub.add_parser("down", help="stop everything `up` (or the demo) started").set_defaults(func=_down)
    sub.add_parser("status", help="list running processes and their logs").set_defaults(func=_status)
    p = sub.add_parser("render", help="write Prometheus config and file_sd targets")
    p.add_argument("--compose", action="store_true",
                   help=f"write prometheus/prometheus.yml for containers ({COMPOSE_RULES}, {COMPOSE_TARGETS})")
    p.add_argument("--targets-dir", help="write only the file_sd targets, into this directory")
    p.set_defaults(func=_render)


def _up(args) -> int:
    cfg = load(args.config)
    try:
        started = up(cfg, args.profile)
    except StartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for s in started:
        print(f"started {s.name:<18} pid {s.pid:<7} log {s.log}")
    print(f"Prometheus: {prometheus_url(cfg)}  (stop everything with `make down`)")
    return 0


def _down(args) -> int:
    stopped = down(load(args.config))
    print("stopped " + ", ".join(stopped) if stopped else "nothing was running")
    return 0


def _status(args) -> int:
    print("\n".join(Supervisor(run_dir(load(args.config))).listing(18)) or "nothing is running")
    return 0


def _render(args) -> int:
    cfg = load(args.config)
    if args.targets_dir:
        promconfig.check_compose_env(cfg, os.environ)
        for path in promconfig.write_targets(cfg, Path(args.targets_dir)):
            print(f"wrote {path}")
    elif args.compose:
        out = PROJECT_ROOT / "prometheus" / "prometheus.yml"
        out.write_text(promconfig.render(cfg, COMPOSE_RULES, COMPOSE_TARGETS, compose=True))
        print(f"wrote {out}")
    else:
        print(f"wrote {write_prometheus_config(cfg)}")
    return 0
