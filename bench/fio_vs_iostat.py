"""Validate the NVMe exporter and the iostat recording rules against `iostat -x 1`, under fio load.

Runs a random-read fio job (O_DIRECT) on a file in a temporary directory under the project's var/,
while the nvme exporter (role=kv_tier2 on that directory's disk) is scraped every 250 ms by a
real Prometheus evaluating prometheus/rules/iostat.rules.yml, and `iostat -x -d -y 1` watches the
same disk. Prints the means over the steady part of the run side by side; exit status 1 when r/s,
rMB/s, r_await or %util differ by more than 5 %.

    python bench/fio_vs_iostat.py [--seconds 30] [--iodepth 16] [--size 512MiB]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from configs import load  # noqa: E402
from configs.vocabulary import rules as R  # noqa: E402
from configs.vocabulary import series as S  # noqa: E402
from configs.discovery import prometheus_url  # noqa: E402
from configs.paths import ensure_data_dir  # noqa: E402
from exporters.collectors.nvme import _devnum, disk_of  # noqa: E402
from rig import local  # noqa: E402
from rig.procs import Supervisor  # noqa: E402

# (label, recording rule, its scale, iostat column, its scale, must agree within 5 %)
COLUMNS = (
    ("r/s", R.DISK_READS_RATE, 1, "r/s", 1, True),
    ("rMB/s", R.DISK_READ_BYTES_RATE, 1 / 2**20, "rkB/s", 1 / 1024, True),
    ("r_await ms", R.DISK_READ_AWAIT, 1000, "r_await", 1, True),
    ("%util", R.DISK_UTIL, 100, "%util", 1, True),
    ("aqu-sz", R.DISK_QUEUE_SIZE, 1, "aqu-sz", 1, False),
    ("w/s", R.DISK_WRITES_RATE, 1, "w/s", 1, False),
)
RATE_WINDOW_S = 5
WARMUP_S = 6      # the 5 s rate window must lie wholly inside the run


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def watch_iostat(device: str, rows: list, stop: threading.Event) -> subprocess.Popen:
    proc = subprocess.Popen(["iostat", "-x", "-d", "-y", "1", device], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "LC_ALL": "C"})

    def read():
        header = None
        for line in proc.stdout:
            parts = line.split()
            if parts[:1] == ["Device"]:
                header = parts
            elif header and parts[:1] == [device]:
                rows.append((time.time(), dict(zip(header[1:], map(float, parts[1:])))))
            if stop.is_set():
                break
    threading.Thread(target=read, daemon=True).start()
    return proc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--iodepth", type=int, default=16)
    ap.add_argument("--size", default="512MiB")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fio-vs-iostat-", dir=ensure_data_dir("var")))
    device = disk_of(Path("/sys"), *_devnum(str(work)))
    if not device:
        print(f"error: cannot tell which disk holds {work}", file=sys.stderr)
        return 2
    overlay = work / "overlay.yaml"
    overlay.write_text(f"run_dir: {work / 'run'}\nexporters: {{ports: {{nvme: {free_port()}}}}}\n"
                       f"prometheus: {{port: {free_port()}}}\n")
    cfg = load(str(overlay))
    sup = Supervisor(local.run_dir(cfg))
    stop = threading.Event()
    iostat = None
    try:
        print(f"disk {device}; fio file in {work}", flush=True)
        # write the file for real: reads of fallocated (unwritten) extents never reach the device
        subprocess.run(["fio", "--name=layout", f"--filename={work / 'fio.dat'}", f"--size={args.size}",
                        "--rw=write", "--bs=1M", "--end_fsync=1", "--fallocate=none"], check=True, capture_output=True)
        local.start_exporters(cfg, sup, "spill", names=["nvme"])
        # the exporter marks the tier2 directory's disk; point it at our work directory
        sup.stop("exporter-nvme")
        port = cfg.exporters.ports["nvme"]
        sup.start("exporter-nvme", [sys.executable, "-m", "exporters.nvme", "--config", str(overlay),
                                    "--tier2-path", str(work)], ready_url=f"http://127.0.0.1:{port}/metrics",
                  cwd=ROOT)
        local.start_prometheus(cfg, sup)
        rows: list = []
        iostat = watch_iostat(device, rows, stop)
        time.sleep(2)
        print(f"fio randread 4k iodepth {args.iodepth} for {args.seconds} s ...", flush=True)
        start = time.time()
        subprocess.run(["fio", "--name=validate", f"--filename={work / 'fio.dat'}", f"--size={args.size}",
                        "--rw=randread", "--bs=4k", "--direct=1", "--ioengine=libaio", f"--iodepth={args.iodepth}",
                        f"--runtime={args.seconds}", "--time_based", "--output=/dev/null"], check=True)
        end = time.time()
        time.sleep(2)
        lo, hi = start + WARMUP_S, end - 1
        ours = {}
        for label, rule, scale, _, _, _ in COLUMNS:
            r = requests.get(f"{prometheus_url(cfg)}/api/v1/query_range",
                             params={"query": f'{rule}{{device="{device}"}}', "start": lo, "end": hi, "step": 1},
                             timeout=10).json()["data"]["result"]
            values = [float(v) for _, v in r[0]["values"]] if r else []
            ours[label] = sum(values) / len(values) * scale if values else float("nan")
        # The rule evaluated at lo covers (lo-5, lo]; iostat's row printed at t covers (t-1, t]:
        # take the rows that tile the same span (lo-5, hi].
        window = [row for t, row in rows if lo - RATE_WINDOW_S + 1 <= t <= hi + 0.5]
        theirs = {label: sum(row[col] for row in window) / len(window) * scale if window else float("nan")
                  for label, _, _, col, scale, _ in COLUMNS}
        role = requests.get(f"{prometheus_url(cfg)}/api/v1/query", params={
            "query": f'{S.DISK_ROLE_INFO.name}{{device="{device}",role="kv_tier2"}}'}, timeout=10).json()
    finally:
        stop.set()
        if iostat:
            iostat.terminate()
        sup.stop_mine()
        for f in work.glob("fio.dat"):
            f.unlink()
    print(f"\n{device} (role=kv_tier2: {'yes' if role['data']['result'] else 'NO'}), "
          f"{len(window)} iostat samples, window {hi - lo:.0f} s")
    print(f"{'metric':<11} {'iostat -x':>11} {'prometheus':>11} {'diff %':>7}  gate")
    failed = False
    for label, *_, gated in COLUMNS:
        a, b = theirs[label], ours[label]
        diff = abs(b - a) / a * 100 if a else (0.0 if b == 0 else float("inf"))
        bad = gated and not diff <= 5
        failed |= bad
        print(f"{label:<11} {a:11.3f} {b:11.3f} {diff:7.2f}  {'FAIL' if bad else ('ok' if gated else '-')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
