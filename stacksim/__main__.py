"""``python -m stacksim``: run simulated Stack A (trtllm-serve) and/or Stack B (Dynamo + KVBM, or Dynamo +
TensorRT-LLM's native KV offload with ``--kv-offload trtllm``).

Ports and the served model come from the stacks in the configuration (8355; 9000 and 6880 for
KVBM), tier sizes and the tier2 directory from the profile, engine knobs from ``engine``.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
from urllib.parse import urlparse

from configs import ConfigError, load
from configs.errors import cli_main
from configs.model import tier_mode

from .ownership import StartError
from .server import StackOptions, StackServer


def options_for(cfg, stack: str, args) -> StackOptions:
    spec = cfg.stacks[f"stack{stack}"]
    engine = cfg.engine if args.time_scale is None else dataclasses.replace(cfg.engine, time_scale=args.time_scale)
    profile = cfg.profiles[args.profile]
    if args.tier2_path:
        profile = dataclasses.replace(profile, tier2_path=args.tier2_path)
    name = f"stacks.stack{stack}"
    port = _port(spec.openai_base, name + ".openai_base")
    kvbm_port = _port(spec.kvbm_metrics_url, name + ".kvbm_metrics_url") if spec.kvbm_metrics_url else None
    worker_url = spec.simulated_worker_url
    worker_port = _port(worker_url, name + ".worker_metrics_url") if worker_url else None
    if args.port is not None and args.stack != "both":
        port = args.port
    if args.kvbm_port is not None:
        kvbm_port = args.kvbm_port
    if args.worker_port is not None:
        worker_port = args.worker_port or None
    offload = args.kv_offload or spec.kv_offload
    if stack == "B" and offload == "trtllm" and not worker_port:
        raise ConfigError("--kv-offload trtllm: TensorRT-LLM's KV families are served on the worker's system port; "
                          f"give {name}.worker_metrics_url (or --worker-port)")
    strict = (stack == "B") if args.strict_fields is None else args.strict_fields
    return StackOptions(stack=stack, model=args.model or cfg.models[spec.model].handle, profile=profile,
                        engine=engine, host=args.host, port=port, kvbm_port=kvbm_port, worker_port=worker_port,
                        seed=args.seed, strict_fields=strict, keep_tier2=args.keep_tier2,
                        tier_mode=tier_mode(args.tier_mode, "--tier-mode"),
                        kv_offload=offload)


def _port(url: str, key: str) -> int:
    """The simulator listens where the configuration says the stack is, so the URL must say where."""
    port = urlparse(url).port
    if port is None:
        raise ConfigError(f"{key} {url!r} names no port; the simulator listens on the port the URL names "
                          "(e.g. http://127.0.0.1:9000/v1)")
    return port


async def serve(servers: list[StackServer]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started = []
    try:
        for s in servers:
            await s.start()
            started.append(s)
        print("ready", flush=True)
        await stop.wait()
    finally:
        for s in started:
            await s.stop()


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stacksim", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stack", choices=["A", "B", "both"], default="both")
    ap.add_argument("--profile", default="spill", help="comfy, spill or stress (default spill)")
    ap.add_argument("--config", help="overlay YAML (default: $HARNESS_CONFIG)")
    ap.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, help="OpenAI API port for a single stack (default from the config)")
    ap.add_argument("--kvbm-port", type=int, help="Stack B KVBM metrics port (default 6880 from the config)")
    ap.add_argument("--worker-port", type=int, help="Stack B worker system-port metrics (default from the stack's "
                                                    "worker_metrics_url; 0 for none)")
    ap.add_argument("--model", help="served model name (default: the stack's model handle)")
    ap.add_argument("--time-scale", type=float, help="multiply every simulated delay (e.g. 0.25 for demos)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--tier2-path", help="override the profile's tier2 directory")
    ap.add_argument("--strict-fields", dest="strict_fields", action="store_true", default=None,
                    help="reject unknown request fields such as session_id with 400 (Stack B default)")
    ap.add_argument("--no-strict-fields", dest="strict_fields", action="store_false")
    ap.add_argument("--keep-tier2", action="store_true", help="leave the tier2 directory and its adapter files on exit (the KV disk file, "
                                                             "unlinked at start as KVBM's is, goes with the process)")
    ap.add_argument("--tier-mode", default="B2", help="Stack B's KVBM tiers: B0 (off: no host or disk tier, no KVBM "
                                                      "metrics), B1 (cpu_only), B2 (cpu_disk, the default)")
    ap.add_argument("--kv-offload", choices=("kvbm", "trtllm"),
                    help="Stack B's offload: KVBM (writes through; its own metrics listener) or TensorRT-LLM's native "
                         "offload (copies on eviction; trtllm_ KV families on the worker port). Default: the stack's "
                         "kv_offload")
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = load(args.config)
        if args.profile not in cfg.profiles:
            raise ConfigError(f"unknown profile {args.profile!r} (known: {', '.join(cfg.profiles)})")
        if args.time_scale is not None and args.time_scale <= 0:
            raise ConfigError(f"--time-scale must be positive, got {args.time_scale}")
        stacks = ["A", "B"] if args.stack == "both" else [args.stack]
        servers = [StackServer(options_for(cfg, s, args)) for s in stacks]
        asyncio.run(serve(servers))
    except StartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc.strerror or exc} ({getattr(exc, 'filename', '') or 'listen/tier2'})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
