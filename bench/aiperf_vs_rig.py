"""Do our client and NVIDIA's aiperf measure the same thing on the same server? Both load the real Dynamo
frontend + mocker (`rig dynamo up`, the version configs/harness.yaml pins) in turn, at each concurrency, with
the same request shape (fixed prompt length, fixed output length, streamed /v1/completions), and the table
prints what each reports side by side: TTFT, the gap between chunks (our ITL, aiperf's inter_chunk_latency),
the time per output token ((E2E - TTFT) / (tokens - 1): our TPOT, aiperf's inter_token_latency), E2E
(aiperf's request_latency) and requests/s.

    python bench/aiperf_vs_rig.py [--levels 1,8] [--seconds 30] [--context-tokens 512] [--max-tokens 64]

aiperf is large (transformers, datasets, dash; no torch); install it apart:
    python3 -m venv var/aiperf-venv && var/aiperf-venv/bin/pip install aiperf==0.13.0
How the two differ (warm-up, what a "gap" is, prompts) is in docs/benchmarks.md ("Against an independent client").
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.steps import load_run, step_table  # noqa: E402
from configs import load  # noqa: E402
from rig import dynamo  # noqa: E402

# what each client calls the metrics compared: (ours, step_table's stem) and aiperf's profile-export key
METRICS = (("TTFT", "ttft", "time_to_first_token"), ("ITL (chunk gap)", "itl", "inter_chunk_latency"),
           ("TPOT", "tpot", "inter_token_latency"), ("E2E", "e2e", "request_latency"))


def free_port(below: int = 0) -> int:
    """A free loopback port; with ``below``, one under it (the kernel hands out ports from the ephemeral
    range, above 32767 here, and Dynamo's system port must fit a signed 16-bit number)."""
    for port in [0] if not below else random.sample(range(20000, below), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise SystemExit(f"no free loopback port below {below}")


def overlay(tmp: Path, context: int, max_tokens: int) -> Path:
    path = tmp / "overlay.yaml"
    system = free_port(below=32768)
    path.write_text(yaml.safe_dump({
        "results_dir": str(tmp / "results"), "run_dir": str(tmp / "run"),
        "dynamo": {"home": str(tmp / "dynamo"), "http_port": free_port(), "system_port": system,
                   "rpc_port": free_port(), "response_port": free_port(), "nats_port": free_port()},
        "loadgen": {"metrics_port": free_port(), "ready_timeout_s": 30},
        "hypotheses": {"H0": {"repetitions": 1, "params": {"context_tokens": context, "max_tokens": max_tokens,
                                                           "think_time_s": 0, "nonce_per_user": True}}}}))
    return path


def ours(full: Path, tmp: Path, concurrency: int, seconds: int) -> dict:
    """One H0 step at ``concurrency`` through Locust; the step's numbers as the report computes them (its
    warm-up excluded: the first 20 % of the step, at most 5 s)."""
    env = {**os.environ, "HARNESS_CONFIG": str(full), "STACK": "B", "CONCURRENCY": str(concurrency),
           "DURATION_S": str(seconds)}
    env.pop("MODEL", None)
    proc = subprocess.run([sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "h0.py"), "--headless",
                           "--only-summary"], cwd=tmp, env=env, capture_output=True, text=True, timeout=seconds + 120)
    runs = sorted((tmp / "results").glob("h0-*"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise SystemExit(f"our Locust run left no run (exit {proc.returncode}): "
                         + " | ".join(proc.stderr.strip().splitlines()[-5:]))
    run = runs[-1]
    manifest, records = load_run(run)
    row = step_table(manifest, records).iloc[0]
    out = {name: (row[f"{stem}_p50_s"] * 1000, row[f"{stem}_p99_s"] * 1000) for name, stem, _ in METRICS}
    out["req/s"] = row["throughput_rps"]
    out["requests"] = int(row["ok"])
    return out


def theirs(aiperf: str, cfg, tmp: Path, concurrency: int, seconds: int, context: int, max_tokens: int) -> dict:
    """aiperf at ``concurrency`` for ``seconds``, its first 2 x concurrency requests as its warm-up."""
    handle = cfg.models[cfg.dynamo.model].handle
    out = tmp / f"aiperf-c{concurrency}"
    cmd = [aiperf, "profile", "--model", handle, "--url", f"http://127.0.0.1:{cfg.dynamo.http_port}",
           "--endpoint-type", "completions", "--streaming", "--concurrency", str(concurrency),
           "--benchmark-duration", str(seconds), "--warmup-request-count", str(2 * concurrency),
           "--prompt-input-tokens-mean", str(context), "--prompt-input-tokens-stddev", "0",
           "--prompt-output-tokens-mean", str(max_tokens), "--prompt-output-tokens-stddev", "0",
           "--tokenizer", str(dynamo.home(cfg) / "model"), "--output-artifact-dir", str(out), "--ui-type", "none",
           "--no-auto-plot"]
    # not HF_HUB_OFFLINE: offline, aiperf 0.13 looks a tokenizer up in the hub's cache only, never at a path
    # (aiperf/common/tokenizer.py, _from_pretrained_local); online, a local directory is read as it is
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=seconds + 300)
    found = sorted(out.rglob("profile_export_aiperf.json"))
    if not found:
        log = out / "logs" / "aiperf.log"
        errors = [line for line in (log.read_text(errors="replace").splitlines() if log.exists() else [])
                  if "ERROR" in line or "Error" in line]
        tail = errors[-6:] or (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise SystemExit(f"aiperf left no profile_export_aiperf.json (exit {proc.returncode}): " + "\n".join(tail))
    doc = json.loads(found[-1].read_text())
    result = {name: (doc[key]["p50"], doc[key]["p99"]) if key in doc else (float("nan"),) * 2
              for name, _, key in METRICS}
    result["req/s"] = doc.get("request_throughput", {}).get("avg", float("nan"))
    result["requests"] = int(doc.get("request_count", {}).get("avg", 0))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--levels", default="1,8", help="concurrencies (default 1,8)")
    ap.add_argument("--seconds", type=int, default=30, help="seconds of load per client and level (default 30)")
    ap.add_argument("--context-tokens", type=int, default=512, help="prompt tokens (default 512)")
    ap.add_argument("--max-tokens", type=int, default=64, help="output tokens per request (default 64)")
    ap.add_argument("--aiperf", default=str(ROOT / "var" / "aiperf-venv" / "bin" / "aiperf"))
    args = ap.parse_args()
    if not Path(args.aiperf).exists():
        print(f"aiperf not found at {args.aiperf}; install it apart (see this script's --help)")
        return 0
    with tempfile.TemporaryDirectory(prefix="aiperf-vs-rig-") as name:
        tmp = Path(name)
        cfg = load(overlay(tmp, args.context_tokens, args.max_tokens))
        dynamo.install(cfg)
        dynamo.up(cfg, say=lambda line: None)
        full = dynamo.write_overlay(cfg)             # Stack B pointed at it, as `rig dynamo up` writes it
        rows = []
        try:
            for c in (int(v) for v in args.levels.split(",")):
                t0 = time.monotonic()
                rows.append((c, "sparkrig", ours(full, tmp, c, args.seconds)))
                rows.append((c, "aiperf", theirs(args.aiperf, cfg, tmp, c, args.seconds, args.context_tokens,
                                                 args.max_tokens)))
                print(f"  concurrency {c}: both done in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        finally:
            dynamo.down(cfg)
    print(f"Dynamo {cfg.dynamo.version} frontend + mocker, {args.context_tokens}-token prompts, {args.max_tokens} "
          f"output tokens, {args.seconds} s per client and level; ms as p50 / p99")
    head = f"{'conc':>4} {'client':<9}" + "".join(f"{name:>18}" for name, _, _ in METRICS) + f"{'req/s':>8}{'reqs':>6}"
    print(head)
    for c, client, r in rows:
        print(f"{c:>4} {client:<9}" + "".join(f"{r[name][0]:>9.1f}/{r[name][1]:<8.1f}" for name, _, _ in METRICS)
              + f"{r['req/s']:>8.2f}{r['requests']:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
