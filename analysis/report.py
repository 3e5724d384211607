"""Cross-run report: per-hypothesis CSVs named as the old harness did, figures, verdict.json and
report.md / report.html stating each hypothesis, its evidence, verdict and caveats."""
from __future__ import annotations

import collections
import json
import math
from pathlib import Path
from typing import Callable

import pandas as pd

from configs.paths import make_dir
from configs.vocabulary import stacks as V

from . import figures, rigs
from .correlate import linear_fit
from .document import Document
from .gates import MAX_ERROR_RATE
from .run import RunAnalysis, dumps, error_rate, knee_of, verdict_doc
from .steps import by_turn

COLS = ["run_id", "rig", "hypothesis", "stack", "label", "concurrency", "concurrency_observed", "context_tokens",
        "fio_profile", "requests", "error_rate", "throughput_rps", "ttft_p50_s", "ttft_p95_s", "ttft_p99_s",
        "e2e_p50_s", "e2e_p99_s", "ttft_p99_hist_s", "ttft_p99_hist_reason", "prefix_cached_share", "nvme_reads",
        "nvme_r_await", "nvme_util", "iowait", "kv_onboard_disk_bytes", "kv_onboard_share_disk", "kv_hit_disk"]


def _cols(frame: pd.DataFrame, extra: tuple = ()) -> pd.DataFrame:
    wanted = [c for c in COLS + list(extra) if c in frame.columns]
    return frame[wanted]


def _runs(analyses: list[RunAnalysis], *hyps: str) -> list[RunAnalysis]:
    return [a for a in analyses if a.manifest["hypothesis"] in hyps and not a.pooled.empty]


def _pooled(analyses: list[RunAnalysis]) -> pd.DataFrame:
    return pd.concat([a.pooled for a in analyses], ignore_index=True) if analyses else pd.DataFrame()


def _failed(a: RunAnalysis) -> str:
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


POOL_KEYS = ["hypothesis", "stack", "step", "phase", "label", "concurrency", "context_tokens", "arrival_rate_rps",
             "fio_profile"]


def _lines(analyses: list[RunAnalysis]) -> tuple[pd.DataFrame, dict]:
    """The steps of the runs as the figures draw them, one ``series`` per line, and each line's knee. Runs of
    one hypothesis and stack share a line only when their plans match (the median of their steps); a stack
    with runs of different plans gets a line per plan, named by its first run id, with its own knee."""
    groups: dict[tuple, list[RunAnalysis]] = {}
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


def bucket_ratio(buckets) -> float:
    """The widest step between neighbouring histogram bounds (0 left out): the worst-case factor of a
    quantile read from that histogram."""
    bounds = [b for b in buckets if b > 0]
    return max(b / a for a, b in zip(bounds, bounds[1:]))


def _ms(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * 1000:.1f} ms"


def build(analyses: list[RunAnalysis], out: Path, progress: Callable[[str], None]) -> dict[str, Path]:
    make_dir(out, exist_ok=True)                      # the harness's modes, whatever the umask
    figs = make_dir(out / "figures", exist_ok=True)
    written: dict[str, Path] = {}
    doc = Document()
    doc.h(1, "DGX Spark storage-aware inference: report")
    doc.p(f"{len(analyses)} run(s). Latency percentiles come from the per-request records (exact); "
          "the histogram-derived p99 from Prometheus is shown beside them (ttft_p99_hist_s; empty, with "
          "ttft_p99_hist_reason, where a step is shorter than its rule's rate window).")
    doc.table(pd.DataFrame([{"run": a.run_id, "rig": a.manifest.get("rig") or "-",
                             "hypothesis": a.manifest["hypothesis"], "stack": a.manifest["stack"],
                             "status": a.manifest["status"], "requests": len(a.records), "verdict": a.verdict}
                            for a in analyses]))

    summary = _pooled(analyses)
    if not summary.empty:
        written["summary_v3.csv"] = out / "summary_v3.csv"
        summary.to_csv(written["summary_v3.csv"], index=False)

    def csv(name: str, frame: pd.DataFrame) -> None:
        if not frame.empty:
            written[name] = out / name
            frame.to_csv(written[name], index=False)
            progress(f"  wrote {name}")

    # H0: U_work
    h0 = _runs(analyses, "H0")
    if h0:
        doc.h(2, "H0 — queue saturation defines U_work")
        doc.p(h0[0].manifest["plan"]["hypothesis"]["expected"])
        rows = []
        for a in h0:
            failed = _failed(a)
            level = a.knee_level if a.knee_level in ("concurrency", "arrival_rate_rps") else "concurrency"
            d = _cols(a.pooled.sort_values(level), ("arrival_rate_rps", "shed_by_client", "schedule_lag_p99_s")).copy()
            d["p99_over_p50"] = d["ttft_p99_s"] / d["ttft_p50_s"]
            d["u_work"] = a.knee.u_work if a.knee and not failed else None
            d["u_work_in"] = level                 # closed loop: users; open loop: requests per second
            d["knee_reason"] = a.knee.reason if a.knee else None
            d["throughput_saturation"] = a.saturation
            rows.append(d)
            unit = "requests/s offered" if level == "arrival_rate_rps" else "concurrency"
            grows = f"throughput stops growing at {unit} {a.saturation:g}" if a.saturation is not None else \
                "throughput grows across the tested range"
            said = f"no U_work: {failed}" if failed else a.knee.said if a.knee else "no steps to judge"
            doc.bullets([f"{a.run_id} ({a.manifest['stack']}): {said} ({unit}); {grows}"])
        csv("uwork.csv", pd.concat(rows, ignore_index=True))
        level = h0[0].knee_level if h0[0].knee_level in ("concurrency", "arrival_rate_rps") else "concurrency"
        lines, knees = _lines([a for a in h0 if not _failed(a)])
        p = figures.percentiles_vs(lines, level, figs / f"H0_percentiles_vs_{level}.png",
                                   f"H0: TTFT percentiles vs {level}", knees)
        if p:
            doc.figure(p, f"H0: TTFT p50/p95/p99 vs {level}, knee and U_work marked")

    # H2: context sweeps, A vs B
    h2 = _runs(analyses, "H2A", "H2B")
    if h2:
        doc.h(2, "H2A / H2B — context growth: UMA-only vs tiered KV")
        pooled = _pooled(h2)
        csv("H2_context.csv", _cols(pooled.sort_values(["hypothesis", "context_tokens"])))
        lines, _ = _lines(h2)
        for name, col, ylabel, scale, title in (
                ("H2_p99_vs_context.png", "ttft_p99_s", "TTFT p99 (ms)", 1000, "H2A vs H2B: TTFT p99 vs context"),
                ("H2_nvme_reads_vs_context.png", "nvme_reads", "kv_tier2 disk r/s", 1, "H2: NVMe r/s vs context"),
                ("H2B_tier2_share_vs_context.png", "kv_onboard_share_disk", "share of onboarded blocks from disk", 1,
                 "H2B: tier2 hit share vs context")):
            p = figures.compare(lines, "context_tokens", col, figs / name, title, ylabel, scale)
            if p:
                doc.figure(p, title)
        for a in h2:
            last = a.pooled.sort_values("context_tokens").iloc[-1]
            doc.bullets([f"{a.manifest['hypothesis']} {a.manifest['stack']}: at {int(last['context_tokens'])} tokens "
                         f"p99 {_ms(last['ttft_p99_s'])}, {a.disk_label} {last['nvme_reads']:.1f} r/s"
                         + (f", tier2 onboard {last['kv_onboard_disk_bytes'] / 2**20:.2f} MiB/s"
                            if a.kv_tier_observed and not math.isnan(last["kv_onboard_disk_bytes"]) else "")])

    # H4: QoS under fio
    h4 = _runs(analyses, "H4A", "H4B")
    if h4:
        doc.h(2, "H4A / H4B — NVMe QoS degradation under fio contention")
        pooled = _pooled(h4)
        slope, intercept, r2 = linear_fit(pooled["nvme_r_await"], pooled["ttft_p99_s"])
        d = _cols(pooled)
        d = d.assign(fit_slope_s_per_s=slope, fit_intercept_s=intercept, fit_r2=r2)
        csv("H4B_p99_vs_nvme.csv", d)
        p = figures.scatter_fit(pooled["nvme_r_await"] * 1000, pooled["ttft_p99_s"] * 1000,
                                pooled["hypothesis"] + " " + pooled["fio_profile"], figs / "H4_p99_vs_r_await.png",
                                "H4: TTFT p99 vs NVMe r_await by fio profile", "r_await (ms)", "TTFT p99 (ms)")
        if p:
            doc.figure(p, "H4: TTFT p99 vs kv_tier2 r_await, by fio profile")
        for a in h4:
            per = a.pooled.set_index("fio_profile")["ttft_p99_s"].to_dict()
            doc.bullets([f"{a.manifest['hypothesis']} {a.manifest['stack']}: p99 " +
                         ", ".join(f"{k} {_ms(v)}" for k, v in per.items())])

    for hyp, level, column, name, title, ylabel, scale in (
            ("H5", "reuse_ratio", "ttft_p99_s", "H5_workingset.csv", "H5: p99 vs session reuse (KV working set)",
             "TTFT p99 (ms)", 1000),
            ("H8", "concurrency", "iowait", "H8_iowait.csv", "H8: CPU iowait vs concurrency", "iowait share", 1)):
        runs = _runs(analyses, hyp)
        if not runs:
            continue
        doc.h(2, f"{hyp} — {runs[0].manifest['title']}")
        pooled = _pooled(runs)
        if level not in pooled:           # a swept workload parameter: read it back from the step label
            pooled[level] = pooled["label"].str.extract(rf"{level}=([0-9.]+)")[0].astype(float)
        csv(name, _cols(pooled, (level,)))
        if hyp == "H5":                   # the reuse it measured: cached share by turn, per run and routing
            turns = pd.concat([by_turn(a.records).assign(run_id=a.run_id, stack=a.manifest["stack"],
                                                         routing=a.routing) for a in runs], ignore_index=True)
            csv("H5_by_turn.csv", turns)
            doc.bullets([f"{a.run_id} ({a.manifest['stack']}, {a.routing}): prefix-cached share by turn " + " → ".join(
                f"{r.cached_share:.2f}" for r in by_turn(a.records).itertuples()) for a in runs])
        p = figures.compare(pooled, level, column, figs / name.replace(".csv", ".png"), title, ylabel, scale)
        if p:
            doc.figure(p, title)
        if hyp == "H8":
            p = figures.scatter_fit(pooled["iowait"], pooled["ttft_p99_s"] * 1000, pooled["stack"],
                                    figs / "H8_iowait_vs_p99.png", "H8: iowait vs p99, Stack A and B", "iowait share",
                                    "TTFT p99 (ms)")
            if p:
                doc.figure(p, "H8: iowait vs TTFT p99 for Stack A and B")

    h6 = _runs(analyses, "H6")
    if h6:
        doc.h(2, "H6 — tier capacity and eviction policy")
        csv("H6_tier_sizing.csv", _cols(_pooled(h6)))
    h7 = _runs(analyses, "H7")
    if h7:
        doc.h(2, "H7 — KV telemetry explains NVMe traffic")
        rows = []
        for a in h7:
            size = a.frames.get("kv_block_size")
            bs = float(size["value"].max()) if size is not None and not size.empty else float("nan")
            d = _cols(a.pooled, ("kv_onboard_disk_blocks", "nvme_read_bytes", "tier2_fetch_p95")).copy()
            d["predicted_read_bytes_per_s"] = d["kv_onboard_disk_blocks"] * bs
            d["observed_read_bytes_per_s"] = d["nvme_read_bytes"]
            rows.append(d)
        d = pd.concat(rows, ignore_index=True)
        csv("H7_predicted_vs_observed.csv", d)
        p = figures.scatter_fit(d["predicted_read_bytes_per_s"] / 2**20, d["observed_read_bytes_per_s"] / 2**20,
                                d["label"], figs / "H7_predicted_vs_observed.png",
                                "H7: predicted (onboard blocks x block size) vs observed NVMe reads",
                                "predicted MiB/s", "observed MiB/s")
        if p:
            doc.figure(p, "H7: predicted vs observed NVMe read MiB/s")
        p = figures.scatter_fit(d["tier2_fetch_p95"] * 1000, d["ttft_p99_s"] * 1000, d["label"],
                                figs / "H7_p99_vs_fetch.png", "H7: p99 vs tier2 fetch latency",
                                "tier2 fetch p95 (ms)", "TTFT p99 (ms)")
        if p:
            doc.figure(p, "H7: TTFT p99 vs tier2 fetch p95")
    h9 = _runs(analyses, "H9")
    if h9:
        doc.h(2, "H9 — session rehydration from the SSD tier")
        d = _pooled(h9)
        csv("H9_rehydrate.csv", _cols(d, ("phase",)))
        for a in h9:
            errors = next((g for g in a.gates if g.name == "errors"), None)
            doc.bullets([f"{a.manifest['stack']}: TTFT p50 " +
                         ", ".join(f"{r.label} {r.phase} {_ms(r.ttft_p50_s)}" for r in a.pooled.itertuples()) +
                         (f"; blocked: {a.manifest['blocked']['reason']}" if a.manifest.get("blocked") else "") +
                         (f"; errors: {errors.detail} ({errors.reason})" if errors else "")])

    rigs.section(analyses, doc, figs, csv)

    doc.h(2, "Quality gates")
    for a in analyses:
        doc.h(3, f"{a.run_id} — {a.verdict}")
        doc.table(pd.DataFrame([g.as_dict() for g in a.gates]))
        if not a.correlations.empty:
            doc.p("Correlation of per-window TTFT p99 with telemetry at the best lag (±3 windows), with a 95 % "
                  "block-bootstrap interval of r; no r below 20 windows, and lag_at_edge when the best lag is the "
                  "largest searched (the true one may lie beyond):")
            if not a.kv_tier_observed:
                doc.p(f"{a.run_id}: no KV tier observed on this stack, so the disk rows are the host's disk, "
                      "which anything else on the machine moves too: not evidence of a storage effect.")
            doc.table(a.correlations)
    doc.h(2, "Caveats")
    doc.bullets(["Percentiles from records are exact; the Prometheus histogram p99 (ttft_p99_hist_s) comes from "
                 "the load generator's own histograms, whose buckets are at most 20% apart.",
                 "The stacks' own TTFT histograms are coarser: Dynamo " + V.DYNAMO_RELEASE + "'s buckets are "
                 + ", ".join(f"{b:g}" for b in V.FE_TTFT_BUCKETS[1:9]) + " … s, up to "
                 f"{bucket_ratio(V.FE_TTFT_BUCKETS):.2f}x apart, so a p99 read from them can be off by that factor "
                 "(interpolated within a bucket); prefer the records or the load generator's histograms.",
                 "Gates marked `missing` name telemetry that was not there, not a measured failure.",
                 "Steps shorter than the recording rules' windows (5 s, 30 s) give step telemetry from few samples."])
    verdicts = {a.run_id: verdict_doc(a) for a in analyses}
    written["verdict.json"] = out / "verdict.json"
    written["verdict.json"].write_text(dumps(verdicts))
    written["report.md"] = out / "report.md"
    written["report.md"].write_text(doc.markdown(out))
    written["report.html"] = out / "report.html"
    written["report.html"].write_text(doc.html("DGX Spark storage-aware inference report"))
    return written
