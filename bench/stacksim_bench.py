"""How many concurrent streams can the simulator carry on one core before it distorts latency?

Starts Stack A pinned to CPU 0 with a flat 20 ms iteration (so ITL should be exactly 20 ms at any
batch size), drives N streaming clients from a second process pinned to CPU 1, and reports the
simulator's own scheduling delay (wall time of an iteration minus its modelled time, from the
engine's iteration stats), the TTFT the clients saw above the modelled 20 ms, and chunks/s.

    python bench/stacksim_bench.py [--levels 32,64,128,256,512] [--seconds 8]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import requests

ROOT = Path(__file__).resolve().parent.parent
MODEL = "nvidia/Llama-3.3-70B-Instruct-NVFP4"
ITER_MS = 20.0


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def drive(base: str, streams: int, seconds: float, max_tokens: int):
    ttfts, chunks = [], 0
    end = time.monotonic() + seconds
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:
        async def user(u):
            nonlocal chunks
            while time.monotonic() < end:
                t0 = time.monotonic()
                first = None
                async with s.post(f"{base}/v1/completions", json={
                        "model": MODEL, "prompt": f"user {u}", "max_tokens": max_tokens, "stream": True}) as r:
                    async for line in r.content:
                        if line.startswith(b"data: {"):
                            first = first or time.monotonic()
                            chunks += 1
                ttfts.append(first - t0)
        t_start = time.monotonic()
        await asyncio.gather(*(user(u) for u in range(streams)))
        return ttfts, chunks / (time.monotonic() - t_start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="32,64,128,256,512")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--max-tokens", type=int, default=100)
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    port = 18355
    with tempfile.TemporaryDirectory() as tmp:
        overlay = Path(tmp) / "bench.yaml"
        overlay.write_text(f"engine: {{iteration_base_ms: {ITER_MS}, decode_ms_per_seq: 0, prefill_us_per_token: 0, "
                           f"max_batch_size: {max(levels) * 2}, max_queue: 100000}}\n"
                           "profiles: {comfy: {tier0_bytes: 8GiB}}\n")
        cmd = [sys.executable, "-m", "stacksim", "--stack", "A", "--profile", "comfy", "--config", str(overlay),
               "--port", str(port), "--tier2-path", tmp, "--log-level", "WARNING"]
        if hasattr(os, "sched_setaffinity") and os.cpu_count() > 1:
            cmd = ["taskset", "-c", "0", *cmd]
            os.sched_setaffinity(0, {1})
        sim = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert sim.stdout.readline().strip() == "ready"
        base = f"http://127.0.0.1:{port}"
        print(f"simulator on one core, modelled ITL {ITER_MS:.0f} ms, {args.seconds:.0f} s per level\n")
        print(f"{'streams':>8} {'chunks/s':>10} {'sched p50 ms':>13} {'sched p99 ms':>13} "
              f"{'TTFT-20ms p50':>14} {'TTFT-20ms p99':>14}")
        try:
            for n in levels:
                ttfts, cps = asyncio.run(drive(base, n, args.seconds, args.max_tokens))
                iters = requests.get(f"{base}/metrics", timeout=10).json()
                late = [i["schedDelayMS"] for i in iters]
                extra = [(t * 1000 - ITER_MS) for t in ttfts]
                print(f"{n:>8} {cps:>10.0f} {pct(late, .5):>13.2f} {pct(late, .99):>13.2f} "
                      f"{pct(extra, .5):>14.2f} {pct(extra, .99):>14.2f}", flush=True)
        finally:
            sim.terminate()
            sim.wait()
    print("\nsched = how late an iteration ends against its modelled deadline (the simulator's own delay);"
          "\nTTFT-20ms = client-seen TTFT above one modelled iteration (includes the client's own cost).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
