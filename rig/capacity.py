"""`python -m rig capacity H0 --stack stackB`: the largest load whose steady state meets the request objective,
as guidellm's goodput search and aiperf's max-concurrency-under-SLA answer it. Closed-loop users (or, with
--rate, open-loop requests per second) grow geometrically until a probe fails the objective, are bisected
between the last pass and the first fail, and the answer is run once more to confirm it. A probe is one short
run of the hypothesis at that load; it meets the objective when every step of it does (analysis.steps:
`meets_slo`, the run's `plan.slo`). The answer, its interval and the probes that bracket it go to
`<results_dir>/capacity-<time>/capacity.json`, which the report shows.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import asdict, dataclass
from typing import Callable, Optional

from configs import ConfigError, Harness, load, plan_run
from configs.model import tier_mode as read_tier_mode
from configs.paths import resolve

from .launch import experiment_dir, run_locust, say


@dataclass
class Probe:
    load: float
    run_id: str
    meets: bool
    why: str                       # the worst step's numbers, or why the run cannot be judged
    judged: bool = True            # False: nothing to judge (the run did not start, no request served)
    good_share: float = math.nan
    ttft_p99_s: float = math.nan
    tpot_p99_s: float = math.nan


def judge(cfg: Harness, run_id: str) -> tuple[bool, str, dict]:
    """Whether a probe's run met its objective at every step, the worst step's numbers, and those numbers."""
    from analysis.steps import load_run, step_table
    manifest, records = load_run(resolve(cfg.results_dir) / run_id)
    return verdict_of(step_table(manifest, records), manifest)


def verdict_of(steps, manifest: dict) -> tuple[bool, str, dict]:
    """judge() on a run's step table (every step of every repetition must meet the objective); no numbers:
    nothing to judge. A step that served no request in its window is no failure, but no pass either: unless
    another step was seen to fail, the probe cannot be judged."""
    seen = steps.dropna(subset=["good_share"]) if not steps.empty else steps
    if seen.empty:
        return False, "no step served a request to judge (a longer --duration-s lets requests finish)", {}
    failing = seen[~seen["meets_slo"].eq(True)]
    if failing.empty and len(seen) < len(steps):
        unjudged = steps[steps["good_share"].isna()]["label"]
        return False, (f"{', '.join(unjudged)} served no request to judge (a longer --duration-s lets requests "
                       "finish)"), {}
    worst = (failing if not failing.empty else seen)
    worst = worst.loc[worst["good_share"].idxmin()]
    numbers = {"good_share": float(worst["good_share"]), "ttft_p99_s": float(worst["ttft_p99_s"]),
               "tpot_p99_s": float(worst["tpot_p99_s"])}
    meets = bool(steps["meets_slo"].eq(True).all()) and manifest.get("status") == "complete"
    why = f"{numbers['good_share']:.1%} good at {worst['label']} (TTFT p99 {numbers['ttft_p99_s'] * 1000:.0f} ms)"
    if manifest.get("status") != "complete":
        why += f"; the run is {manifest.get('status')}: {manifest.get('stop_reason') or 'stopped'}"
    return meets, why, numbers


def search(probe: Callable[[float], Probe], start: float, most: float, integer: bool) -> dict:
    """Grow ×2 from ``start`` until a probe fails (or ``most`` passes), bisect to one unit (integer loads) or
    5 %, then repeat the answer once. Returns the answer, its interval, whether the repeat confirmed it, and
    every probe in order. A probe with nothing to judge is no failure: the search stops there and says so
    (``unjudged``), never claiming a load the stack was not seen to fail."""
    probes: list[Probe] = []

    class Unjudged(Exception):
        pass

    def run(load: float) -> bool:
        p = probe(load)
        probes.append(p)
        if not p.judged:
            raise Unjudged
        return p.meets
    low: Optional[float] = None
    high: Optional[float] = None
    load = start
    confirmed = False
    try:
        while True:
            if run(load):
                low = load
                if load >= most:
                    break
                load = min(most, load * 2)
            else:
                high = load
                break
        if low is not None and high is not None:
            while (high - low > 1) if integer else (high - low > 0.05 * low):
                mid = (low + high) // 2 if integer else round((low + high) / 2, 2)
                if run(mid):
                    low = mid
                else:
                    high = mid
        confirmed = run(low) if low is not None else False
        unjudged = None
    except Unjudged:
        unjudged = asdict(probes[-1])
    return {"capacity": low, "interval": [low, high], "confirmed": confirmed, "unjudged": unjudged,
            "probes": [asdict(p) for p in probes]}


def sentence(result: dict, stack: str, unit: str, slo: dict, context: int) -> str:
    bounds = ", ".join(f"{k[:-2].upper()} <= {slo[k] * 1000:g} ms" for k in ("ttft_s", "tpot_s", "e2e_s")
                       if slo.get(k))
    low, high = result["interval"]
    if result.get("unjudged"):
        u = result["unjudged"]
        known = f"it served {low:g} {unit} at {bounds}; " if low is not None else ""
        return (f"{stack}: capacity not measured: {known}the probe at {u['load']:g} {unit} could not be judged "
                f"({u['why']})")
    if low is None:
        return (f"{stack} meets no tested load: already {high:g} {unit} fail {bounds} at the "
                f"{slo['percentile']:g}th percentile")
    beyond = f", below {high:g}" if high is not None else " (the most tested; the capacity may be higher)"
    sure = "confirmed by a repeat" if result["confirmed"] else "NOT confirmed: the repeat failed"
    return (f"{stack} serves {low:g} {unit}{beyond} at {bounds} ({slo['percentile']:g}th percentile) with "
            f"{context}-token contexts; {sure}")


def run(cfg: Harness, hypothesis: str, stack: str, tier_mode: Optional[str] = None, rate: bool = False,
        start: float = 1, most: float = 256, duration_s: int = 30, context_tokens: Optional[int] = None,
        part: str = "") -> dict:
    """The search on ``stack`` as it runs now, each probe a run of ``hypothesis``; the result as
    capacity.json holds it."""
    fixed = (*((("TIER_MODE", tier_mode),) if tier_mode else ()),
             *((("CONTEXT_TOKENS", str(context_tokens)),) if context_tokens else ()))
    # the operator's SLO_* and the rest reach every probe's Locust; the plan read here is theirs too
    plan = plan_run(cfg, hypothesis, {**os.environ, "STACK": stack, **dict(fixed)})
    out, _ts = experiment_dir(cfg, "capacity", part)
    running: list = []
    unit = "requests/s" if rate else "users"
    slo = asdict(plan.slo)
    mode = f" ({plan.tier_mode})" if plan.stack.kv_tiering else ""
    say(f"[{plan.hypothesis_id}] capacity of {plan.stack_name}{mode} in {unit} under {slo}; {duration_s} s per "
        f"probe; results in {out}")

    def probe(level: float) -> Probe:
        env = (("RATE_RPS", f"{level:g}") if rate else ("CONCURRENCY", str(int(level))),
               ("DURATION_S", str(duration_s)), *fixed)
        code, run_id = run_locust(plan.hypothesis_id, plan.stack_name, cfg, running, env)
        if not run_id:
            p = Probe(level, "", False, f"the probe's run did not start (locust exit {code})", judged=False)
        else:
            meets, why, numbers = judge(cfg, run_id)
            p = Probe(level, run_id, meets, why, judged=bool(numbers), **numbers)
        verdict = "not judged" if not p.judged else ("meets the objective" if p.meets else "fails the objective")
        say(f"  {level:g} {unit}: {verdict}: {p.why}")
        return p
    result = search(probe, start if rate else int(start), most if rate else int(most), integer=not rate)
    context = plan.steps[0].params.context_tokens
    result.update(hypothesis=plan.hypothesis_id, stack=plan.stack_name, tier_mode=plan.tier_mode, unit=unit,
                  slo=slo, context_tokens=context, duration_s=duration_s,
                  said=sentence(result, plan.stack_name + mode, unit, slo, context))
    (out / "capacity.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    say(result["said"])
    say(f"capacity: {out / 'capacity.json'}")
    return result


def per_tier_mode(cfg: Harness, hypothesis: str, modes: list[str], **search) -> list[dict]:
    """One search per tier mode, Stack B restarted in each (the simulator, or a real one through
    STACK_B_RESTART_CMD) with the hypothesis' profile: a probe's TIER_MODE only labels its run, it is the
    restart that puts the stack in that mode. Each mode's answer goes to its own capacity-<time>-<mode>/."""
    from . import local
    from .launch import restart_stack_b, stop_simulator
    from .procs import Supervisor
    profile = plan_run(cfg, hypothesis, {**os.environ, "STACK": "stackB"}).profile_name
    sup = Supervisor(local.run_dir(cfg))
    results = []
    try:
        for mode in modes:
            restart_stack_b(cfg, sup, profile, mode)
            results.append(run(cfg, hypothesis, "stackB", mode, part=mode, **search))
    finally:
        stop_simulator(sup, "stackB")                  # the simulator this command started, nothing else
    if len(results) > 1:
        say("capacity per tier mode: " + "; ".join(r["said"] for r in results))
    return results


def main(args) -> int:
    cfg = load(args.config)
    search = dict(rate=args.rate, start=args.start, most=args.max, duration_s=args.duration_s,
                  context_tokens=args.context_tokens)
    if not args.tier_mode:
        result = run(cfg, args.hypothesis, args.stack, **search)
        return 0 if result["capacity"] is not None and not result["unjudged"] else 1
    modes = list(dict.fromkeys(read_tier_mode(m, "--tier-mode") for m in args.tier_mode.split(",") if m.strip()))
    if args.stack != "stackB" or not cfg.stacks["stackB"].kv_tiering:
        raise ConfigError(f"--tier-mode: only Stack B has tier modes (stackB, with kv_tiering), not {args.stack}")
    results = per_tier_mode(cfg, args.hypothesis, modes, **search)
    return 0 if all(r["capacity"] is not None and not r["unjudged"] for r in results) else 1


def register(sub) -> None:
    p = sub.add_parser("capacity", help="the largest load meeting the request objective (objectives.requests, "
                                        "the hypothesis' slo, SLO_*): grow, bisect, confirm",
                       description=__doc__.split("\n\n")[0],
                       epilog="examples:\n  python -m rig capacity H0 --stack stackB\n"
                              "  SLO_TTFT_S=0.5 python -m rig capacity H0 --stack stackA --max 64 --duration-s 30\n"
                              "  python -m rig capacity H0 --stack stackB --rate --start 0.5\n"
                              "  python -m rig capacity H2B --stack stackB --tier-mode B1,B2 --max 64",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("hypothesis", help="a fixed-context hypothesis, e.g. H0")
    p.add_argument("--stack", default="stackB", help="stack to load (default stackB)")
    p.add_argument("--tier-mode", help="Stack B's tier modes, one search each, Stack B restarted in each "
                                       "(B0, B1, B2 or a list: B1,B2); default: Stack B as it runs")
    p.add_argument("--rate", action="store_true", help="search open-loop requests per second instead of users")
    p.add_argument("--start", type=float, default=1, help="first load probed (default 1)")
    p.add_argument("--max", type=float, default=256, help="largest load probed (default 256)")
    p.add_argument("--duration-s", type=int, default=30, help="seconds per probe (default 30)")
    p.add_argument("--context-tokens", type=int, help="every probe's context (default: the hypothesis')")
    p.set_defaults(func=main)
