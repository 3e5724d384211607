"""How precise and how cheap is our Locust client, next to guidellm, against a target of known timing?

The target is `python -m stacksim.fixed_timing` (first token 50 ms after the request, then one every
20 ms, 64 tokens: the timing the load-model issue measured with) pinned to CPU 0; each client runs
pinned to CPU 1 for --seconds at 1, 64 and 256 concurrent streams. With --processes N our client is
Locust's own master and N workers, and the target --target-workers processes: the target gets the first
CPUs, the client the rest (512 and 1024 streams want a machine with the cores). TTFT error = measured
TTFT - 50 ms (the target's own scheduling lag is in both columns alike); CPU per request = the client
process's user+system time (os.wait4) divided by the requests it completed, start-up included, and
"steady": the process tree's CPU while the load runs over the requests completed meanwhile. For our client the target also logs when each chunk left
(--stamp-log), so its own lag is taken out: "recv lag" is the client's receive time of a chunk minus the
target's send time of that chunk (first chunk, and every chunk), "target lag" the target's first chunk
behind its schedule.

    python bench/client_bench.py [--seconds 30] [--levels 1,64,256] [--guidellm var/guidellm-venv/bin/guidellm]
    python bench/client_bench.py --levels 512,1024 --processes 8 --target-workers 6

guidellm is large (it pulls torch); install it apart:
    python3 -m venv var/guidellm-venv && var/guidellm-venv/bin/pip install guidellm
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
TTFT_MS, ITL_MS, TOKENS = 50.0, 20.0, 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpus: str, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *cmd] if shutil.which("taskset") and os.cpu_count() > 1 else cmd


def cpu_split(target_workers: int, processes: int) -> tuple[str, str]:
    """(the target's CPUs, the client's): the target first, the client the next ones (one core, or one
    per Locust process and one for its master)."""
    client = max(1, processes + 1 if processes else 1)
    last = min(os.cpu_count() - 1, target_workers + client - 1)
    return f"0-{target_workers - 1}", f"{min(target_workers, last)}-{last}"


def tree_cpu(proc: psutil.Process) -> float:
    """CPU seconds (user + system) of a process and its live children (Locust's workers)."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def run_measured(cmd: list[str], env: dict, cwd: Path, samples: list | None = None) -> float:
    """Run to completion; return the child's CPU seconds (user + system, its reaped children included).
    With ``samples``, (wall time, CPU seconds so far) of the process tree is appended every 0.5 s."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watched = psutil.Process(proc.pid)
    while True:
        pid, status, usage = os.wait4(proc.pid, 0 if samples is None else os.WNOHANG)
        if pid:
            break
        samples.append((time.time(), tree_cpu(watched)))
        time.sleep(0.5)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{cmd[0:4]} exited with {proc.returncode}")
    return usage.ru_utime + usage.ru_stime


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def receive_lags(records: list[dict], stamps: Path) -> tuple[list[float], list[float], list[float]]:
    """(first-chunk receive lag, every chunk's receive lag, the target's first-chunk lag) in ms, joined on
    the request's identity. A receive time is the record's start_time + ttft_s (+ the gaps after it)."""
    sent = {}
    for line in stamps.read_text().splitlines():
        doc = json.loads(line)
        sent[doc["request_hash"]] = doc
    first, every, target = [], [], []
    for r in records:
        doc = sent.get(r["request_hash"])
        if not r["ok"] or doc is None or r["ttft_s"] is None:
            continue
        received = [r["start_time"] + r["ttft_s"]]
        for gap in r["itl_s"]:
            received.append(received[-1] + gap)
        first.append((received[0] - doc["sent"][0]) * 1000)
        every += [(a - b) * 1000 for a, b in zip(received, doc["sent"])]
        target.append((doc["sent"][0] - doc["first_due"]) * 1000)
    return first, every, target


def ours(base: str, streams: int, seconds: int, work: Path, stamps: Path, cpus: str, processes: int) -> tuple:
    overlay = work / "overlay.yaml"
    overlay.write_text(f"results_dir: {work / 'results'}\nrun_dir: {work / 'run'}\n"
                       f"hypotheses: {{H0: {{repetitions: 1}}}}\nloadgen: {{metrics_port: {free_port()}}}\n")
    env = {**os.environ, "HARNESS_CONFIG": str(overlay), "ENDPOINT": base, "MODEL": "m",
           "CONCURRENCY": str(streams), "DURATION_S": str(seconds), "RUN_ID": f"clientbench-{streams}"}
    extra = ["--processes", str(processes)] if processes else []
    samples: list[tuple[float, float]] = []
    cpu = run_measured(pinned(cpus, [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "h0.py"),
                                     "--headless", "--only-summary", *extra]), env, work, samples)
    records = [json.loads(x) for x in (work / "results" / f"clientbench-{streams}" / "requests.jsonl").open()]
    ttft = [r["ttft_s"] * 1000 - TTFT_MS for r in records if r["ok"]]
    first, every, target = receive_lags(records, stamps)
    return (statistics.median(ttft), pct(ttft, 0.99), cpu * 1000 / len(ttft), len(ttft),
            pct(first, 0.5), pct(first, 0.99), pct(every, 0.5), pct(every, 0.99), pct(target, 0.99),
            steady_cpu_ms(records, samples))


def steady_cpu_ms(records: list[dict], samples: list[tuple[float, float]]) -> float:
    """CPU per request while the load runs, start-up and shut-down left out: the CPU the process tree
    spent between two samples, over the requests that completed between them (the first 3 s of load,
    while users ramp up, and the last second left out)."""
    done = sorted(r["start_time"] + r["e2e_s"] for r in records if r["ok"])
    if not done:
        return float("nan")
    lo, hi = min(r["start_time"] for r in records) + 3, done[-1] - 1
    inside = [(t, c) for t, c in samples if lo <= t <= hi]
    if len(inside) < 2:
        return float("nan")
    (t0, c0), (t1, c1) = inside[0], inside[-1]
    n = sum(1 for t in done if t0 < t <= t1)
    return (c1 - c0) * 1000 / n if n else float("nan")


def guidellm(binary: str, base: str, streams: int, seconds: int, work: Path, cpus: str) -> tuple[float, float, float, int]:
    data = work / "prompts.jsonl"
    with open(data, "w") as f:
        for i in range(20000):
            f.write(json.dumps({"prompt": " ".join(f"w{i}x{j}" for j in range(64))}) + "\n")
    out = work / f"guidellm-{streams}.json"
    origin = base.rsplit("/v1", 1)[0]
    cpu = run_measured(pinned(cpus, [binary, "run", "--backend", f"kind=openai_http,target={origin},model=m",
                                  "--profile", f"kind=concurrent,streams={streams}",
                                  "--constraint", f"kind=max_duration,seconds={seconds}",
                                  "--data", f"kind=json_file,path={data}", "--output", f"kind=json,path={out}",
                                  "--disable-progress"]), dict(os.environ), work)
    m = json.loads(out.read_text())["benchmarks"][0]["metrics"]["time_to_first_token_ms"]["successful"]
    return m["median"] - TTFT_MS, m["percentiles"]["p99"] - TTFT_MS, cpu * 1000 / m["count"], m["count"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--levels", default="1,64,256")
    ap.add_argument("--guidellm", default=str(ROOT / "var" / "guidellm-venv" / "bin" / "guidellm"))
    ap.add_argument("--processes", type=int, default=0, help="Locust worker processes of our client (0: one process)")
    ap.add_argument("--target-workers", type=int, default=1, help="processes of the fixed-timing target")
    args = ap.parse_args()
    target_cpus, client_cpus = cpu_split(args.target_workers, args.processes)
    gl = args.guidellm if Path(args.guidellm).exists() else shutil.which("guidellm")
    if not gl:
        print("note: guidellm not found; its columns stay empty (see this script's docstring to install it)",
              file=sys.stderr)
    port = free_port()
    stamps = Path(tempfile.mkdtemp()) / "stamps.jsonl"
    server = subprocess.Popen(pinned(target_cpus, [
        sys.executable, "-m", "stacksim.fixed_timing", "--port", str(port), "--model", "m", "--ttft-ms", str(TTFT_MS),
        "--itl-ms", str(ITL_MS), "--tokens", str(TOKENS), "--stamp-log", str(stamps),
        "--workers", str(args.target_workers)]), stdout=subprocess.PIPE, text=True, cwd=ROOT)
    rows = []
    try:
        ready = 0
        for line in server.stdout:              # every target process says "ready" once it listens
            ready += line.strip() == "ready"
            if ready == args.target_workers:
                break
        assert ready == args.target_workers, "the fixed-timing target did not start"
        base = f"http://127.0.0.1:{port}/v1"
        for streams in (int(x) for x in args.levels.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                print(f"{streams} streams: ours ...", file=sys.stderr, flush=True)
                mine = ours(base, streams, args.seconds, Path(tmp), stamps, client_cpus, args.processes)
                time.sleep(1)
                theirs = None
                if gl:
                    print(f"{streams} streams: guidellm ...", file=sys.stderr, flush=True)
                    theirs = guidellm(gl, base, streams, args.seconds, Path(tmp), client_cpus)
                rows.append((streams, mine, theirs))
    finally:
        server.terminate()
        server.wait()
    print(f"\ntarget: TTFT {TTFT_MS:g} ms, ITL {ITL_MS:g} ms, {TOKENS} tokens, {args.target_workers} process(es) on "
          f"CPUs {target_cpus}; client on CPUs {client_cpus}"
          f"{f', Locust --processes {args.processes}' if args.processes else ''}; {args.seconds} s per level; "
          "TTFT error in ms, client CPU in ms per request")
    print(f"{'streams':>7} | {'ours p50':>8} {'p99':>7} {'cpu/req':>8} {'steady':>7} {'reqs':>6} | "
          f"{'guidellm p50':>12} {'p99':>7} {'cpu/req':>8} {'reqs':>6}")
    for streams, m, t in rows:
        theirs = f"{t[0]:12.2f} {t[1]:7.2f} {t[2]:8.2f} {t[3]:6d}" if t else f"{'-':>12} {'-':>7} {'-':>8} {'-':>6}"
        print(f"{streams:7d} | {m[0]:8.2f} {m[1]:7.2f} {m[2]:8.2f} {m[9]:7.2f} {m[3]:6d} | {theirs}")
    print("(cpu/req: the whole run, start-up included, over its requests; steady: while the load runs)")
    print("\nours against the target's own send stamps (ms): receive lag of the first chunk and of every chunk, "
          "and the target's first chunk behind its schedule")
    print(f"{'streams':>7} | {'first p50':>9} {'p99':>7} | {'every p50':>9} {'p99':>7} | {'target p99':>10}")
    for streams, m, _t in rows:
        print(f"{streams:7d} | {m[4]:9.2f} {m[5]:7.2f} | {m[6]:9.2f} {m[7]:7.2f} | {m[8]:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
