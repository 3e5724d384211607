"""The test plan's U_work rule and a throughput-saturation estimate, on a per-step table."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class Knee:
    knee_index: Optional[int]      # first step of two consecutive steps with p99 > ratio x p50
    u_work: Optional[float]        # the load level one step below the knee
    reason: str                    # "knee", "no_knee" (U_work >= the highest level tried) or "knee_at_first_step"


def find_knee(levels: Sequence[float], p50: Sequence[float], p99: Sequence[float], ratio: float = 2.0,
              consecutive: int = 2) -> Knee:
    """Knee = first step where p99 > ratio x p50 holds for ``consecutive`` steps in a row; U_work = the
    level one step below. A single noisy step does not make a knee."""
    over = [not (math.isnan(a) or math.isnan(b)) and b > ratio * a for a, b in zip(p50, p99)]
    for i in range(len(over) - consecutive + 1):
        if all(over[i:i + consecutive]):
            if i == 0:
                return Knee(0, None, "knee_at_first_step")
            return Knee(i, levels[i - 1], "knee")
    return Knee(None, levels[-1] if levels else None, "no_knee")


def saturation(levels: Sequence[float], throughput: Sequence[float], min_gain: float = 0.10) -> Optional[float]:
    """First level whose throughput grows less than ``min_gain`` over the previous level's, or None."""
    for i in range(1, len(levels)):
        prev, cur = throughput[i - 1], throughput[i]
        if prev > 0 and (cur - prev) / prev < min_gain:
            return levels[i - 1]
    return None
