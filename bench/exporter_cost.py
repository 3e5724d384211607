"""What does one scrape of each exporter cost, next to node_exporter doing the same job?

Each side runs as its own process on loopback and is scraped N times in a row over HTTP, the way
Prometheus does: wall time per scrape is measured by the client (median, p99) and CPU time per
scrape is the exporter process's utime+stime delta from /proc/<pid>/stat divided by N.
Comparisons: our nvme vs node_exporter --collector.diskstats; our uma vs node_exporter's meminfo,
pressure, stat and vmstat; both together vs those five. gpu and kvbm have no node_exporter
counterpart and are listed alone (kvbm scrapes a loopback server holding Dynamo's exposition text).

    python bench/exporter_cost.py [--scrapes 1000]
"""
from __future__ import annotations

import argparse
import http.server
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
NODE = "prometheus-node-exporter"
TICK = os.sysconf("SC_CLK_TCK")
CASES = (  # (label, our collectors, node_exporter collectors)
    ("disk", "nvme", ["diskstats"]),
    ("memory/cpu/psi", "uma", ["meminfo", "pressure", "stat", "vmstat"]),
    ("all host", "nvme,uma", ["diskstats", "meminfo", "pressure", "stat", "vmstat"]),
    ("gpu", "gpu", None),
    ("kvbm", "kvbm", None),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def measure(cmd: list[str], port: int, scrapes: int) -> tuple[float, float, float]:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        session = requests.Session()
        for _ in range(100):
            try:
                session.get(url, timeout=2).raise_for_status()
                break
            except requests.RequestException:
                time.sleep(0.1)
        for _ in range(20):                      # warm-up
            session.get(url, timeout=5)
        walls = []
        cpu0 = cpu_seconds(proc.pid)
        for i in range(scrapes):
            t = time.perf_counter()
            session.get(url, timeout=5).raise_for_status()
            walls.append(time.perf_counter() - t)
            if i % 200 == 199:
                print(f"  {i + 1}/{scrapes} scrapes", file=sys.stderr, flush=True)
        cpu = (cpu_seconds(proc.pid) - cpu0) / scrapes
    finally:
        proc.terminate()
        proc.wait()
    walls.sort()
    return statistics.median(walls) * 1e3, walls[int(0.99 * (len(walls) - 1))] * 1e3, cpu * 1e3


def kvbm_text_server() -> str:
    text = (ROOT / "tests" / "fixtures" / "dynamo" / "kvbm-remote-tier.txt").read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True      # headers and body go out as two writes; don't wait for an ACK

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, *args):
            pass
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}/metrics"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scrapes", type=int, default=1000)
    args = ap.parse_args()
    node = shutil.which(NODE)
    if not node:
        print(f"note: {NODE} is not installed (apt-get install {NODE}); its column stays empty", file=sys.stderr)
    kvbm_url = kvbm_text_server()
    rows = []
    for label, ours, theirs in CASES:
        port = free_port()
        cmd = [sys.executable, "-m", "exporters", "--collectors", ours, "--port", str(port), "--kvbm-url", kvbm_url,
               "--frontend-url", ""]
        print(f"{label}: ours ({ours})", file=sys.stderr, flush=True)
        mine = measure(cmd, port, args.scrapes)
        ref = None
        if theirs and node:
            port = free_port()
            print(f"{label}: node_exporter ({','.join(theirs)})", file=sys.stderr, flush=True)
            ref = measure([node, "--collector.disable-defaults", *[f"--collector.{c}" for c in theirs],
                           f"--web.listen-address=127.0.0.1:{port}"], port, args.scrapes)
        rows.append((label, ours, mine, ref))
    print(f"\n{args.scrapes} scrapes each over loopback HTTP; ms per scrape")
    print(f"{'case':<15} {'ours':<9} {'p50':>6} {'p99':>6} {'cpu':>6} | {'node p50':>8} {'p99':>6} {'cpu':>6} | "
          f"{'cpu ratio':>9} {'p99<=2ms':>8}")
    for label, ours, mine, ref in rows:
        theirs = f"{ref[0]:8.3f} {ref[1]:6.3f} {ref[2]:6.3f}" if ref else f"{'-':>8} {'-':>6} {'-':>6}"
        ratio = f"{mine[2] / ref[2]:9.2f}" if ref and ref[2] else f"{'-':>9}"
        print(f"{label:<15} {ours:<9} {mine[0]:6.3f} {mine[1]:6.3f} {mine[2]:6.3f} | {theirs} | {ratio} "
              f"{'yes' if mine[1] <= 2.0 else 'NO':>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
