"""H0 — queue saturation defines U_work: each run's knee over its closed-loop users (or open-loop rate)."""
from __future__ import annotations

import pandas as pd

from .. import figures
from .common import cols, failed, lines
from .registry import INCONCLUSIVE, SUPPORTED, Finding, Hypothesis, Out, register


def _level(a) -> str:
    return a.knee_level if a.knee_level in ("concurrency", "arrival_rate_rps") else "concurrency"


def section(runs: list, out: Out) -> None:
    rows = []
    for a in runs:
        why_not = failed(a)
        level = _level(a)
        d = cols(a.pooled.sort_values(level), ("arrival_rate_rps", "shed_by_client", "schedule_lag_p99_s")).copy()
        d["p99_over_p50"] = d["ttft_p99_s"] / d["ttft_p50_s"]
        d["u_work"] = a.knee.u_work if a.knee and not why_not else None
        d["u_work_in"] = level                 # closed loop: users; open loop: requests per second
        d["knee_reason"] = a.knee.reason if a.knee else None
        d["throughput_saturation"] = a.saturation
        rows.append(d)
        unit = "requests/s offered" if level == "arrival_rate_rps" else "concurrency"
        grows = f"throughput stops growing at {unit} {a.saturation:g}" if a.saturation is not None else \
            "throughput grows across the tested range"
        said = f"no U_work: {why_not}" if why_not else a.knee.said if a.knee else "no steps to judge"
        out.doc.bullets([f"{a.run_id} ({a.manifest['stack']}): {said} ({unit}); {grows}"])
    out.csv("uwork.csv", pd.concat(rows, ignore_index=True))
    level = _level(runs[0])
    drawn, knees = lines([a for a in runs if not failed(a)])
    p = figures.percentiles_vs(drawn, level, out.figs / f"H0_percentiles_vs_{level}.png",
                               f"H0: TTFT percentiles vs {level}", knees)
    if p:
        out.doc.figure(p, f"H0: TTFT p50/p95/p99 vs {level}, knee and U_work marked")


def finding(hid: str, runs: list) -> Finding:
    """Supported where every run found its U_work; otherwise what stopped it (the knee at the first step:
    the sweep starts too high; no knee: it ends too low; an outage; most requests failed)."""
    said = []
    for a in runs:
        why_not = failed(a) or (None if a.knee and a.knee.u_work is not None else
                                a.knee.said if a.knee else "no steps to judge")
        said.append(f"{a.manifest['stack']} {a.run_id}: " + (why_not or f"U_work = {a.knee.u_work:g} "
                                                               f"({_level(a)}, {a.knee.rule.split(':')[0]} rule)"))
    ok = all(a.knee and a.knee.u_work is not None and not failed(a) for a in runs)
    return Finding(SUPPORTED if ok else INCONCLUSIVE, "; ".join(said))


register(Hypothesis(("H0",), "queue saturation defines U_work", "uwork.csv", section, finding=finding))
