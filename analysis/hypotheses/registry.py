"""The registry of hypotheses, after guidellm's output registry (src/guidellm/benchmark/outputs/): each
hypothesis (or family: H2A/H2B, H4A/H4B) is one module that registers what it needs and draws — its ids,
the CSV its section always writes, whether its claim rests on KV moving through Stack B's disk tier, its
own gates, its report section and the finding it states. The report, the run's gates and the sweep's
post-run checks iterate this registry; adding a hypothesis is adding one module. Its claim and expected
outcome are configs/hypotheses.yaml's (as each run's manifest recorded them), never copied here."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pandas as pd

from ..document import Document

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"


@dataclass(frozen=True)
class Out:
    """Where a section writes: the report document, the figures directory, and its CSVs by name."""
    doc: Document
    figs: Path
    csv: Callable[[str, pd.DataFrame], None]


@dataclass(frozen=True)
class GateContext:
    """What a hypothesis' own gates judge: one run's manifest, records, pooled steps, telemetry frames and
    window, whether its stack tiers KV, and its knee over the level key."""
    manifest: dict
    records: pd.DataFrame
    pooled: pd.DataFrame
    frames: dict
    start: float
    end: float
    tiered: bool
    knee: object
    key: str


@dataclass(frozen=True)
class Finding:
    status: str           # supported | not supported | inconclusive
    why: str              # the numbers it rests on, or what is missing


def no_gates(ctx: GateContext) -> list:
    return []


def no_rule(hid: str, runs: list) -> Finding:
    return Finding(INCONCLUSIVE, f"the rig has no decision rule for {hid} yet: read its table and figures")


@dataclass(frozen=True)
class Hypothesis:
    ids: tuple[str, ...]
    name: str                                   # the family's heading where several of its ids ran
    csv: str                                    # the table its section writes whenever it has runs
    section: Callable[[list, Out], None]        # runs of its ids (with steps), in the order given
    gates: Callable[[GateContext], list] = no_gates
    storage_claims: tuple[str, ...] = ()        # its ids whose claim about Stack B rests on KV through the disk tier
    finding: Callable[[str, list], Finding] = no_rule     # one id and that id's runs


REGISTRY: dict[str, Hypothesis] = {}


def register(h: Hypothesis) -> Hypothesis:
    for hid in h.ids:
        if hid in REGISTRY and REGISTRY[hid] is not h:
            raise ValueError(f"hypothesis {hid} is registered twice")
        REGISTRY[hid] = h
    return h


def lookup(hid: str) -> Optional[Hypothesis]:
    return REGISTRY.get(hid)


def claims_storage(hid: str) -> bool:
    h = lookup(hid)
    return h is not None and hid in h.storage_claims


def families() -> list[Hypothesis]:
    """Each registered unit once, in registration order (the report's order)."""
    return list({id(h): h for h in REGISTRY.values()}.values())
