"""The collectors an exporter can serve, by name: what ``--collectors`` accepts, what ``python -m
exporters.<name>`` serves alone and what ``rig up`` starts, after node_exporter's registry of collector
factories (collector/collector.go, ``registerCollector``). Each builder imports its collector itself, so
reading the names costs no collector's imports."""
from __future__ import annotations

import os
from typing import Optional, Sequence

from configs import ConfigError
from configs.paths import resolve


def nvme(args, cfg, nvml) -> list:
    from .collectors.nvme import DiskCollector
    from .collectors.smart import SmartReader
    tier2 = args.tier2_path or str(resolve(cfg.profiles[args.profile].tier2_path))
    disks = DiskCollector(args.procfs, args.sysfs, args.disk_exclude or cfg.exporters.disk_exclude, tier2)
    if cfg.exporters.smart_tool == "off":
        return [disks]
    smart = SmartReader(disks.nvme_namespaces, cfg.exporters.smart_tool, cfg.exporters.smart_interval_s)
    smart.start()
    return [disks, smart]


def uma(args, cfg, nvml) -> list:
    from .collectors.uma import UmaCollector
    return [UmaCollector(args.procfs, cfg.exporters.processes, nvml.memory_by_pid)]


def gpu(args, cfg, nvml) -> list:
    from .collectors.gpu import GpuCollector
    return [GpuCollector(nvml)]


def _tiered(cfg):
    """The stack whose KV tiers the collector reads (Stack B in the shipped configuration), or None."""
    return next((s for s in cfg.stacks.values() if s.kv_tiering), None)


def kvbm_collector(cfg, profile: str, kvbm_url: str, frontend_url: Optional[str] = None,
                   worker_urls: Sequence[str] = ()):
    """The KV tier collector as the exporter runs it, for the tiered stack's offload (KVBM's listener, or
    TensorRT-LLM's engines); its model shape and ``profile``'s block size turn blocks into bytes. The paired
    legs read their KV evidence through this very collector."""
    from .collectors.kvbm import BlockSize, KvbmCollector
    tiered = _tiered(cfg)
    p = cfg.profiles[profile]
    block = BlockSize(p.kv_block_size_bytes, p.kv_block_size_tokens, cfg.models[tiered.model].shape if tiered else None)
    return KvbmCollector(kvbm_url, frontend_url or None, block, cfg.exporters.kvbm_timeout_s, worker_urls=worker_urls,
                         offload=tiered.kv_offload if tiered else "kvbm")


def kv_source(cfg) -> Optional[str]:
    """The URL the tiered stack's KV counters are read from first (KVBM's, or the first engine's)."""
    tiered = _tiered(cfg)
    return tiered.kv_metrics_urls[0] if tiered and tiered.kv_metrics_urls else None


def kvbm(args, cfg, nvml) -> list:
    tiered = _tiered(cfg)
    kvbm_url = args.kvbm_url or os.environ.get("KVBM_URL") or kv_source(cfg)
    if not kvbm_url:
        raise ConfigError("no KV tier metrics URL: give --kvbm-url, or set kvbm_metrics_url (KVBM) or "
                          "worker_metrics_url (kv_offload: trtllm) on the stack with kv_tiering")
    frontend = args.frontend_url if args.frontend_url is not None else (tiered.metrics_url if tiered else None)
    if args.worker_url is not None:                  # '' to skip
        workers = [args.worker_url] if args.worker_url else []
    else:
        workers = list(tiered.worker_urls) if tiered else []
    return [kvbm_collector(cfg, args.profile, kvbm_url, frontend, workers)]


BUILDERS = {"nvme": nvme, "uma": uma, "gpu": gpu, "kvbm": kvbm}
NAMES = tuple(BUILDERS)
