"""Run one or several collectors behind one /metrics listener (loopback by default)."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from prometheus_client import CollectorRegistry, start_http_server

from configs import ConfigError, load
from configs.errors import cli_main
from configs.paths import resolve

from .collectors.gpu import GpuCollector, Nvml
from .collectors.kvbm import BlockSize, KvbmCollector
from .collectors.nvme import DiskCollector
from .collectors.smart import SmartReader
from .collectors.uma import UmaCollector

COLLECTORS = ("nvme", "uma", "gpu", "kvbm")


def build(name: str, args, cfg, nvml: Nvml) -> list:
    if name == "gpu":
        return [GpuCollector(nvml)]
    if name == "kvbm":
        tiered = next((s for s in cfg.stacks.values() if s.kvbm_metrics_url), None)
        kvbm_url = args.kvbm_url or os.environ.get("KVBM_URL") or (tiered.kvbm_metrics_url if tiered else None)
        if not kvbm_url:
            raise ConfigError("no KVBM URL: give --kvbm-url or set kvbm_metrics_url on a stack in configs")
        frontend = args.frontend_url if args.frontend_url is not None else (tiered.metrics_url if tiered else None)
        worker = args.worker_url if args.worker_url is not None else (tiered.worker_metrics_url if tiered else None)
        profile = cfg.profiles[args.profile]
        shape = cfg.models[tiered.model].shape if tiered else None
        block = BlockSize(profile.kv_block_size_bytes, profile.kv_block_size_tokens, shape)
        return [KvbmCollector(kvbm_url, frontend or None, block, cfg.exporters.kvbm_timeout_s,
                              worker_url=worker or None)]
    if name == "nvme":
        tier2 = args.tier2_path or str(resolve(cfg.profiles[args.profile].tier2_path))
        disks = DiskCollector(args.procfs, args.sysfs, args.disk_exclude or cfg.exporters.disk_exclude, tier2)
        if cfg.exporters.smart_tool == "off":
            return [disks]
        smart = SmartReader(disks.nvme_namespaces, cfg.exporters.smart_tool, cfg.exporters.smart_interval_s)
        smart.start()
        return [disks, smart]
    return [UmaCollector(args.procfs, cfg.exporters.processes, nvml.memory_by_pid)]


@cli_main
def main(argv: list[str] | None = None, only: str | None = None) -> int:
    prog = f"python -m exporters.{only}" if only else "python -m exporters"
    ap = argparse.ArgumentParser(prog=prog, description="Prometheus exporter for the DGX Spark storage rig.")
    if not only:
        ap.add_argument("--collectors", default=",".join(COLLECTORS),
                        help=f"comma list of collectors (available: {', '.join(COLLECTORS)})")
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
    ap.add_argument("--worker-url", help="Dynamo worker system-port /metrics URL ('' to skip; default the tiered "
                                         "stack's worker_metrics_url)")
    ap.add_argument("--config", help="overlay YAML (default: $HARNESS_CONFIG)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = load(args.config)
        names = [only] if only else [n.strip() for n in args.collectors.split(",") if n.strip()]
        unknown = [n for n in names if n not in COLLECTORS]
        if unknown or not names:
            raise ConfigError(f"unknown collector {unknown[0] if unknown else ''!r} "
                              f"(available: {', '.join(COLLECTORS)})")
        if args.profile not in cfg.profiles:
            raise ConfigError(f"unknown profile {args.profile!r} (known: {', '.join(cfg.profiles)})")
        registry = CollectorRegistry()
        nvml = Nvml()
        for name in names:
            for collector in build(name, args, cfg, nvml):
                registry.register(collector)
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
