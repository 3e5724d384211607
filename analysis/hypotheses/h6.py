"""H6 — tier capacity and eviction policy shift the knee: the steps of each tier split, tabled."""
from __future__ import annotations

from .common import cols, pooled_of
from .registry import Hypothesis, Out, register


def section(runs: list, out: Out) -> None:
    out.csv("H6_tier_sizing.csv", cols(pooled_of(runs)))


register(Hypothesis(("H6",), "tier capacity and eviction policy", "H6_tier_sizing.csv", section,
                    storage_claims=("H6",)))
