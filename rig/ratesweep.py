"""`python -m rig ratesweep H0`: place open-loop rates where they tell something, as guidellm's sweep does.

First the synchronous rate (one closed-loop user: one request at a time) and the maximum throughput (a
closed loop of --max-concurrency users), each one short run; then one open-loop run of the hypothesis with
--points rates evenly spaced between them (RATE_RPS), whose knee and U_work are in requests per second.
"""
from __future__ import annotations

from pathlib import Path

from configs import load
from configs.paths import resolve
from configs.runfiles import read_records

from .launch import run_locust, say


def throughput(results: Path, run_id: str) -> float:
    """Answered requests per second over the run's records (first start to last end)."""
    records = [r for r in read_records(results / run_id / "requests.jsonl") if r["ok"]]
    if len(records) < 2:
        return 0.0
    start = min(r["start_time"] for r in records)
    end = max(r["start_time"] + r["e2e_s"] for r in records)
    return len(records) / max(end - start, 1e-9)


def rates_between(low: float, high: float, points: int) -> list[float]:
    """``points`` rates from ``low`` to ``high`` inclusive, rounded to 2 decimals, no duplicates."""
    if points == 1 or high <= low:
        return [round(max(low, high), 2)]
    return sorted({round(low + (high - low) * i / (points - 1), 2) for i in range(points)})


def main(args) -> int:
    cfg = load(args.config)                 # its overlay (--config, else $HARNESS_CONFIG) is what each run reads
    results = resolve(cfg.results_dir)
    running: list = []
    base = (("DURATION_S", str(args.calibrate_s)),)
    measured = {}
    for label, users in (("synchronous", 1), ("maximum", args.max_concurrency)):
        say(f"[{args.hypothesis}] {label} throughput: {users} closed-loop user(s) for {args.calibrate_s} s")
        code, run_id = run_locust(args.hypothesis, args.stack, cfg, running, base + (("CONCURRENCY", str(users)),))
        if not run_id:
            say(f"error: the {label} calibration run did not start (locust exit {code})")
            return 2
        measured[label] = throughput(results, run_id)
        say(f"    {measured[label]:.2f} requests/s")
    rates = rates_between(measured["synchronous"], measured["maximum"], args.points)
    if not rates or rates[-1] <= 0:
        say("error: no throughput measured; nothing to sweep")
        return 2
    say(f"[{args.hypothesis}] open loop at {', '.join(f'{r:g}' for r in rates)} requests/s")
    code, run_id = run_locust(args.hypothesis, args.stack, cfg, running,
                              (("RATE_RPS", ",".join(f"{r:g}" for r in rates)),
                               ("DURATION_S", str(args.duration_s))))
    config = f" --config {cfg.overlay}" if cfg.overlay else ""
    say(f"rate sweep run: {run_id or '-'} (locust exit {code}); analyse it with sparkrig report{config} "
        f"--run {run_id}")
    return 0 if run_id else 2


def register(sub) -> None:
    p = sub.add_parser("ratesweep", help="open-loop rates placed between the synchronous rate and the maximum "
                                         "throughput, both measured first (as guidellm's sweep)")
    p.add_argument("hypothesis", help="a hypothesis with an open-loop workload, e.g. H0")
    p.add_argument("--stack", default="stackB", help="stack to load (default stackB)")
    p.add_argument("--points", type=int, default=6, help="rates in the sweep (default 6)")
    p.add_argument("--max-concurrency", type=int, default=64, help="users of the maximum-throughput run")
    p.add_argument("--calibrate-s", type=int, default=20, help="seconds of each calibration run")
    p.add_argument("--duration-s", type=int, default=30, help="seconds per rate")
    p.set_defaults(func=main)
