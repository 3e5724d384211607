"""H5 — larger KV working sets worsen p95/p99: p99 against session reuse, and the reuse the server really
gave (its prefix-cached share by turn), per run and routing."""
from __future__ import annotations

import pandas as pd

from ..steps import by_turn
from .registry import Hypothesis, Out, register
from .swept import table_and_figure


def section(runs: list, out: Out) -> None:
    turns = pd.concat([by_turn(a.records).assign(run_id=a.run_id, stack=a.manifest["stack"], routing=a.routing)
                       for a in runs], ignore_index=True)
    out.csv("H5_by_turn.csv", turns)
    out.doc.bullets([f"{a.run_id} ({a.manifest['stack']}, {a.routing}): prefix-cached share by turn " + " → ".join(
        f"{r.cached_share:.2f}" for r in by_turn(a.records).itertuples()) for a in runs])
    table_and_figure(runs, out, "reuse_ratio", "ttft_p99_s", "H5_workingset.csv",
                     "H5: p99 vs session reuse (KV working set)", "TTFT p99 (ms)", 1000)


register(Hypothesis(("H5",), "KV working set", "H5_workingset.csv", section, storage_claims=("H5",)))
