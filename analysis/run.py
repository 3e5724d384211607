"""One run: records + telemetry -> per-step table, knee, correlations and gates."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

from configs.vocabulary.rules import LATENCY_WINDOW_S, RATE_WINDOW_S

from . import gates as G
from .jsonout import dumps
from . import hypotheses as H
from .correlate import MIN_WINDOWS, Correlation, best_lag, on_grid, window_p99
from .knee import Knee, knee_of
from .promdata import Source
from .steps import by_step, error_rate, load_run, step_table
from .telemetry import IDLE_S, QUERIES, pull, single, total, window_mean

CORRELATION_WINDOW_S = 2.0
STEP_TELEMETRY = ("nvme_reads", "nvme_read_bytes", "nvme_r_await", "nvme_util", "iowait", "psi_io",
                  "kv_onboard_disk_bytes", "kv_onboard_disk_blocks", "kv_onboard_blocks", "kv_offload_disk_bytes",
                  "kv_hit_disk",
                  "kv_hit_host", "kv_onboard_share_disk", "tier2_fetch_p95", "gpu_watts")
CORRELATE_WITH = ("nvme_r_await", "nvme_reads", "nvme_util", "kv_onboard_disk_bytes", "kv_onboarding", "iowait",
                  "psi_io")


@dataclass
class RunAnalysis:
    run_dir: Path
    manifest: dict
    records: pd.DataFrame
    table: pd.DataFrame                  # one row per slot, with step telemetry
    pooled: pd.DataFrame                 # repetitions pooled per step
    knee: Optional[Knee]
    knee_level: str                      # what the knee's levels are ("concurrency", "context_tokens", …)
    saturation: Optional[float]
    correlations: pd.DataFrame
    gates: list
    tiered: bool = False
    evidence: dict = field(default_factory=dict)
    frames: dict = field(repr=False, default_factory=dict)
    kv_tier_observed: bool = False       # a KV tier's own telemetry answered: disk figures speak of it

    @property
    def disk_label(self) -> str:
        """What the disk figures are about: with no KV tier observed, the disk labelled kv_tier2 is just the
        host's disk, which any other reader (a pip install, the journal) moves too."""
        return "kv_tier2 disk" if self.kv_tier_observed else "host disk, no KV tier observed"

    @property
    def run_id(self) -> str:
        return self.manifest["run_id"]

    @property
    def routing(self) -> str:
        """How the stack spread the run over its workers, as its configuration said (the manifest records
        it): reuse through a prefix cache depends on whether a session's turns meet the same worker."""
        stack = ((self.manifest.get("config") or {}).get("stacks") or {}).get(self.manifest["stack"]) or {}
        w = stack.get("worker_metrics_url")
        workers = len(w) if isinstance(w, list) else 1 if w else None
        return f"router {stack.get('router_mode') or 'not said'}, " + \
            (f"{workers} worker{'s' * (workers != 1)}" if workers else "workers not said")

    @property
    def verdict(self) -> str:
        return G.verdict(self.gates)


# a run's start precedes its first request by its readiness wait, and its end follows its last by the
# closing of the last step: never by more than this
WINDOW_SLACK_S = 3600.0


def window(manifest: dict, records: pd.DataFrame) -> tuple[float, float]:
    """The run's telemetry window: from its start to its end (a killed run: its last record), bounded by its
    records. A manifest whose start or end lies hours from every record (``start: 1.0``) would ask
    Prometheus for decades of points: one line instead."""
    start = manifest["start"]
    end = manifest.get("end")
    if not records.empty:
        first = float(records["start_time"].min())
        last = float((records["start_time"] + records["e2e_s"].fillna(0)).max())
        if first - start > WINDOW_SLACK_S or (end is not None and end - last > WINDOW_SLACK_S) or \
                (end is not None and end < first):
            raise ValueError(f"manifest window {start:.0f}..{end} does not hold its records "
                             f"({first:.0f}..{last:.0f}): the manifest is damaged")
        end = last if end is None else end
    return start, max(end if end is not None else start, start + 1)


def level_key(manifest: dict) -> str:
    """What the run's steps vary: the keys the steps were swept over (the environment's RATE_RPS or
    CONCURRENCY included), else the hypothesis' own sweep."""
    swept = set().union(*(s.get("swept") or {} for s in manifest["steps"])) or manifest["plan"]["hypothesis"]["sweep"]
    for key in ("arrival_rate_rps", "concurrency", "context_tokens", "reuse_ratio", "tier1_bytes",
                "telemetry_cadence_ms", "fio_profile", "cache_state"):
        if key in swept:
            return key
    return "step"


def add_step_telemetry(table: pd.DataFrame, frames: dict) -> pd.DataFrame:
    """Each step's telemetry over its measured window (from its warm-up's end, and at least the rate
    windows' RATE_WINDOW_S in). The histogram p99 only where the step outlasts its rule's window; elsewhere it
    is left empty with the reason (on 20 s steps it read 0.74 s against an exact 0.118 s)."""
    out = table.copy()
    for name in STEP_TELEMETRY:
        out[name] = [window_mean(frames[name], r.start + max(r.warmup_s, min(RATE_WINDOW_S, r.duration_s / 2)), r.end)
                     for r in out.itertuples()]
    hist = frames.get("ttft_p99_hist")
    values, reasons = [], []
    for r in out.itertuples():
        begin = r.start + max(r.warmup_s, LATENCY_WINDOW_S)
        reason = "" if begin < r.end else \
            f"step of {r.duration_s:.0f} s within the histogram rule's {LATENCY_WINDOW_S} s window"
        if reason or hist is None or hist.empty:
            values.append(float("nan"))
            reasons.append(reason or "no histogram series")
            continue
        mine = hist[hist["step"].astype(str) == str(r.slot)] if "step" in hist else hist.iloc[0:0]
        values.append(window_mean(mine, begin, r.end))
        reasons.append("")
    out["ttft_p99_hist_s"] = values
    out["ttft_p99_hist_reason"] = reasons
    out["ttft_p99_hist_minus_exact_s"] = out["ttft_p99_hist_s"] - out["ttft_p99_s"]
    return out


CORRELATION_COLUMNS = ["telemetry", "pearson", "pearson_ci_low", "pearson_ci_high", "spearman", "lag_s",
                       "lag_at_edge", "samples", "note"]


STORAGE_SERIES = ("nvme_r_await", "nvme_reads", "nvme_util", "kv_onboard_disk_bytes")
NOT_EVIDENCE = "host disk, no KV tier observed: not evidence of a storage effect"


def correlations(records: pd.DataFrame, frames: dict, start: float, end: float,
                 kv_tier_observed: bool = True) -> pd.DataFrame:
    """Per telemetry series: r with its interval at the best lag. Below MIN_WINDOWS paired windows no r is
    given (note ``too_few_windows``); a best lag at the search edge is flagged (``lag_at_edge``). Without a
    KV tier observed, the storage series' rows say they are no evidence (note ``NOT_EVIDENCE``)."""
    ok = records[records["ok"]] if not records.empty else records
    if ok.empty:
        return pd.DataFrame(columns=CORRELATION_COLUMNS)
    lat = window_p99(ok["start_time"].to_numpy(), ok["ttft_s"].to_numpy(), start, end, CORRELATION_WINDOW_S)
    rows = []
    for name in CORRELATE_WITH:
        s = single(frames[name])
        if s.empty:
            rows.append({"telemetry": name, "pearson": np.nan, "pearson_ci_low": np.nan, "pearson_ci_high": np.nan,
                         "spearman": np.nan, "lag_s": np.nan, "lag_at_edge": False, "samples": 0,
                         "note": "no telemetry"})
            continue
        grid = on_grid(s, start, end)
        per_window = grid.groupby(((grid.index - start) // CORRELATION_WINDOW_S) * CORRELATION_WINDOW_S + start).mean()
        c: Correlation = best_lag(lat, per_window.reindex(lat.index), max_lag=3, step_s=CORRELATION_WINDOW_S)
        enough = c.samples >= MIN_WINDOWS
        rows.append({"telemetry": name, "pearson": c.pearson if enough else np.nan, "pearson_ci_low": c.ci[0],
                     "pearson_ci_high": c.ci[1], "spearman": c.spearman if enough else np.nan,
                     "lag_s": c.lag_s if enough else np.nan, "lag_at_edge": enough and c.at_edge,
                     "samples": c.samples, "note": "; ".join(n for n in (
                         "" if enough else f"too_few_windows (< {MIN_WINDOWS})",
                         "" if kv_tier_observed or name not in STORAGE_SERIES else NOT_EVIDENCE) if n)})
    return pd.DataFrame(rows, columns=CORRELATION_COLUMNS)


def per_joule(steps: pd.DataFrame) -> pd.DataFrame:
    """Output tokens per joule of GPU energy per step: nan where NVML gives no energy counter (GB10 may not)
    or the GPUs drew nothing measurable, never a 0 or an infinity."""
    if steps.empty:
        return steps
    watts = steps["gpu_watts"].where(steps["gpu_watts"] > 0)
    return steps.assign(output_tokens_per_joule=steps["output_tokens_per_s"] / watts)


def analyse(run_dir: Path, source: Source, step_s: float, tiered: bool,
            progress: Callable[[str], None] = lambda _m: None) -> RunAnalysis:
    manifest, records = load_run(run_dir)
    progress(f"{manifest['run_id']}: {len(records)} requests, {len(manifest['steps'])} steps, status "
             f"{manifest['status']}")
    start, end = window(manifest, records)
    frames = pull(source, manifest, start - IDLE_S, end, step_s, progress)
    table = add_step_telemetry(step_table(manifest, records), frames) if manifest["steps"] else pd.DataFrame()
    touched = table["outage_s"] > 0 if not table.empty else pd.Series(dtype=bool)
    pooled = by_step(table[~touched] if not table.empty else table)   # an outage's steps are no steady state
    if not pooled.empty:
        by = table.groupby("step")
        means = by[list(STEP_TELEMETRY) + ["ttft_p99_hist_s"]].mean().join(by["ttft_p99_hist_reason"].first())
        pooled = pooled.merge(means, left_on="step", right_index=True, how="left")
    table, pooled = per_joule(table), per_joule(pooled)
    key = level_key(manifest)
    knee, sat = knee_of(table, pooled, key)
    observed = tiered and G.kv_up_share(frames, start, end) >= G.KVBM_UP_MIN     # nan (never said): False
    corr = correlations(records, frames, start, end, observed) if not records.empty else pd.DataFrame()
    gate_list = gates_for(manifest, records, pooled, frames, start, end, tiered, knee, key)
    return RunAnalysis(run_dir, manifest, records, table, pooled, knee, key, sat, corr, gate_list, tiered,
                       evidence(frames, start, end, tiered), frames, observed)


def evidence(frames: dict, start: float, end: float, tiered: bool) -> dict:
    """The storage mechanism in numbers: KV bytes through the disk tier, and the kv_tier2 disk's reads.
    A stack without a KV disk tier moved 0 bytes through one by construction (said as such)."""
    out = {"kv_tier2_disk_reads_per_s": window_mean(frames["nvme_reads"], start + RATE_WINDOW_S, end)}
    if tiered:
        out.update(tier2_read_bytes=total(frames, "kv_onboard_disk_bytes", start, end),
                   tier2_written_bytes=total(frames, "kv_offload_disk_bytes", start, end),
                   tier2_file_read_bytes=total(frames, "tier2_file_read_bytes", start, end),
                   serving_process_read_bytes=total(frames, "serving_read_bytes", start, end))
    else:
        out.update(tier2_read_bytes=0.0, tier2_written_bytes=0.0, note="no KV disk tier on this stack")
    return out


def was_tiered(manifest: dict, tiered_now: set) -> bool:
    """Whether the run's stack had KV tiers as the run recorded it (``kv_offload``, None for a stack without
    tiers), not as this configuration says: a fleet's run from another rig, or one analysed after the overlay
    changed, would otherwise be judged without its disk-tier gates and read 0 bytes from a disk it had. Runs
    from before the field: the configuration's word."""
    return manifest["kv_offload"] is not None if "kv_offload" in manifest else manifest["stack"] in tiered_now


def gates_for(manifest, records, pooled, frames, start, end, tiered, knee, key) -> list:
    rate = error_rate(manifest, records)
    out = G.run_state(manifest, rate)
    # alignment is judged while load runs: from the first step, not from the readiness wait before it
    first = manifest["steps"][0]["start"] if manifest["steps"] else start
    out.append(G.alignment(frames, first, end, tiered))
    out += G.repetitions(pooled)
    if (gate := G.goodput(pooled, (manifest.get("plan") or {}).get("slo"))) is not None:
        out.append(gate)
    hyp = manifest["hypothesis"]
    h = H.lookup(hyp)
    if h is not None:
        out += h.gates(H.GateContext(manifest, records, pooled, frames, start, end, tiered, knee, key))
    if tiered and manifest.get("tier_mode") == "B1":
        out.append(G.b1_disk_off(total(frames, "kv_onboard_disk_bytes", start, end),
                                 total(frames, "tier2_file_read_bytes", start, end), G.kv_up_share(frames, start, end)))
    if tiered and H.claims_storage(hyp) and manifest.get("tier_mode") in (None, "B2"):   # B0/B1: no disk tier
        out.append(G.mechanism(total(frames, "kv_offload_disk_bytes", start, end),
                               total(frames, "kv_onboard_disk_bytes", start, end),
                               disk_reads(manifest, frames, start, end), G.kv_up_share(frames, start, end),
                               filter_on=manifest.get("disk_offload_filter") is True))
    return out


def disk_reads(manifest: dict, frames: dict, start: float, end: float) -> G.DiskReads:
    """The bytes really read over the run that could back a KV-from-disk claim (gates.DiskReads)."""
    fio = sorted({s["fio_profile"] for s in manifest["steps"] if s.get("fio_profile") not in (None, "none")})
    return G.DiskReads(process=total(frames, "serving_read_bytes", start, end),
                       file=total(frames, "tier2_file_read_bytes", start, end),
                       device=total(frames, "nvme_read_bytes", start, end),
                       other_readers=f"fio ({', '.join(fio)}) read the same disk in this run" if fio else "")


def write(analysis: RunAnalysis, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {"steps": out / "steps.csv", "summary": out / "summary.csv", "correlations": out / "correlations.csv",
             "verdict": out / "verdict.json", "summary_json": out / "summary.json"}
    analysis.table.to_csv(files["steps"], index=False)
    analysis.pooled.to_csv(files["summary"], index=False)
    analysis.correlations.to_csv(files["correlations"], index=False)
    files["verdict"].write_text(dumps(verdict_doc(analysis)))
    files["summary_json"].write_text(dumps(summary_doc(analysis)))
    return files


def summary_doc(a: RunAnalysis) -> dict:
    """One run for scripts, as aiperf's profile export is: what ran, each step's metrics (repetitions
    pooled), the knee, the gates, the verdict and the hypothesis' finding on this run alone."""
    h = H.lookup(a.manifest["hypothesis"])
    f = h.finding(a.manifest["hypothesis"], [a]) if h is not None and not a.pooled.empty else None
    return {**verdict_doc(a), "status": a.manifest["status"], "title": a.manifest.get("title"),
            "expected": a.manifest["plan"]["hypothesis"]["expected"], "requests": len(a.records),
            "finding": {"status": f.status, "why": f.why} if f else None,
            "steps": a.pooled.to_dict(orient="records")}


def verdict_doc(a: RunAnalysis) -> dict:
    knee = None
    if a.knee is not None:
        knee = {"rule": a.knee.rule, "level": a.knee_level,
                "knee_index": a.knee.knee_index, "u_work": a.knee.u_work, "reason": a.knee.reason,
                "throughput_saturation": a.saturation}
    return {"run_id": a.run_id, "rig": a.manifest.get("rig"), "hypothesis": a.manifest["hypothesis"],
            "stack": a.manifest["stack"], "verdict": a.verdict, "knee": knee, "evidence": a.evidence,
            "gates": [g.as_dict() for g in a.gates], "telemetry_missing": telemetry_missing(a)}


def telemetry_missing(a: RunAnalysis) -> list[str]:
    """Every series a gate needed and lacked, and every series this kind of run needs that held nothing."""
    needed = ("all", "tiered") if a.tiered else ("all",)
    empty = {n for n, (_, need) in QUERIES.items()
             if need in needed and a.frames.get(n) is not None and a.frames[n].empty}
    return sorted(empty.union(*(g.missing for g in a.gates)))
