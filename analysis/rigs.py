"""Several rigs side by side: the same hypothesis and stack, step by step, one column per rig.

Runs from different rigs are only comparable where they asked the same thing; the table pairs steps by
their label (the swept values) and says how many requests each rig's step holds, so a thin step is seen.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from . import figures
from .document import Document

METRICS = ("ttft_p50_s", "ttft_p99_s", "throughput_rps", "error_rate")     # per rig, beside its requests


def side_by_side(pooled: pd.DataFrame) -> pd.DataFrame:
    """One row per (hypothesis, stack, step label), a column per metric and rig (runs of one rig pooled by
    their median), for every hypothesis and stack that more than one rig ran."""
    if pooled.empty or pooled["rig"].nunique() < 2:
        return pd.DataFrame()
    shared = pooled.groupby(["hypothesis", "stack"])["rig"].transform("nunique") > 1
    d = pooled[shared]
    if d.empty:
        return pd.DataFrame()
    keys = ["hypothesis", "stack", "step", "label"]
    wide = d.groupby(keys + ["rig"], sort=False).agg(
        requests=("requests", "sum"), **{m: (m, "median") for m in METRICS}).unstack("rig")
    wide.columns = [f"{metric}[{rig}]" for metric, rig in wide.columns]
    return wide.reset_index().sort_values(["hypothesis", "stack", "step"], ignore_index=True)


def section(analyses: list, doc: Document, figs: Path, csv: Callable[[str, pd.DataFrame], None]) -> None:
    pooled = pd.concat([a.pooled for a in analyses if not a.pooled.empty], ignore_index=True) \
        if any(not a.pooled.empty for a in analyses) else pd.DataFrame()
    table = side_by_side(pooled)
    if table.empty:
        return
    rigs = sorted(pooled["rig"].unique())
    doc.h(2, "Across rigs — " + ", ".join(rigs))
    doc.p("Each hypothesis and stack that more than one rig ran, step by step (runs of one rig pooled by their "
          "median). Telemetry came from each run's own rig (the store's `rig` label); percentiles from each "
          "rig's records.")
    csv("rigs.csv", table)
    doc.table(table[[c for c in table.columns if c.split("[")[0] in ("hypothesis", "stack", "label", "requests",
                                                                       "ttft_p50_s", "ttft_p99_s")]])
    for (hyp, stack), d in pooled.groupby(["hypothesis", "stack"], sort=False):
        if d["rig"].nunique() < 2:
            continue
        p = figures.by_rig(d, figs / f"rigs_{hyp}_{stack}.png", f"{hyp} {stack}: TTFT p99 by step, per rig")
        if p:
            doc.figure(p, f"{hyp} {stack}: TTFT p99 per step, one line per rig")
