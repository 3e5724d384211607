"""H1 (LoRA cold vs warm) and H3 (OS UMA counters vs KV telemetry): their steps, tabled; no figure or
decision rule of their own yet."""
from __future__ import annotations

from .common import cols, pooled_of
from .registry import Hypothesis, Out, register

SHOWN = ["run_id", "stack", "label", "requests", "error_rate", "ttft_p50_s", "ttft_p99_s", "nvme_reads", "iowait"]


def section(runs: list, out: Out) -> None:
    d = cols(pooled_of(runs))
    out.doc.table(d[[c for c in SHOWN if c in d.columns]])


register(Hypothesis(("H1",), "LoRA cold vs warm", "summary_v3.csv", section))
register(Hypothesis(("H3",), "OS UMA counters vs KV telemetry", "summary_v3.csv", section, storage_claims=("H3",)))
