"""Per-step latency and throughput from the run's own request records (exact percentiles)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from configs.runfiles import CANCELLED_BY_STEP, NOT_SERVER_OUTCOMES, SHED_BY_CLIENT, read_manifest, read_records
from configs.runfiles import tpot as per_request_tpot
from .knee import PLAN_RATIO


# the record fields the analysis uses; the rest (prompts' hashes, adapters, sessions' targets…) stay in the file
FIELDS = ("step", "ok", "status", "error_class", "error", "start_time", "ttft_s", "e2e_s", "prompt_tokens",
          "completion_tokens", "cached_tokens", "phase", "session_id", "schedule_lag_s", "users_active", "turn",
          "itl_s")


def load_run(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    manifest = read_manifest(run_dir / "manifest.json")
    for extra in sorted(run_dir.glob("outages-*.jsonl")):       # worker processes of a distributed run
        manifest["outages"] = manifest["outages"] + read_records(extra)
    path = run_dir / "requests.jsonl"
    if not path.exists():
        return manifest, pd.DataFrame(columns=FIELDS)
    return manifest, frame(read_records(path, FIELDS))


def frame(records) -> pd.DataFrame:
    """Records (dicts) as the analysis' columns; each request's inter-token gaps become one float32 array
    (a Python list of floats costs 4 to 8 times as much, and a long run holds millions of gaps)."""
    columns = {f: [] for f in FIELDS}
    for rec in records:
        for f in FIELDS:
            columns[f].append(rec.get(f))
    columns["itl_s"] = [np.asarray(v or (), dtype=np.float32) for v in columns["itl_s"]]
    return pd.DataFrame(columns)


def pct(values, q: float) -> float:
    values = np.asarray([v for v in values if v is not None and not pd.isna(v)], dtype=float)
    return float(np.percentile(values, q * 100)) if len(values) else float("nan")


def warmup_s(duration_s: float) -> float:
    """Requests sent this early in a step are left out of its percentiles: new users arrive together
    and their first, uncached prompts queue behind each other — a ramp artefact, not the steady state."""
    return min(WARMUP_S, WARMUP_SHARE * duration_s)


WARMUP_S, WARMUP_SHARE = 5.0, 0.2


def outages(manifest: dict) -> list[tuple[float, float]]:
    """Spans when the stack (429/5xx/404 for the model, refused connections) or the load generator (a lost
    worker) was out; one still open at the end lasts to the run's end."""
    last = manifest.get("end") or float("inf")
    return [(o["start"], o.get("end") or last)
            for o in (manifest.get("outages") or []) + (manifest.get("loadgen_outages") or [])]


def fio_label(step: dict) -> str:
    """The step's contention as it was: a fio job that failed or moved no bytes is not its profile's
    contention, so H4's table and figure must not pool it with the steps where fio ran."""
    profile = step.get("fio_profile") or "none"
    return f"{profile} (fio failed)" if step.get("fio_error") else profile


def step_table(manifest: dict, records: pd.DataFrame) -> pd.DataFrame:
    """One row per manifest step (slot): its window, swept parameters and exact steady-state latency."""
    rows = []
    spans = outages(manifest)
    for s in manifest["steps"]:
        end = s["end"] if s["end"] is not None else manifest.get("end") or s["start"]
        # the warm-up runs from when the load reached its target (runs before at_target was recorded: the
        # step's start); a step that never reached it has no steady state to measure
        reached = s.get("at_target", s["start"])
        measured_from = reached + warmup_s(end - reached) if reached is not None else end
        sent = mine = records[records["step"] == s["index"]] if not records.empty else records
        off_target = int((sent["start_time"] < (reached if reached is not None else end)).sum()) \
            if not sent.empty else 0
        if not mine.empty:
            mine = mine[mine["start_time"] >= measured_from]
        cut = mine["error_class"] == CANCELLED_BY_STEP if not mine.empty else pd.Series(dtype=bool)
        cancelled = int(cut.sum()) if len(cut) else 0
        shed_mask = mine["error_class"] == SHED_BY_CLIENT if not mine.empty else pd.Series(dtype=bool)
        shed = int(shed_mask.sum()) if len(shed_mask) else 0
        if cancelled or shed:             # cut or never sent by the client: neither latency nor a server error
            mine = mine[~(cut | shed_mask)]
        lags = mine["schedule_lag_s"].dropna() if not mine.empty else []
        ok = mine[mine["ok"]] if not mine.empty else mine
        duration = max(end - s["start"], 1e-9)
        measured = end - measured_from if reached is not None else float("nan")
        row = {
            "run_id": manifest["run_id"], "rig": manifest.get("rig") or "-", "hypothesis": manifest["hypothesis"],
            "stack": manifest["stack"], "slot": s["index"], "step": s["step"], "repetition": s["repetition"],
            "phase": s["phase"], "label": s["label"], "concurrency": s["target_concurrency"],
            "context_tokens": s["target_context_tokens"],
            "fio_profile": fio_label(s), "start": s["start"], "end": end, "duration_s": duration,
            "warmup_s": measured_from - s["start"] if reached is not None else duration,
            "at_target_after_s": reached - s["start"] if reached is not None else float("nan"),
            "off_target_requests": off_target,
            "requests": len(mine), "ok": len(ok), "errors": len(mine) - len(ok),
            "cancelled_by_step": cancelled, "shed_by_client": shed,
            "arrival_rate_rps": s.get("target_arrival_rate_rps") or 0.0,
            "schedule_lag_p50_s": pct(lags, 0.5), "schedule_lag_p99_s": pct(lags, 0.99),
            "error_rate": (len(mine) - len(ok)) / len(mine) if len(mine) else float("nan"),
            "throughput_rps": len(ok) / measured if measured > 0 else float("nan"),
            "concurrency_observed": in_flight(sent, measured_from, end),
            "outage_s": sum(max(0.0, min(b, end) - max(a, s["start"])) for a, b in spans),
            "output_tokens_per_s": float(ok["completion_tokens"].fillna(0).sum()) / measured
            if len(ok) and measured > 0 else 0.0 if measured > 0 else float("nan"),
        }
        for key, value in (s.get("swept") or {}).items():
            row[f"swept_{key}"] = value
        for metric in ("ttft_s", "e2e_s"):
            values = ok[metric] if len(ok) else []
            for q in (0.5, 0.95, 0.99):
                row[f"{metric[:-2]}_p{int(q * 100)}_s"] = pct(values, q)
        # every gap between two text chunks of the step's served requests
        gaps = np.concatenate([np.empty(0, np.float32), *ok["itl_s"]]) if len(ok) else np.empty(0)
        for q, value in zip((50, 95, 99), np.percentile(gaps, (50, 95, 99)) if len(gaps) else [np.nan] * 3):
            row[f"itl_p{q}_s"] = float(value)
        row["ttft_tail_requests"] = int((ok["ttft_s"] > PLAN_RATIO * row["ttft_p50_s"]).sum()) if len(ok) else 0
        row["prompt_tokens_mean"] = float(ok["prompt_tokens"].mean()) if len(ok) else float("nan")
        # the engine's prefix-cache hits as the server reports them per request (usage.cached_tokens)
        cached = ok["cached_tokens"].dropna() if len(ok) else ok
        prompt = ok.loc[cached.index, "prompt_tokens"].fillna(0).sum() if len(cached) else 0
        row["prefix_cached_share"] = float(cached.sum()) / prompt if prompt else float("nan")
        row.update(per_token(ok))
        # open loop: TTFT from when the schedule wanted the request sent (coordinated omission shows here);
        # the knee and the gates read TTFT from the actual send
        late = ok["ttft_s"].astype(float) + ok["schedule_lag_s"].astype(float) if len(ok) else []
        for q in (0.5, 0.99):
            row[f"ttft_from_intended_p{int(q * 100)}_s"] = pct(late, q)
        row.update(goodput(ok, len(mine), measured, (manifest.get("plan") or {}).get("slo")))
        rows.append(row)
    return pd.DataFrame(rows)


def per_token(ok: pd.DataFrame) -> dict:
    """Per-token figures of served requests, as vLLM's benchmark and aiperf define them: TPOT = (E2E − TTFT) /
    (output tokens − 1) per request with two tokens or more (aiperf calls it ITL; ours, the gaps between
    chunks, is its ICL); output tokens/s per user = 1 / TPOT; prefill tokens/s per user = prompt tokens /
    TTFT, and over the uncached part alone where the server reports cached_tokens."""
    nan = float("nan")
    if ok.empty:
        return {"tpot_p50_s": nan, "tpot_p95_s": nan, "tpot_p99_s": nan, "output_tokens_per_s_per_user": nan,
                "prefill_tokens_per_s_per_user": nan, "uncached_prefill_tokens_per_s_per_user": nan}
    tpot = _tpot(ok).dropna()
    out = {f"tpot_p{q}_s": pct(tpot, q / 100) for q in (50, 95, 99)}
    out["output_tokens_per_s_per_user"] = float((1 / tpot).median()) if len(tpot) else nan
    prompt, ttft = ok["prompt_tokens"].astype(float), ok["ttft_s"].astype(float)
    timed = ttft > 0
    out["prefill_tokens_per_s_per_user"] = float((prompt / ttft)[timed].median()) if timed.any() else nan
    known = timed & ok["cached_tokens"].notna()
    uncached = (prompt - ok["cached_tokens"].astype(float)) / ttft
    out["uncached_prefill_tokens_per_s_per_user"] = float(uncached[known].median()) if known.any() else nan
    return out


def _tpot(ok: pd.DataFrame) -> pd.Series:
    """Each served request's TPOT; nan where it has none (fewer than two output tokens)."""
    e2e, ttft = ok["e2e_s"].astype(float), ok["ttft_s"].astype(float)
    tokens = ok["completion_tokens"].astype(float)
    return per_request_tpot(e2e, ttft, tokens).where((tokens > 1) & (e2e > ttft))


def goodput(ok: pd.DataFrame, served: int, measured: float, slo: Optional[dict]) -> dict:
    """The step against the run's request objective (configs.model.Slo, as the manifest recorded it): the share
    of its served requests that were good — served within every bound given (TPOT only where a request had
    two output tokens) — good requests per second, and whether the share reached the objective's percentile.
    A run from before objectives were recorded has none: nan."""
    nan = float("nan")
    if not slo or not served:
        return {"good_share": nan, "goodput_rps": nan, "meets_slo": nan}
    good = pd.Series(True, index=ok.index)
    for column, bound in (("ttft_s", slo.get("ttft_s")), ("e2e_s", slo.get("e2e_s"))):
        if bound is not None:
            good &= ok[column].astype(float) <= bound
    if slo.get("tpot_s") is not None:
        per = _tpot(ok)
        good &= per.isna() | (per <= slo["tpot_s"])
    share = float(good.sum()) / served
    return {"good_share": share, "goodput_rps": float(good.sum()) / measured if measured > 0 else nan,
            "meets_slo": share * 100 >= (slo.get("percentile") or 100.0)}


def in_flight(records: pd.DataFrame, start: float, end: float) -> float:
    """The mean number of requests in flight over [start, end] (Little's law: their time inside the window
    over its length). A closed loop with no think time keeps it at its user count; a load generator that
    lost users (a worker killed) or could not keep up shows below it."""
    if records.empty or end <= start:
        return float("nan")
    began = records["start_time"].astype(float)
    ended = began + records["e2e_s"].astype(float).fillna(0.0)
    return float((np.minimum(ended, end) - np.maximum(began, start)).clip(lower=0).sum() / (end - start))


def by_turn(records: pd.DataFrame) -> pd.DataFrame:
    """Sessioned chat by turn index: how much of each turn's prompt the server served from its prefix cache
    (cached over prompt tokens, where it reports cached_tokens) and its TTFT: the reuse a session gets as
    its history grows."""
    ok = _sessioned(records)
    if ok.empty:
        return pd.DataFrame(columns=["turn", "requests", "cached_share", "prefix_hit_share", "ttft_p50_s",
                                     "ttft_p99_s"])
    rows = []
    for turn, d in ok.groupby(ok["turn"].astype(int)):
        known = d[d["cached_tokens"].notna()]
        prompt = known["prompt_tokens"].fillna(0).sum()
        rows.append({"turn": turn, "requests": len(d),
                     "cached_share": float(known["cached_tokens"].sum()) / prompt if prompt else float("nan"),
                     # the share of the turn's requests the cache served any of (unknown counts left out)
                     "prefix_hit_share": float((known["cached_tokens"] > 0).mean()) if len(known) else float("nan"),
                     "ttft_p50_s": pct(d["ttft_s"], 0.5), "ttft_p99_s": pct(d["ttft_s"], 0.99)})
    return pd.DataFrame(rows)


def _sessioned(records: pd.DataFrame) -> pd.DataFrame:
    return records[records["ok"] & records["turn"].notna()] if not records.empty and "turn" in records else records


def session_hits(records: pd.DataFrame) -> pd.Series:
    """Each session's cached share of its prompts (where the server reports cached_tokens), by session id:
    how the reuse spreads over sessions, which a mean by turn hides (some sessions always hit, some never)."""
    ok = _sessioned(records)
    ok = ok[ok["cached_tokens"].notna() & ok["session_id"].notna()] if not ok.empty else ok
    if ok.empty:
        return pd.Series(dtype=float)
    sums = ok.groupby("session_id")[["cached_tokens", "prompt_tokens"]].sum()
    sums = sums[sums["prompt_tokens"] > 0]
    return (sums["cached_tokens"] / sums["prompt_tokens"]).astype(float)


def by_step(table: pd.DataFrame) -> pd.DataFrame:
    """Repetitions of the same step pooled: median of their percentiles, and their spread."""
    if table.empty:
        return table
    keys = ["run_id", "rig", "hypothesis", "stack", "step", "phase", "label", "concurrency", "context_tokens",
            "arrival_rate_rps", "fio_profile"]
    g = table.groupby(keys, sort=False, dropna=False)
    out = g.agg(ttft_p50_s=("ttft_p50_s", "median"), ttft_p95_s=("ttft_p95_s", "median"),
                ttft_p99_s=("ttft_p99_s", "median"), ttft_tail_requests=("ttft_tail_requests", "sum"),
                e2e_p50_s=("e2e_p50_s", "median"), itl_p50_s=("itl_p50_s", "median"), itl_p99_s=("itl_p99_s", "median"),
                tpot_p50_s=("tpot_p50_s", "median"), tpot_p99_s=("tpot_p99_s", "median"),
                good_share=("good_share", "median"), goodput_rps=("goodput_rps", "median"),
                output_tokens_per_s_per_user=("output_tokens_per_s_per_user", "median"),
                e2e_p95_s=("e2e_p95_s", "median"), e2e_p99_s=("e2e_p99_s", "median"),
                throughput_rps=("throughput_rps", "median"), output_tokens_per_s=("output_tokens_per_s", "median"),
                requests=("requests", "sum"),
                concurrency_observed=("concurrency_observed", "median"),
                prefix_cached_share=("prefix_cached_share", "mean"), cancelled_by_step=("cancelled_by_step", "sum"),
                shed_by_client=("shed_by_client", "sum"), schedule_lag_p99_s=("schedule_lag_p99_s", "max"),
                error_rate=("error_rate", "mean"), repetitions=("repetition", "nunique"),
                ttft_p99_mean=("ttft_p99_s", "mean"), ttft_p99_std=("ttft_p99_s", "std"),
                ttft_p99_min=("ttft_p99_s", "min"), ttft_p99_max=("ttft_p99_s", "max")).reset_index()
    out["ttft_p99_cov"] = out["ttft_p99_std"] / out["ttft_p99_mean"]
    return out


def blocking_refusals(manifest: dict, records: pd.DataFrame) -> pd.Series:
    """Records refused for the reason the run is blocked (the frontend's 400 for session_id): the blocked
    gate reports them; every other failure still counts as an error."""
    blocked = (manifest.get("blocked") or {}).get("reason")
    if not blocked or records.empty or "error" not in records:
        return pd.Series(False, index=records.index)
    return (records["status"] == 400) & records["error"].fillna("").map(lambda e: bool(e) and e in blocked)


def server_outcomes(manifest: dict, records: pd.DataFrame) -> pd.Series:
    """The requests whose outcome is the server's: neither the refusals a block explains nor the streams
    the client cut at a step boundary or never sent."""
    if records.empty:
        return pd.Series(False, index=records.index)
    return ~blocking_refusals(manifest, records) & ~records["error_class"].isin(NOT_SERVER_OUTCOMES)


def error_rate(manifest: dict, records: pd.DataFrame) -> float:
    """Share of the requests the server failed (of those whose outcome is the server's)."""
    counted = records[server_outcomes(manifest, records)]
    return float((~counted["ok"].astype(bool)).mean()) if not counted.empty else float("nan")
