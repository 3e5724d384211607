"""H8 — CPU iowait flat while queue-bound (Stack A), tracking p95/p99 once NVMe is engaged (Stack B)."""
from __future__ import annotations

from .. import figures
from .registry import Hypothesis, Out, register
from .swept import table_and_figure


def section(runs: list, out: Out) -> None:
    pooled = table_and_figure(runs, out, "concurrency", "iowait", "H8_iowait.csv", "H8: CPU iowait vs concurrency",
                              "iowait", 1, share=True)
    p = figures.scatter_fit(pooled["iowait"] * 100, pooled["ttft_p99_s"] * 1000, pooled["stack"],
                            out.figs / "H8_iowait_vs_p99.png", "H8: iowait vs p99, Stack A and B", "iowait (%)",
                            "TTFT p99 (ms)", groups=pooled["stack"])
    if p:
        out.doc.figure(p, "H8: iowait vs TTFT p99 for Stack A and B")


register(Hypothesis(("H8",), "iowait", "H8_iowait.csv", section, storage_claims=("H8",)))
