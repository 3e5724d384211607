"""Print ``export`` lines sizing a Dynamo KVBM worker for a profile (successor of stackB_tier_env.py).

Emits both what Dynamo's KVBM really reads (``DYN_KVBM_CPU_CACHE_GB`` and
``DYN_KVBM_DISK_CACHE_GB`` as decimal gigabytes parsed as floats,
``DYN_KVBM_DISK_CACHE_DIR``, metrics switch and port) and the harness's own
``DYN_KVBM_TIER{0,1,2}_BYTES`` / ``DYN_KVBM_KV_BLOCK_SIZE_BYTES`` / ``DYN_KVBM_TIER2_PATH``.
Every value is shell-quoted so the output is safe to ``eval``. The tier mode decides which tiers exist:
``B2`` both (the default), ``B1`` the CPU tier only (``DYN_KVBM_DISK_CACHE_GB=0``), ``B0`` no KVBM at
all (every KVBM variable unset; ``DYN_KVBM_TIER_MODE`` tells a restart script to leave the connector out).

    eval "$(python -m configs.tier_env --profile spill --tier-mode B1)"
"""
from __future__ import annotations

import argparse
import shlex
import sys
from urllib.parse import urlparse

from .errors import ConfigError, cli_main
from .loader import load
from . import kvbm_checks, model
from .model import Harness
from .paths import resolve


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
    return {"DYN_KVBM_TIER_MODE": mode, **env}


def render(env: dict[str, str | None]) -> str:
    return "".join(f"unset {k}\n" if v is None else f"export {k}={shlex.quote(v)}\n" for k, v in env.items())


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m configs.tier_env",
        description="Print eval-safe export lines with KVBM tier sizing for a profile.")
    ap.add_argument("--profile", required=True, help="profile name, e.g. comfy, spill, stress")
    ap.add_argument("--config", help="overlay YAML merged over the shipped configs (default: $HARNESS_CONFIG)")
    ap.add_argument("--stack", default="stackB", help="stack whose KVBM metrics port to export (default stackB)")
    ap.add_argument("--tier-mode", default="B2", help="B0 (off), B1 (cpu_only) or B2 (cpu_disk, the default)")
    args = ap.parse_args(argv)
    cfg, profile = load(args.config), args.profile.lower()
    env = tier_env(cfg, profile, args.stack, args.tier_mode)
    if env.get("DYN_KVBM_DISK_CACHE_GB") not in (None, "0"):          # what a real KVBM would make of it
        for line in kvbm_checks.warnings(profile, cfg.profiles[profile]):
            print(f"warning: {line}", file=sys.stderr)
    sys.stdout.write(render(env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
