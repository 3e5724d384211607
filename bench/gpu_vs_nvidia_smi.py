"""Check the GPU exporter against nvidia-smi on a real GPU, side by side.

Starts `python -m exporters --collectors gpu,uma` on a free loopback port (optionally with a
process holding GPU memory, named so the UMA collector's per-process match picks it up), scrapes
it once, runs `nvidia-smi --query-gpu` and `--query-compute-apps` in the same second and prints
both, field by field. Instantaneous values (power, clocks, utilisation) may differ by a sample.

    python bench/gpu_vs_nvidia_smi.py [--hold-gib 2]
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from configs.vocabulary import series as S  # noqa: E402

# nvidia-smi query field -> (our metric, scale from our unit to nvidia-smi's unit)
PAIRS = (
    ("utilization.gpu", S.GPU_UTILIZATION.name, 100, "%"),
    ("utilization.memory", S.GPU_MEMORY_UTILIZATION.name, 100, "%"),
    ("memory.total", S.GPU_MEMORY_TOTAL.name, 1 / 2**20, "MiB"),
    ("memory.used", S.GPU_MEMORY_USED.name, 1 / 2**20, "MiB"),
    ("power.draw", S.GPU_POWER.name, 1, "W"),
    ("temperature.gpu", S.GPU_TEMPERATURE.name, 1, "C"),
    ("clocks.sm", S.GPU_SM_CLOCK.name, 1e-6, "MHz"),
    ("clocks.mem", S.GPU_MEMORY_CLOCK.name, 1e-6, "MHz"),
)
HOLDER = "import sys, time, torch; x = torch.ones(int(float(sys.argv[1]) * 2**30), dtype=torch.uint8, " \
         "device='cuda'); print('holding', flush=True); time.sleep(600)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hold-gib", type=float, default=0, help="start a torch process holding this much GPU memory")
    args = ap.parse_args()
    procs = []
    try:
        if args.hold_gib:
            holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(args.hold_gib), "gpu-holder"],
                                      stdout=subprocess.PIPE, text=True)
            procs.append(holder)
            print(holder.stdout.readline().strip())
        overlay = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        overlay.write("exporters:\n  processes: {gpu_holder: 'gpu-holder'}\n")
        overlay.close()
        port = free_port()
        exporter = subprocess.Popen([sys.executable, "-m", "exporters", "--collectors", "gpu,uma", "--port",
                                     str(port), "--config", overlay.name], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        procs.append(exporter)
        print(exporter.stdout.readline().strip())
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        fields = ",".join(p[0] for p in PAIRS) + ",clocks_throttle_reasons.active"
        smi = subprocess.run(["nvidia-smi", f"--query-gpu=index,{fields}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True)
        apps = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True)
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        os.unlink(overlay.name) if "overlay" in locals() else None
    ours: dict[tuple[str, str], float] = {}
    unsupported, throttled = [], []
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == S.GPU_THROTTLE.name and s.value == 1:
                throttled.append(f"gpu{s.labels['gpu']}:{s.labels['reason']}")
            if s.name == S.GPU_FIELD_SUPPORTED.name and s.value == 0:
                unsupported.append(f"gpu{s.labels['gpu']}:{s.labels['field']}")
            ours[(s.name, s.labels.get("pid", s.labels.get("process", s.labels.get("gpu", ""))))] = s.value
    print(f"\n{S.GPU_UP.name} = {ours.get((S.GPU_UP.name, ''))}")
    print(f"{'gpu':>3} {'nvidia-smi field':<20} {'nvidia-smi':>12} {'exporter':>12} unit")
    for line in smi.stdout.strip().splitlines():
        values = [v.strip() for v in line.split(",")]
        gpu = values[0]
        print(f"{gpu:>3} {'throttle reasons':<20} {values[-1]:>12} {','.join(throttled) or 'none':>12}")
        for (field, metric, scale, unit), smi_value in zip(PAIRS, values[1:]):
            mine = ours.get((metric, gpu))
            shown = "n/a" if mine is None else f"{mine * scale:.2f}"
            print(f"{gpu:>3} {field:<20} {smi_value:>12} {shown:>12} {unit}")
    print("\nper-process GPU memory (MiB): pid nvidia-smi exporter")
    for line in apps.stdout.strip().splitlines():
        pid, used = [v.strip() for v in line.split(",")]
        mine = next((v for (n, p), v in ours.items() if n == S.GPU_PROCESS_MEMORY.name and p == pid), None)
        print(f"  {pid} {used} {'n/a' if mine is None else f'{mine / 2**20:.0f}'}")
    held = ours.get((S.PROCESS_GPU_MEMORY.name, "gpu_holder"))
    if held is not None:
        print(f"UMA collector: {S.PROCESS_GPU_MEMORY.name}{{process=\"gpu_holder\"}} = {held / 2**20:.0f} MiB")
    print("fields NVML does not support here:", ", ".join(unsupported) or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
