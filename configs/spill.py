"""Whether a run can reach the disk tier at all, told before it starts: a run whose KV working set fits in
the tiers above the disk measures queueing, never storage, and its H2B gates can only say there was no onboard
signal — minutes later. The working set of a fixed-context step is one prompt per user (or one for all
when they share it) plus its output, in whole KV blocks, against the profile's tiers in blocks (the
simulator sizes them so; a real KVBM divides DYN_KVBM_CPU_CACHE_GB by its own block size the same way).
KVBM writes through (device -> host -> disk), so the host tier holds copies of what the device holds: what
stays above the disk is the larger of tier0 and tier1, not their sum. TensorRT-LLM's native offload copies a
block down only when it is evicted (docs/source/features/kvcache.md), so there the tiers above the disk hold
their sum."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .errors import ConfigError
from .model import Harness
from .plan import REHYDRATE_SESSIONS_PER_USER, RunPlan, Step
from .sizes import format_size


@dataclass(frozen=True)
class StepFit:
    step: Step
    blocks: int                  # the step's KV working set
    capacity: int                # blocks above the disk: max(tier0, tier1) under KVBM, their sum under TRT-LLM

    @property
    def spills(self) -> bool:
        return self.blocks > self.capacity


def sequence_blocks(context_tokens: int, max_tokens: int, block_tokens: int) -> int:
    """One prompt with its output, in whole KV blocks."""
    return -(-(context_tokens + max_tokens) // block_tokens)


def working_set_blocks(step: Step) -> int:
    p = step.params
    per_user = sequence_blocks(p.context_tokens, p.max_tokens, step.profile.kv_block_size_tokens)
    return per_user * (p.concurrency if p.nonce_per_user else 1)


def control_context(cfg: Harness, concurrency: int) -> int:
    """The prefix of `rig pairs --control`: the largest whose replay list (REHYDRATE_SESSIONS_PER_USER per
    user, each prefix with its output, in sequence_blocks) fills at most half of tier0 in H9's profile: with
    no thrash it never leaves tier0, so no tier mode can change its latency."""
    h9 = cfg.hypotheses["H9"]
    p = cfg.profiles[h9.profile]
    per_prefix = (p.tier0_bytes // p.kv_block_size_bytes) // (2 * REHYDRATE_SESSIONS_PER_USER * concurrency)
    tokens = per_prefix * p.kv_block_size_tokens - h9.params.max_tokens
    if tokens < p.kv_block_size_tokens:
        raise ConfigError(f"--control: {REHYDRATE_SESSIONS_PER_USER * concurrency} prefixes of {concurrency} users "
                          f"cannot fit in half of profile {h9.profile}'s tier0 ({p.tier0_bytes // 2**20} MiB); "
                          "lower --concurrency")
    return tokens


def above_disk(plan: RunPlan, profile) -> tuple[int, str, str]:
    """Blocks the tiers above the disk hold for the stack's offload, and how that is reckoned."""
    t0, t1 = profile.tier0_bytes // profile.kv_block_size_bytes, profile.tier1_bytes // profile.kv_block_size_bytes
    if plan.stack.kv_offload == "trtllm":
        return t0 + t1, "the sum of tier0 and tier1", "TensorRT-LLM copies a block down on eviction"
    return max(t0, t1), "the larger of tier0 and tier1", "KVBM writes through"


def fits(plan: RunPlan) -> Optional[list[StepFit]]:
    """Each step's working set against its tiers; None where the question does not apply: a stack without
    a disk tier (Stack A, tier modes B0/B1) or a workload whose working set is not one prompt per user."""
    if plan.tier_mode != "B2" or plan.hypothesis.workload != "fixed_context":
        return None
    out = []
    for step in plan.steps:
        pr = step.profile
        out.append(StepFit(step, working_set_blocks(step), above_disk(plan, pr)[0]))
    return out


def prediction(plan: RunPlan) -> Optional[str]:
    """One line: which steps can spill to the disk tier, or that none can and what would make one."""
    steps = fits(plan)
    if not steps:
        return None
    spilling = [f for f in steps if f.spills]
    largest = max(steps, key=lambda f: f.blocks)
    p, pr = largest.step.params, largest.step.profile
    users = f"{p.concurrency} users x " if p.nonce_per_user else "one shared prompt of "
    _, against, why = above_disk(plan, pr)
    sizes = (f"{users}{p.context_tokens + p.max_tokens} tokens = {largest.blocks} KV blocks "
             f"({format_size(largest.blocks * pr.kv_block_size_bytes)}) against {against}, "
             f"{largest.capacity} blocks ({format_size(pr.tier0_bytes)}, {format_size(pr.tier1_bytes)}: {why}; "
             f"profile {plan.profile_name})")
    if not spilling:
        return (f"spill: no step can reach the disk tier: the largest working set, {sizes}, fits; this run "
                "measures queueing, not storage (raise CONCURRENCY or CONTEXT_TOKENS, or use a smaller profile)")
    return (f"spill: {len(spilling)} of {len(steps)} steps can reach the disk tier (the first: "
            f"{spilling[0].step.label()}; the largest: {sizes})")
