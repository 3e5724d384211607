"""How long and how much memory does a full report take for a 3-hour run at the 200-250 ms cadence?

Builds a synthetic 3-hour H0 run (9 concurrency steps of 20 minutes, ~20 requests/s, with its
manifest and requests.jsonl), backfills every series the analysis queries into a fresh Prometheus
TSDB at 1 s resolution with `promtool tsdb create-blocks-from openmetrics`, starts Prometheus on it,
and times `python -m analysis report` (which pulls each series at the configured 250 ms step,
chunked under the 11,000-point limit). Prints wall time and the report process's peak RSS.

    python bench/report_bench.py [--hours 3] [--rps 20]
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

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from configs.vocabulary import rules as R  # noqa: E402
from configs.vocabulary import series as S  # noqa: E402

LEVELS = [1, 2, 4, 8, 16, 32, 64, 128, 256]
# every series the analysis queries, under the exact names and labels its PromQL selects
DISK = '{device="nvme0n1",role="kv_tier2"}'
SERIES = {
    R.DISK_READS_RATE + DISK: lambda c: 50 + c,
    R.DISK_READ_BYTES_RATE + DISK: lambda c: (50 + c) * 65536,
    R.DISK_READ_AWAIT + DISK: lambda c: 1e-4 * (1 + c / 64),
    R.DISK_UTIL + DISK: lambda c: min(1, c / 256),
    R.CPU_IOWAIT_RATIO + '{instance="h"}': lambda c: c / 2560,
    R.PRESSURE_IO_RATIO + '{instance="h"}': lambda c: c / 5120,
    R.KV_TRANSFER_BYTES_RATE + '{direction="onboard",from_tier="disk",to_tier="device"}': lambda c: c * 65536,
    R.KV_TRANSFER_BLOCKS_RATE + '{direction="onboard",from_tier="disk",to_tier="device"}': lambda c: c,
    R.KV_TRANSFER_BYTES_RATE + '{direction="offload",from_tier="host",to_tier="disk"}': lambda c: c * 65536,
    R.KV_HIT_RATIO + '{tier="disk"}': lambda c: 0.25,
    R.KV_HIT_RATIO + '{tier="host"}': lambda c: 0.5,
    R.KV_ONBOARD_SHARE + '{from_tier="disk"}': lambda c: 0.3,
    S.KV_BLOCK_SIZE_BYTES.name + '{instance="h"}': lambda c: 65536,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_run(results: Path, run_id: str, start: float, hours: float, rps: float) -> list[tuple[float, float, int]]:
    step_s = hours * 3600 / len(LEVELS)
    rng = random.Random(1)
    directory = results / run_id
    directory.mkdir(parents=True)
    steps, windows = [], []
    with open(directory / "requests.jsonl", "w") as f:
        for i, c in enumerate(LEVELS):
            a, b = start + i * step_s, start + (i + 1) * step_s
            steps.append({"index": i, "repetition": 0, "step": i, "phase": "run", "label": f"concurrency={c}",
                          "swept": {"concurrency": c}, "fio_profile": None, "target_concurrency": c,
                          "target_context_tokens": 256, "start": a, "end": b})
            windows.append((a, b, c))
            t = a
            while t < b:
                ttft = 0.05 * (1 + (c / 32) ** 2) * rng.lognormvariate(0, 0.3)
                f.write(json.dumps({"run_id": run_id, "hypothesis": "H0", "stack": "stackB", "workload": "fixed_context",
                                    "step": i, "repetition": 0, "phase": "run", "target_concurrency": c,
                                    "target_context_tokens": 256, "user": rng.randrange(c), "worker": "w",
                                    "endpoint": "completions", "model": "m", "start_time": t, "status": 200,
                                    "ok": True, "error_class": None, "error": None, "ttfb_s": ttft, "ttft_s": ttft,
                                    "e2e_s": ttft + 1.0, "itl_s": [0.008] * 8, "prompt_tokens": 256,
                                    "completion_tokens": 128, "tokens_source": "usage"}) + "\n")
                t += rng.expovariate(rps)
    manifest = {"run_id": run_id, "hypothesis": "H0", "title": "synthetic", "stack": "stackB", "profile": "comfy",
                "workload": "fixed_context", "status": "complete", "blocked": None, "start": start,
                "end": start + hours * 3600, "steps": steps,
                "plan": {"hypothesis": {"sweep": {"concurrency": LEVELS}, "expected": "synthetic"}}}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return windows


def backfill(path: Path, windows, start: float, end: float) -> None:
    with open(path, "w") as f:
        names = {}
        for series in SERIES:
            names.setdefault(series.split("{")[0], []).append(series)
        for name, members in names.items():
            f.write(f"# TYPE {name} gauge\n")
            for series in members:
                fn = SERIES[series]
                for a, b, c in windows:
                    for t in range(int(a), int(b)):
                        f.write(f"{series} {fn(c)} {t}\n")
        f.write("# EOF\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--rps", type=float, default=20.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=ROOT / "var" if (ROOT / "var").exists() else None) as tmp:
        tmp = Path(tmp)
        end = int(time.time()) - 3600
        start = end - int(args.hours * 3600)
        print(f"building a {args.hours:g} h run at {args.rps:g} requests/s ...", file=sys.stderr, flush=True)
        windows = build_run(tmp / "results", "bench-h0", start, args.hours, args.rps)
        n = sum(1 for _ in open(tmp / "results" / "bench-h0" / "requests.jsonl"))
        print("backfilling telemetry with promtool ...", file=sys.stderr, flush=True)
        backfill(tmp / "data.om", windows, start, end)
        subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(tmp / "data.om"),
                        str(tmp / "tsdb")], check=True, capture_output=True)
        port = free_port()
        (tmp / "prometheus.yml").write_text("global: {scrape_interval: 15s}\n")
        prom = subprocess.Popen(["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                try:
                    if requests.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).ok:
                        break
                except requests.RequestException:
                    time.sleep(0.2)
            (tmp / "overlay.yaml").write_text(f"results_dir: {tmp / 'results'}\n")
            print("timing python -m analysis report ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "analysis", "--config", str(tmp / "overlay.yaml"),
                                     "--prometheus", f"http://127.0.0.1:{port}", "report", "--run", "bench-h0",
                                     "--out", str(tmp / "report")], cwd=ROOT, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
            err = proc.stderr.read()
        finally:
            prom.terminate()
            prom.wait()
        if os.waitstatus_to_exitcode(status) != 0:
            print(err[-2000:], file=sys.stderr)
            return 1
    print(f"\n{args.hours:g} h run, {n} requests, {len(SERIES)} telemetry series at 1 s pulled at 250 ms")
    print(f"report wall time  {wall:6.1f} s   (target <= 30 s)")
    print(f"report peak RSS   {usage.ru_maxrss / 1024:6.0f} MiB (target <= 1024 MiB)")
    print(f"report CPU time   {usage.ru_utime + usage.ru_stime:6.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
