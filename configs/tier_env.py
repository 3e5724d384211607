"""Print the setup that gives Stack B a profile's KV tiers (successor of stackB_tier_env.py): ``export`` lines for
a Dynamo KVBM worker, or the engine's YAML for TensorRT-LLM's native KV offload (``--offload trtllm``).

Emits the connector switch of Dynamo's TensorRT-LLM worker (``DYN_CONNECTOR=kvbm``; ``none`` in B0), what
Dynamo's KVBM really reads (``DYN_KVBM_CPU_CACHE_GB`` and
``DYN_KVBM_DISK_CACHE_GB`` as decimal gigabytes parsed as floats,
``DYN_KVBM_DISK_CACHE_DIR``, metrics switch and port) and the harness's own
``DYN_KVBM_TIER{0,1,2}_BYTES`` / ``DYN_KVBM_KV_BLOCK_SIZE_BYTES`` / ``DYN_KVBM_TIER2_PATH``.
Every value is shell-quoted so the output is safe to ``eval``. The tier mode decides which tiers exist:
``B2`` both (the default), ``B1`` the CPU tier only (``DYN_KVBM_DISK_CACHE_GB=0``), ``B0`` no KVBM at
all (every KVBM variable unset; ``DYN_KVBM_TIER_MODE`` tells a restart script to leave the connector out).

    eval "$(python -m configs.tier_env --profile spill --tier-mode B1)"

Under TensorRT-LLM's own offload the same tiers are ``kv_cache_config`` fields of KV cache manager v2
(tensorrt_llm/llmapi/llm_args.py ``KvCacheConfig``: ``host_cache_size`` and ``disk_cache_size`` in bytes,
``disk_cache_path`` an existing directory; the disk tier exists only with a size > 0, and a host size left
unset is sized automatically, so B0 says 0): the YAML goes to ``trtllm-serve MODEL --config F`` or to
``python -m dynamo.trtllm --extra-engine-args F``. B0/B1/B2 keep the same device pool (``max_tokens``) and
manager in every mode, so a leg changes the tiers and nothing else.

    python -m configs.tier_env --profile spill --offload trtllm > kv-offload.yaml
"""
from __future__ import annotations

import argparse
import shlex
import sys
from urllib.parse import urlparse

import yaml

from .errors import ConfigError, cli_main
from .loader import load
from . import kvbm_checks, model
from .model import Harness
from .paths import resolve
from .sizes import format_size


def _gb(n: int) -> str:
    # KVBM computes blocks as (GB * 1e9) / bytes_per_block; print enough digits to be exact.
    return f"{n / 1e9:.9f}".rstrip("0").rstrip(".")


def tier_env(cfg: Harness, profile: str, stack: str = "stackB", tier_mode: str = "B2") -> dict[str, str | None]:
    """Variable -> value; None for a variable to unset (the disk tier's in B1, every KVBM one in B0)."""
    mode = model.tier_mode(tier_mode, "--tier-mode")
    if profile not in cfg.profiles:
        raise ConfigError(f"unknown profile {profile!r} (known: {', '.join(cfg.profiles)})")
    p = cfg.profiles[profile]
    tier2 = str(resolve(p.tier2_path))
    kvbm_url = cfg.stacks[stack].kvbm_metrics_url if stack in cfg.stacks else None
    env = {
        "DYN_KVBM_TIER0_BYTES": str(p.tier0_bytes),
        "DYN_KVBM_TIER1_BYTES": str(p.tier1_bytes),
        "DYN_KVBM_TIER2_BYTES": str(p.tier2_bytes),
        "DYN_KVBM_KV_BLOCK_SIZE_BYTES": str(p.kv_block_size_bytes),
        "DYN_KVBM_TIER2_PATH": tier2,
        "DYN_KVBM_CPU_CACHE_GB": _gb(p.tier1_bytes),
        "DYN_KVBM_DISK_CACHE_GB": _gb(p.tier2_bytes),
        "DYN_KVBM_DISK_CACHE_DIR": tier2,
        "DYN_KVBM_METRICS": "true",
        # KVBM reads "true" or "1" only (lib/bindings/kvbm/src/block_manager.rs); unset leaves its filter on
        "DYN_KVBM_DISABLE_DISK_OFFLOAD_FILTER": None if p.disk_offload_filter else "true",
    }
    if kvbm_url:
        env["DYN_KVBM_METRICS_PORT"] = str(urlparse(kvbm_url).port or 6880)
    if mode == "B1":
        env["DYN_KVBM_DISK_CACHE_GB"] = "0"
        env["DYN_KVBM_TIER2_BYTES"] = "0"
        env["DYN_KVBM_DISK_CACHE_DIR"] = None         # unset: a value left from a B2 start must not linger
        env["DYN_KVBM_DISABLE_DISK_OFFLOAD_FILTER"] = None
    if mode == "B0":
        env = {k: None for k in env if k.startswith("DYN_KVBM_")}
    # dynamo.trtllm loads KVBM's connector only when asked (--connector / DYN_CONNECTOR: kvbm or none;
    # dynamo/trtllm/args.py, workers/llm_worker.py build_kv_connector_config in 1.6.1)
    env["DYN_CONNECTOR"] = "none" if mode == "B0" else "kvbm"
    return {"DYN_KVBM_TIER_MODE": mode, **env}


def engine_config(cfg: Harness, profile: str, tier_mode: str = "B2") -> dict:
    """``extra_llm_api_options`` for TensorRT-LLM's native offload of ``profile``'s tiers in ``tier_mode``."""
    mode = model.tier_mode(tier_mode, "--tier-mode")
    if profile not in cfg.profiles:
        raise ConfigError(f"unknown profile {profile!r} (known: {', '.join(cfg.profiles)})")
    p = cfg.profiles[profile]
    kv = {"use_kv_cache_manager_v2": True,          # the disk tier exists only in v2; every mode uses it alike
          "enable_block_reuse": True,               # offload serves reuse: without it nothing is looked up
          "tokens_per_block": p.kv_block_size_tokens,
          "max_tokens": int(p.tier0_bytes // p.kv_block_size_bytes * p.kv_block_size_tokens),
          "host_cache_size": int(p.tier1_bytes) if mode != "B0" else 0}
    if mode == "B2":
        kv.update(disk_cache_size=int(p.tier2_bytes), disk_cache_path=str(resolve(p.tier2_path)))
    # the metrics the exporter reads: /prometheus/metrics, and the iteration stats its kv_cache_* come from
    return {"return_perf_metrics": True, "enable_iter_perf_stats": True, "kv_cache_config": kv}


def render_engine(cfg: Harness, profile: str, stack: str, tier_mode: str, options: dict) -> str:
    spec = cfg.stacks.get(stack)
    handle = cfg.models[spec.model].handle if spec else "MODEL"
    port = urlparse(spec.worker_urls[0]).port if spec and spec.worker_urls else 8081
    kv = options["kv_cache_config"]
    head = [f"# TensorRT-LLM native KV offload: profile {profile}, {model.tier_mode(tier_mode)}; device pool "
            f"{kv['max_tokens']} tokens, host {format_size(kv['host_cache_size'])}, disk {format_size(kv.get('disk_cache_size', 0))}",
            f"#   trtllm-serve {handle} --config kv-offload.yaml",
            f"#   DYN_SYSTEM_PORT={port} python -m dynamo.trtllm --model-path {handle} --extra-engine-args "
            "kv-offload.yaml --publish-metrics"]
    if "disk_cache_path" in kv:
        head.append(f"#   mkdir -p {shlex.quote(kv['disk_cache_path'])}   (TensorRT-LLM refuses a disk_cache_path that "
                    "does not exist)")
    return "\n".join(head) + "\n" + yaml.safe_dump(options, sort_keys=False)


def render(env: dict[str, str | None]) -> str:
    return "".join(f"unset {k}\n" if v is None else f"export {k}={shlex.quote(v)}\n" for k, v in env.items())


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m configs.tier_env",
        description="Print the setup of a profile's KV tiers for Stack B: eval-safe export lines for KVBM, or "
                    "TensorRT-LLM's kv_cache_config YAML for its native offload.",
        epilog="examples:\n  eval \"$(python -m configs.tier_env --profile spill)\"\n"
               "  python -m configs.tier_env --profile spill --offload trtllm > kv-offload.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", required=True, help="profile name, e.g. comfy, spill, stress")
    ap.add_argument("--config", help="overlay YAML merged over the shipped configs (default: $HARNESS_CONFIG)")
    ap.add_argument("--stack", default="stackB", help="stack whose KVBM metrics port to export (default stackB)")
    ap.add_argument("--tier-mode", default="B2", help="B0 (off), B1 (cpu_only) or B2 (cpu_disk, the default)")
    ap.add_argument("--offload", choices=("kvbm", "trtllm"),
                    help="who moves the KV: Dynamo's KVBM or TensorRT-LLM's native offload (default: the stack's "
                         "kv_offload)")
    args = ap.parse_args(argv)
    cfg, profile = load(args.config), args.profile.lower()
    offload = args.offload or (cfg.stacks[args.stack].kv_offload if args.stack in cfg.stacks else "kvbm")
    if offload == "trtllm":
        options = engine_config(cfg, profile, args.tier_mode)
        text = render_engine(cfg, profile, args.stack, args.tier_mode, options)
        disk = "disk_cache_size" in options["kv_cache_config"]
    else:
        env = tier_env(cfg, profile, args.stack, args.tier_mode)
        text, disk = render(env), env.get("DYN_KVBM_DISK_CACHE_GB") not in (None, "0")
    if disk:                                          # what a real offload would make of it
        for line in kvbm_checks.warnings(profile, cfg.profiles[profile], offload=offload):
            print(f"warning: {line}", file=sys.stderr)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
