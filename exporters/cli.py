"""Run one or several collectors behind one /metrics listener (loopback by default)."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from prometheus_client import CollectorRegistry, start_http_server

from configs import ConfigError, load
from configs.errors import cli_main

from .collectors.gpu import Nvml
from .registry import BUILDERS, NAMES
from .scrape import Scrape


@cli_main
def main(argv: list[str] | None = None, only: str | None = None) -> int:
    prog = f"python -m exporters.{only}" if only else "python -m exporters"
    ap = argparse.ArgumentParser(prog=prog, description="Prometheus exporter for the DGX Spark storage rig.")
    if not only:
        ap.add_argument("--collectors", default=",".join(NAMES),
                        help=f"comma list of collectors (available: {', '.join(NAMES)})")
    ap.add_argument("--listen", help="address to bind (default from configs: 127.0.0.1)")
    ap.add_argument("--port", type=int, help="port (default from configs exporters.port / exporters.ports)")
    ap.add_argument("--procfs", default="/proc", help="procfs root, e.g. a fixture tree (default /proc)")
    ap.add_argument("--sysfs", default="/sys", help="sysfs root (default /sys)")
    ap.add_argument("--profile", default="spill",
                    help="profile whose tier2_path marks the kv_tier2 disk and whose block size turns KV blocks "
                         "into bytes where neither the target nor the model's shape fixes it")
    ap.add_argument("--tier2-path", help="KV tier2 directory (overrides the profile's)")
    ap.add_argument("--disk-exclude", help="regex of devices to leave out (default from configs)")
    ap.add_argument("--kvbm-url", help="KVBM /metrics URL (default $KVBM_URL, else the tiered stack's "
                                       "kvbm_metrics_url)")
    ap.add_argument("--frontend-url", help="Dynamo frontend /metrics URL ('' to skip; default from configs)")
    ap.add_argument("--worker-url", help="Dynamo worker system-port /metrics URL ('' to skip; default every "
                                         "worker_metrics_url of the tiered stack)")
    ap.add_argument("--config", help="overlay YAML (default: $HARNESS_CONFIG)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = load(args.config)
        names = [only] if only else [n.strip() for n in args.collectors.split(",") if n.strip()]
        unknown = [n for n in names if n not in BUILDERS]
        if unknown or not names:
            raise ConfigError(f"unknown collector {unknown[0] if unknown else ''!r} "
                              f"(available: {', '.join(NAMES)})")
        if args.profile not in cfg.profiles:
            raise ConfigError(f"unknown profile {args.profile!r} (known: {', '.join(cfg.profiles)})")
        registry = CollectorRegistry()
        nvml = Nvml()
        registry.register(Scrape({name: BUILDERS[name](args, cfg, nvml) for name in names}))
        listen = args.listen or cfg.exporters.listen
        port = args.port or (cfg.exporters.ports[only] if only else cfg.exporters.port)
        server, thread = start_http_server(port, addr=listen, registry=registry)
    except OSError as exc:
        print(f"error: cannot serve metrics: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"serving {', '.join(names)} on http://{listen}:{port}/metrics", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    return 0
