"""The test plan's U_work rule and a throughput-saturation estimate, on a per-step table."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

from configs.vocabulary.rules import KNEE_RATIO

if TYPE_CHECKING:                  # tables in, no pandas import: the rig's commands load this module
    import pandas as pd


PLAN_RATIO = KNEE_RATIO
PLAN_RULE = "test plan: TTFT p99 > 2 x p50 on two consecutive steps"
# Below 200 requests a step's p99 is its largest TTFT or nearly (np.percentile interpolates between the top
# two), so one stalled request (a client GC pause, a scrape on a 2-core box) would make the step "over":
# a tail is at least this many requests above ratio x p50. At 200 requests and more the plan's rule implies it.
MIN_TAIL_REQUESTS = 2
SATURATION_RULE = "saturation: throughput grows < 10 % while TTFT p50 grows > 50 % (every request waits alike)"


@dataclass(frozen=True)
class Knee:
    knee_index: Optional[int]      # the step where the knee rule first holds
    u_work: Optional[float]        # the load level one step below the knee; None without a knee
    reason: str                    # "knee", "saturation", "no_knee" (none in the tested range), "knee_at_first_step",
                                   # "outage" (a level ran only while the stack or load generator was out)
    rule: str = PLAN_RULE          # which rule found it

    @property
    def said(self) -> str:
        """U_work in words: never a level that no rule picked."""
        if self.u_work is not None:
            return f"U_work = {self.u_work:g} ({self.rule})"
        if self.reason == "outage":
            return "no knee: every repetition of a level was touched by an outage (left out): no U_work"
        return "knee at the first step: no U_work" if self.reason == "knee_at_first_step" else \
            "no knee in the tested range: no U_work"


def find_knee(levels: Sequence[float], p50: Sequence[float], p99: Sequence[float],
              throughput: Optional[Sequence[float]] = None, tail: Optional[Sequence[float]] = None,
              ratio: float = PLAN_RATIO, consecutive: int = 2, min_gain: float = 0.10,
              p50_growth: float = 1.5) -> Knee:
    """The test plan's rule first: knee = first step where p99 > ratio x p50 holds for ``consecutive`` steps in
    a row (a single noisy step does not make a knee; where ``tail`` gives each step's requests above
    ratio x p50, a single noisy request does not make a step over); U_work = the level one step below. A queue that slows
    every request alike keeps p99/p50 low while p50 climbs, so where throughput is given, saturation counts
    too: the first step whose throughput grows less than ``min_gain`` while p50 grows by ``p50_growth``. With
    neither, there is no knee in the tested range and no U_work (the highest level tried is not one)."""
    tail = tail if tail is not None else [MIN_TAIL_REQUESTS] * len(levels)
    over = [not (math.isnan(a) or math.isnan(b)) and b > ratio * a and n >= MIN_TAIL_REQUESTS
            for a, b, n in zip(p50, p99, tail)]
    for i in range(len(over) - consecutive + 1):
        if all(over[i:i + consecutive]):
            if i == 0:
                return Knee(0, None, "knee_at_first_step")
            return Knee(i, levels[i - 1], "knee")
    for i in range(1, len(levels) if throughput is not None else 0):
        prev, cur = throughput[i - 1], throughput[i]
        if prev > 0 and (cur - prev) / prev < min_gain and p50[i] > p50_growth * p50[i - 1]:
            return Knee(i, levels[i - 1], "saturation", SATURATION_RULE)
    return Knee(None, None, "no_knee")


def saturation(levels: Sequence[float], throughput: Sequence[float], min_gain: float = 0.10) -> Optional[float]:
    """First level whose throughput grows less than ``min_gain`` over the previous level's, or None."""
    for i in range(1, len(levels)):
        prev, cur = throughput[i - 1], throughput[i]
        if prev > 0 and (cur - prev) / prev < min_gain:
            return levels[i - 1]
    return None


def knee_of(table: pd.DataFrame, pooled: pd.DataFrame, key: str) -> tuple[Optional[Knee], Optional[float]]:
    """The knee and the saturation level over the levels' repetitions that no outage touched (``pooled``
    holds only those): a level whose every repetition ran while the stack or the load generator was out
    gives no knee at all, rather than one drawn across the gap it leaves."""
    if table.empty or key not in ("arrival_rate_rps", "concurrency", "context_tokens"):
        return None, None
    ordered = pooled[pooled["phase"] == "run"].sort_values(key) if not pooled.empty else pooled
    if set(table.loc[table["phase"] == "run", key]) - set(ordered[key] if not ordered.empty else ()):
        return Knee(None, None, "outage"), None
    if pooled.empty:
        return None, None
    throughput = list(ordered["throughput_rps"]) if key in ("concurrency", "arrival_rate_rps") else None
    knee = find_knee(list(ordered[key]), list(ordered["ttft_p50_s"]), list(ordered["ttft_p99_s"]), throughput,
                     list(ordered["ttft_tail_requests"]))
    return knee, saturation(list(ordered[key]), throughput) if throughput is not None else None
