"""What one rig sends to a fleet's store, and what a fleet of them needs: series, samples per second and
bytes per sample, measured.

Runs `python -m rig demo --quick` (simulated Stack A/B, the exporters, Prometheus at the plan's cadence:
250 ms for NVMe and KV tier targets, 1 s for the rest, and Locust) with remote_write to a real
VictoriaMetrics (Debian's package) started here, then asks the store: series and samples per scrape job
over the demo, samples per second while it ran, and the store's bytes per sample after a flush. Prints a
table per job and the fleet table (10, 100, 1000 rigs: samples/s, disk per 30 days) docs/rigs.md quotes.

    python bench/fleet_sizing.py [--keep DIR]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.client_bench import free_port  # noqa: E402

RIG = "sizing-bench"
MONTH_S = 30 * 86400


def start_store(data: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(["victoria-metrics", f"-storageDataPath={data}", f"-httpListenAddr=127.0.0.1:{port}",
                             "-search.latencyOffset=0s", "-loggerLevel=ERROR"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                return proc
        except requests.RequestException:
            time.sleep(0.2)
    raise RuntimeError("victoria-metrics did not start")


def query(url: str, q: str, at: float) -> dict[str, float]:
    r = requests.get(f"{url}/api/v1/query", params={"query": q, "time": f"{at:.3f}"}, timeout=60)
    r.raise_for_status()
    return {x["metric"].get("job", ""): float(x["value"][1]) for x in r.json()["data"]["result"]}


def store_metric(url: str, name: str) -> float:
    total = 0.0
    for line in requests.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", help="keep the demo's files and the store's data here")
    args = ap.parse_args()
    if not shutil.which("victoria-metrics"):
        print("victoria-metrics is not installed (make tools, or apt-get install -y victoria-metrics)", file=sys.stderr)
        return 1
    work = Path(args.keep or tempfile.mkdtemp(prefix="fleet-sizing-"))
    work.mkdir(parents=True, exist_ok=True)
    store_port = free_port()
    url = f"http://127.0.0.1:{store_port}"
    store = start_store(work / "store", store_port)
    try:
        doc = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
        a, b = free_port(), free_port()
        doc.update(results_dir=str(work / "results"), run_dir=str(work / "run"), rig=RIG)
        for profile in doc["profiles"].values():
            profile["tier2_path"] = str(work / "kvbm" / Path(profile["tier2_path"]).name)
        doc["stacks"] = {
            "stackA": {"openai_base": f"http://127.0.0.1:{a}/v1",
                       "metrics_url": f"http://127.0.0.1:{a}/prometheus/metrics"},
            "stackB": {"openai_base": f"http://127.0.0.1:{b}/v1", "metrics_url": f"http://127.0.0.1:{b}/metrics",
                       "kvbm_metrics_url": f"http://127.0.0.1:{free_port()}/metrics",
                       "worker_metrics_url": f"http://127.0.0.1:{free_port()}/metrics"}}
        doc["exporters"] = {"ports": {k: free_port() for k in ("nvme", "uma", "gpu", "kvbm")}}
        doc["prometheus"] = {"port": free_port(), "remote_write": [{"url": f"{url}/api/v1/write"}]}
        doc["loadgen"] = {"metrics_port": free_port(), "adapter_proxy_port": free_port()}
        overlay = work / "sizing.yaml"
        overlay.write_text(yaml.safe_dump(doc))
        print("running `rig demo --quick` with remote_write to VictoriaMetrics ...", file=sys.stderr, flush=True)
        start = time.time()
        demo = subprocess.run([sys.executable, "-m", "rig", "--config", str(overlay), "demo", "--quick"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        end = time.time()
        if demo.returncode != 0:
            print(demo.stderr[-2000:], file=sys.stderr)
            return 1
        time.sleep(2)
        window = f"{int(end - start)}s"
        sel = f'{{rig="{RIG}"}}'
        series = query(url, f"count by (job) (last_over_time({sel}[{window}]))", end)
        samples = query(url, f"sum by (job) (count_over_time({sel}[{window}]))", end)
        requests.get(f"{url}/internal/force_flush", timeout=30)
        time.sleep(2)
        rows = store_metric(url, "vm_rows")
        size = store_metric(url, "vm_data_size_bytes")
    finally:
        store.terminate()
        store.wait()
    seconds = end - start
    total_series, total_samples = sum(series.values()), sum(samples.values())
    rate = total_samples / seconds
    per_sample = size / rows if rows else float("nan")
    print(f"\none rig during `make demo --quick` ({seconds:.0f} s; 250 ms NVMe/KV jobs, 1 s the rest):")
    print(f"{'job':<22} {'series':>7} {'samples/s':>10}")
    for job in sorted(samples, key=samples.get, reverse=True):
        print(f"{job or '(none)':<22} {series.get(job, 0):7.0f} {samples[job] / seconds:10.1f}")
    print(f"{'all':<22} {total_series:7.0f} {rate:10.1f}")
    print(f"\nVictoriaMetrics here: {rows:.0f} rows stored in {size / 2**20:.2f} MiB = {per_sample:.2f} bytes per "
          "sample (a short run: its index weighs more than in a month of data)")
    print(f"\n{'rigs':>5} {'samples/s':>11} {'series':>9} {'GiB / 30 days':>14}")
    for n in (10, 100, 1000):
        print(f"{n:5d} {rate * n:11.0f} {total_series * n:9.0f} {rate * n * MONTH_S * per_sample / 2**30:14.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
