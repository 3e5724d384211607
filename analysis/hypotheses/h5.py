"""H5 — larger KV working sets worsen p95/p99: p99 against session reuse, and the reuse the server really
gave (its prefix-cached share by turn), per run and routing."""
from __future__ import annotations

import pandas as pd

from ..steps import by_turn, session_hits
from .registry import Hypothesis, Out, register
from .swept import table_and_figure


def _spread(hits: pd.Series) -> str:
    if hits.empty:
        return ""
    q = hits.quantile([0.1, 0.5, 0.9])
    return (f"; per session ({len(hits)}): p10 {q[0.1]:.2f}, median {q[0.5]:.2f}, p90 {q[0.9]:.2f}, "
            f"{(hits == 0).mean():.0%} never hit")


def section(runs: list, out: Out) -> None:
    turns = pd.concat([by_turn(a.records).assign(run_id=a.run_id, stack=a.manifest["stack"], routing=a.routing)
                       for a in runs], ignore_index=True)
    out.csv("H5_by_turn.csv", turns)
    out.doc.bullets([f"{a.run_id} ({a.manifest['stack']}, {a.routing}): prefix-cached share by turn " + " → ".join(
        f"{r.cached_share:.2f}" for r in by_turn(a.records).itertuples()) + _spread(session_hits(a.records))
        for a in runs])
    table_and_figure(runs, out, "reuse_ratio", "ttft_p99_s", "H5_workingset.csv",
                     "H5: p99 vs session reuse (KV working set)", "TTFT p99 (ms)", 1000)


register(Hypothesis(("H5",), "KV working set", "H5_workingset.csv", section, storage_claims=("H5",)))
