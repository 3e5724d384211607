"""H9 — session rehydration from the SSD tier: TTFT by phase, and whether the frontend blocked it."""
from __future__ import annotations

from .common import cols, gate_of, ms, pooled_of
from .registry import Hypothesis, Out, register


def section(runs: list, out: Out) -> None:
    out.csv("H9_rehydrate.csv", cols(pooled_of(runs), ("phase",)))
    for a in runs:
        errors = gate_of(a, "errors")
        out.doc.bullets([f"{a.run_id} ({a.manifest['stack']}): TTFT p50 " +
                         ", ".join(f"{r.label} {r.phase} {ms(r.ttft_p50_s)}" for r in a.pooled.itertuples()) +
                         (f"; blocked: {a.manifest['blocked']['reason']}" if a.manifest.get("blocked") else "") +
                         (f"; errors: {errors.detail} ({errors.reason})" if errors else "")])


register(Hypothesis(("H9",), "session rehydration", "H9_rehydrate.csv", section, storage_claims=("H9",)))
