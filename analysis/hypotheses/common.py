"""What the hypotheses' sections share: the step columns they table, runs pooled, and the lines the
figures draw (runs pooled only where their plans match)."""
from __future__ import annotations

import collections
import json
import math

import pandas as pd

from ..gates import MAX_ERROR_RATE
from ..knee import knee_of
from ..steps import error_rate

COLS = ["run_id", "rig", "hypothesis", "stack", "label", "concurrency", "concurrency_observed", "context_tokens",
        "fio_profile", "requests", "error_rate", "throughput_rps", "ttft_p50_s", "ttft_p95_s", "ttft_p99_s",
        "e2e_p50_s", "e2e_p99_s", "itl_p50_s", "itl_p99_s", "tpot_p50_s", "tpot_p99_s", "output_tokens_per_s",
        "output_tokens_per_s_per_user", "output_tokens_per_joule", "good_share", "goodput_rps", "ttft_p99_hist_s",
        "ttft_p99_hist_reason", "prefix_cached_share", "nvme_reads",
        "nvme_r_await", "nvme_util", "iowait", "kv_onboard_disk_bytes", "kv_onboard_share_disk", "kv_hit_disk"]
POOL_KEYS = ["hypothesis", "stack", "step", "phase", "label", "concurrency", "context_tokens", "arrival_rate_rps",
             "fio_profile"]


def cols(frame: pd.DataFrame, extra: tuple = ()) -> pd.DataFrame:
    return frame[[c for c in COLS + list(extra) if c in frame.columns]]


def pooled_of(runs: list) -> pd.DataFrame:
    return pd.concat([a.pooled for a in runs], ignore_index=True) if runs else pd.DataFrame()


def failed(a) -> str:
    """Why a run's knee cannot stand for the stack (most of its requests failed), or ""."""
    rate = error_rate(a.manifest, a.records)
    return f"{rate:.0%} of its requests failed" if rate > MAX_ERROR_RATE else ""


def plan_signature(manifest: dict) -> str:
    """What makes two runs of one hypothesis comparable step by step: the same steps (swept levels and every
    fixed parameter), model, profile and tier mode. Seeds and repetitions may differ."""
    plan = manifest.get("plan") or {}
    return json.dumps([[s.get("params"), s.get("swept")] for s in plan.get("steps", [])] +
                      [manifest.get(k) for k in ("model", "profile", "tier_mode", "step_duration_s")],
                      sort_keys=True, default=str)


def lines(analyses: list) -> tuple[pd.DataFrame, dict]:
    """The steps of the runs as the figures draw them, one ``series`` per line, and each line's knee. Runs of
    one hypothesis and stack share a line only when their plans match (the median of their steps); a stack
    with runs of different plans gets a line per plan, named by its first run id, with its own knee."""
    groups: dict[tuple, list] = {}
    for a in analyses:
        groups.setdefault((a.manifest["hypothesis"], a.manifest["stack"], plan_signature(a.manifest)), []).append(a)
    plans = collections.Counter((h, st) for h, st, _ in groups)
    frames, knees = [], {}
    for (hyp, stack, _), runs in groups.items():
        label = stack if plans[(hyp, stack)] == 1 else \
            f"{stack} {runs[0].run_id}" + (f" (+{len(runs) - 1} runs)" if len(runs) > 1 else "")
        if len(runs) == 1:
            d, knee = runs[0].pooled.copy(), runs[0].knee
        else:
            both = pd.concat([a.pooled for a in runs], ignore_index=True)
            d = both.groupby(POOL_KEYS, sort=False, dropna=False).median(numeric_only=True).reset_index()
            knee = knee_of(d, d, runs[0].knee_level)[0]
        frames.append(d.assign(series=label))
        knees[label] = knee
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), knees


def ms(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * 1000:.1f} ms"


def gate_of(a, name: str):
    return next((g for g in a.gates if g.name == name), None)
