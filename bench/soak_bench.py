"""Soak: does simulated Stack B (spill profile, real tier2 I/O) hold 64 and 256 streaming users?

Drives each level for a while with distinct prompts (so blocks spill to host and disk and come back),
then stops the clients mid-stream and waits for the simulator to drain. Prints per level: requests,
errors (non-200 answers, SSE error events, cut connections), the simulator's RSS before and after,
and the drain time (until no request is in flight and no KV block is pinned).

    python bench/soak_bench.py [--levels 64,256] [--seconds 30]
"""
from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import requests
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from configs.vocabulary import series as S  # noqa: E402
from configs.vocabulary import stacks as V  # noqa: E402

MODEL = "nvidia/Llama-3.3-70B-Instruct-NVFP4"
# KVBM's blocks onboarded from disk to the device, by its own name (the vocabulary's transfer table)
FROM_DISK = next(k for k, lb in V.KVBM_TRANSFERS.items() if lb == ("onboard", "disk", "device"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def gauge(url: str, name: str) -> float:
    text = requests.get(url, timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


async def drive(base: str, users: int, seconds: float) -> tuple[int, int]:
    """Closed-loop streaming users; returns (requests, errors). Clients are cut at the end, mid-stream."""
    done = errors = 0
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as s:
        async def user(u: int) -> None:
            nonlocal done, errors
            turn = 0
            while True:
                prompt = " ".join(f"u{u}t{turn % 8}w{i}" for i in range(400))   # 8 prompts per user, revisited
                turn += 1
                try:
                    async with s.post(f"{base}/v1/completions", json={
                            "model": MODEL, "prompt": prompt, "max_tokens": 32, "stream": True}) as r:
                        bad = r.status != 200
                        async for line in r.content:
                            bad = bad or line.startswith(b'data: {"error"')
                    done += 1
                    errors += bad
                except aiohttp.ClientError:
                    done += 1
                    errors += 1
        tasks = [asyncio.ensure_future(user(u)) for u in range(users)]
        await asyncio.sleep(seconds)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return done, errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="64,256")
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    port, kvbm = 18390, 18391
    with tempfile.TemporaryDirectory() as tmp:
        overlay = Path(tmp) / "soak.yaml"
        overlay.write_text("engine: {time_scale: 0.25, max_queue: 100000, lora_count: 0}\n"
                           "profiles: {spill: {tier0_bytes: 64MiB, tier1_bytes: 32MiB, tier2_bytes: 512MiB}}\n")
        cmd = [sys.executable, "-m", "stacksim", "--stack", "B", "--profile", "spill", "--config", str(overlay),
               "--port", str(port), "--kvbm-port", str(kvbm), "--worker-port", "0", "--tier2-path", tmp,
               "--no-strict-fields", "--log-level", "WARNING"]
        sim = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        if sim.stdout.readline().strip() != "ready":
            print("error: the simulator did not start", file=sys.stderr)
            return 1
        base = f"http://127.0.0.1:{port}"
        print(f"simulated Stack B (spill, tier2 under {tmp}), {args.seconds:.0f} s per level\n")
        print(f"{'users':>6} {'requests':>9} {'errors':>7} {'RSS before MiB':>15} {'RSS after MiB':>14} "
              f"{'drain s':>8} {'disk onboards':>14}")
        try:
            for users in (int(x) for x in args.levels.split(",")):
                before = rss_mib(sim.pid)
                n, errors = asyncio.run(drive(base, users, args.seconds))
                cut = time.monotonic()
                while (gauge(f"{base}/metrics", V.FE_INFLIGHT) or
                       gauge(f"http://127.0.0.1:{kvbm}/metrics", S.SIM_PINNED.name)):
                    if time.monotonic() - cut > 60:
                        break
                    time.sleep(0.05)
                drain = time.monotonic() - cut
                onboards = gauge(f"http://127.0.0.1:{kvbm}/metrics", V.KVBM + FROM_DISK + "_total")
                print(f"{users:>6} {n:>9} {errors:>7} {before:>15.1f} {rss_mib(sim.pid):>14.1f} {drain:>8.2f} "
                      f"{onboards:>14.0f}", flush=True)
        finally:
            sim.terminate()
            sim.wait()
    print("\nerrors = non-200 answers, SSE error events and broken connections (streams cut at the end of a"
          "\nlevel are not counted); drain = from cutting the clients to nothing in flight and no pinned block.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
