"""H2A / H2B — context growth on the UMA-only stack (no KV storage traffic) and the tiered one (tier2
fetches and a storage knee)."""
from __future__ import annotations

import math

from configs.vocabulary.rules import RATE_WINDOW_S

from .. import figures
from .. import gates as G
from ..telemetry import IDLE_S, single, window_mean
from .common import cols, gate_of, lines, ms, pooled_of
from .registry import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Finding, GateContext, Hypothesis, Out, register


def section(runs: list, out: Out) -> None:
    out.csv("H2_context.csv", cols(pooled_of(runs).sort_values(["hypothesis", "context_tokens"])))
    drawn, _ = lines(runs)
    for name, col, ylabel, scale, share, title in (
            ("H2_p99_vs_context.png", "ttft_p99_s", "TTFT p99 (ms)", 1000, False, "H2A vs H2B: TTFT p99 vs context"),
            ("H2_nvme_reads_vs_context.png", "nvme_reads", "kv_tier2 disk r/s", 1, False, "H2: NVMe r/s vs context"),
            ("H2B_tier2_share_vs_context.png", "kv_onboard_share_disk", "share of onboarded blocks from disk", 1, True,
             "H2B: tier2 hit share vs context")):
        p = figures.compare(drawn, "context_tokens", col, out.figs / name, title, ylabel, scale, share)
        if p:
            out.doc.figure(p, title)
    for a in runs:
        last = a.pooled.sort_values("context_tokens").iloc[-1]
        out.doc.bullets([f"{a.manifest['hypothesis']} {a.run_id} ({a.manifest['stack']}): at "
                         f"{int(last['context_tokens'])} tokens p99 {ms(last['ttft_p99_s'])}, {a.disk_label} "
                         f"{last['nvme_reads']:.1f} r/s"
                         + (f", tier2 onboard {last['kv_onboard_disk_bytes'] / 2**20:.2f} MiB/s"
                            if a.kv_tier_observed and not math.isnan(last["kv_onboard_disk_bytes"]) else "")])


def gates(ctx: GateContext) -> list:
    if ctx.manifest["hypothesis"] == "H2A":      # no KV read from storage by the stack's own process
        begin = ctx.start + RATE_WINDOW_S
        idle = window_mean(ctx.frames["nvme_reads"], ctx.start - IDLE_S, ctx.start)
        served = ctx.frames["serving_read_bytes"]
        seen = single(served).dropna().index.to_numpy(dtype=float)      # a process found late covers less
        return [G.nvme_flat(window_mean(served, begin, ctx.end), G.fresh_share(seen, begin, ctx.end),
                            window_mean(ctx.frames["nvme_reads"], begin, ctx.end), idle)]
    ordered = ctx.pooled.sort_values(ctx.key) if not ctx.pooled.empty else ctx.pooled
    at = None                                     # H2B: tier2's share of the onboarded blocks at the knee
    if ctx.knee is not None and ctx.knee.knee_index is not None:
        at = ordered.iloc[ctx.knee.knee_index]
    elif not ordered.empty:
        at = ordered.iloc[-1]                     # no knee: judge the heaviest step
    share = float(at["kv_onboard_share_disk"]) if at is not None else float("nan")
    onboarded = float(at["kv_onboard_blocks"]) if at is not None else float("nan")
    return [G.tier2_hits_at_knee(share, None if at is None else f"{at['label']}", onboarded,
                                 G.kv_up_share(ctx.frames, ctx.start, ctx.end))]


# the gates that decide each claim: every one passing supports it, one failing refutes it
DECIDING = {"H2A": ("h2a_nvme_flat",), "H2B": ("tier2_hits_at_knee", "ssd_mechanism")}


def finding(hid: str, runs: list) -> Finding:
    seen = [(a, g) for a in runs for name in DECIDING[hid] if (g := gate_of(a, name)) is not None]
    why = "; ".join(f"{a.manifest['stack']} {a.run_id}: {g.name} {g.status} ({g.reason}: {g.detail})"
                    for a, g in seen) or "none of its deciding gates ran"
    if seen and any(g.status == "fail" for _, g in seen):
        return Finding(NOT_SUPPORTED, why)
    if seen and all(g.status == "pass" for _, g in seen) and len(seen) == len(runs) * len(DECIDING[hid]):
        return Finding(SUPPORTED, why)
    return Finding(INCONCLUSIVE, why)


register(Hypothesis(("H2A", "H2B"), "context growth: UMA-only vs tiered KV", "H2_context.csv", section,
                    gates=gates, storage_claims=("H2B",), finding=finding))
