"""Cross-run report: per-hypothesis CSVs named as the old harness did, figures, verdict.json and
report.md / report.html stating each hypothesis, its evidence, verdict and caveats."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import pandas as pd

from configs.paths import make_dir
from configs.vocabulary import stacks as V

from . import figures
from . import hypotheses as H
from . import rigs
from .document import Document
from .hypotheses.common import pooled_of
from .jsonout import dumps
from .run import RunAnalysis, verdict_doc


def bucket_ratio(buckets) -> float:
    """The widest step between neighbouring histogram bounds (0 left out): the worst-case factor of a
    quantile read from that histogram."""
    bounds = [b for b in buckets if b > 0]
    return max(b / a for a, b in zip(bounds, bounds[1:]))


def _findings(runs: list[RunAnalysis]) -> list[tuple[H.Hypothesis, str, list[RunAnalysis], H.Finding]]:
    """Every hypothesis id that ran, in the registry's order, with its runs and the finding it draws."""
    out = []
    for h in H.families():
        for hid in h.ids:
            mine = [a for a in runs if a.manifest["hypothesis"] == hid and not a.pooled.empty]
            if mine:
                out.append((h, hid, mine, h.finding(hid, mine)))
    return out


def failing(a: RunAnalysis) -> str:
    """A run's gates that did not pass, each with its reason: what the verdict rests on."""
    return "; ".join(f"{g.name} {g.status} {g.reason}" for g in a.gates
                     if g.status not in ("pass", "not_applicable")) or "none"


def answers(findings: list, capacities: list[dict], doc: Document) -> None:
    """The first screen: per hypothesis, its claim and expected outcome as the runs' configuration stated
    them, what was observed, the finding and why, each run's verdict with the gates it rests on, and the
    capacity searches run with it (their sentence: "stackB serves 8 users, below 16, at …")."""
    doc.h(2, "Answers")
    if not findings:
        doc.p("No run has steps to judge.")
        return
    rows = pd.DataFrame([{
        "hypothesis": hid, "claim": mine[0].manifest["title"],
        "expected": mine[0].manifest["plan"]["hypothesis"]["expected"],
        "finding": f.status, "observed, and why": f.why,
        "runs (verdict: gates not passed)": " · ".join(f"{a.run_id} ({a.manifest['stack']}) {a.verdict}: "
                                                       f"{failing(a)}" for a in mine),
        "capacity under the objective": " · ".join(c["said"] for c in capacities if c["hypothesis"] == hid) or "-"}
        for _h, hid, mine, f in findings])
    doc.table(rows if capacities else rows.drop(columns="capacity under the objective"))


def _section(h: H.Hypothesis, mine: list[tuple[str, list[RunAnalysis], H.Finding]], out: H.Out) -> None:
    """A hypothesis' heading, each of its ids' finding, then its own section."""
    ids = [hid for hid, _, _ in mine]
    runs = [a for _, r, _ in mine for a in r]
    out.doc.h(2, f"{ids[0]} — {runs[0].manifest['title']}" if len(ids) == 1 else f"{' / '.join(ids)} — {h.name}")
    out.doc.bullets([f"**{hid}**: {'' if len(ids) == 1 else r[0].manifest['title'] + '. '}"
                     f"**Finding: {f.status}** — {f.why}" for hid, r, f in mine])
    h.section(runs, out)


def _read(paths: list[Path], doc: Document) -> list[tuple[Path, object]]:
    """Each JSON file that exists, parsed; a damaged one is one line in the report, never the report's end."""
    out = []
    for path in paths:
        if not path.exists():
            continue
        try:
            out.append((path.parent, json.loads(path.read_text())))
        except (OSError, ValueError) as exc:
            doc.p(f"{path}: not read ({type(exc).__name__}: {exc})")
    return out


def pairs_section(experiments: list[Path], doc: Document) -> None:
    """Paired AB/BA experiments (`rig pairs`) found under the results: verdict, and per metric the mean
    delta, its interval and the tests' p-values, as each experiment's comparisons.json holds them."""
    found = _read([d / "verdict.json" for d in experiments], doc)
    if not found:
        return
    doc.h(2, "Paired experiments (rig pairs)")
    for d, verdict in found:
        grade = "decision-grade" if verdict.get("decision_grade") else "not decision-grade"
        doc.p(f"**{d.name}: {grade}** ({', '.join(verdict.get('reasons') or [])}); primary metric "
              f"{verdict.get('primary_metric') or 'none'}; deltas are the second mode minus the first within each "
              f"pair ({d / 'report.md'}).")
        rows = next((r for _, r in _read([d / "comparisons.json"], doc)), [])
        if rows:
            doc.table(pd.DataFrame([{
                "metric": c["metric"], "pairs": len(c["deltas"]), "mean delta": c["mean"],
                "95 % interval": f"[{sig(c['ci'][0])}, {sig(c['ci'][1])}]",
                "Wilcoxon p": c["wilcoxon_p"], "sign p": c["sign_p"],
                "reasons": ", ".join(c.get("reasons") or []) or "OK"} for c in rows]), "{:.3g}")


def distributions(analyses: list[RunAnalysis], doc: Document, figs: Path) -> None:
    """Throughput against per-user speed across every run's steps (a curve per stack and tier mode), and each
    run's TTFT and inter-chunk gap distributions by step."""
    doc.h(2, "Throughput and latency distributions")
    drawn = [a.pooled.assign(series=f"{a.manifest['hypothesis']} {a.manifest['stack']}"
                             + (f" {a.manifest['tier_mode']}" if a.manifest.get("tier_mode") else ""))
             for a in analyses if not a.pooled.empty]      # a run an outage touched throughout has no steps
    steps = pd.concat(drawn, ignore_index=True) if drawn else pd.DataFrame()
    p = figures.throughput_vs_user(steps, figs / "throughput_vs_user.png")
    if p:
        doc.figure(p, "Output tokens/s per user vs total output tokens/s per step, Pareto front ringed")
    for a in analyses:
        labels = {s["index"]: s["label"] for s in a.manifest["steps"]}
        p = figures.latency_cdfs(a.records, labels, figs / f"cdf_{a.run_id}.png", f"{a.run_id}: TTFT and ITL by step")
        if p:
            doc.figure(p, f"{a.run_id}: TTFT and inter-chunk gap CDFs by step")


def capacities(experiments: list[Path], doc: Document) -> list[dict]:
    """Capacity searches (`rig capacity`) found under the results, as each search's capacity.json holds them."""
    return [c | {"dir": d.name} for d, c in _read([d / "capacity.json" for d in experiments], doc)]


def capacity_section(found: list[dict], doc: Document) -> None:
    """Each search's largest load meeting the request objective, its interval and whether a repeat confirmed it."""
    if not found:
        return
    doc.h(2, "Capacity under the request objective (rig capacity)")
    doc.bullets([f"**{c['said']}** ({c['dir']})" for c in found])
    doc.table(pd.DataFrame([{
        "search": c["dir"], "hypothesis": c["hypothesis"], "stack": c["stack"], "tier mode": c.get("tier_mode") or "-",
        "context tokens": c["context_tokens"], "capacity": c["capacity"], "interval": f"[{c['interval'][0]}, "
        f"{c['interval'][1]})", "unit": c["unit"], "confirmed": c["confirmed"],
        "not judged at": (c.get("unjudged") or {}).get("load", "-"), "probes": len(c["probes"]),
        "bracketing runs": " · ".join(p["run_id"] for p in c["probes"] if p["load"] in c["interval"])}
        for c in found]))


def sig(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def correlations_appendix(analyses: list[RunAnalysis], doc: Document) -> None:
    shown = [a for a in analyses if not a.correlations.empty]
    if not shown:
        return
    doc.h(2, "Appendix: correlations")
    doc.p("Correlation of per-window TTFT p99 with telemetry at the best lag (±3 windows), with a 95 % "
          "block-bootstrap interval of r; no r below 20 windows, and lag_at_edge when the best lag is the largest "
          "searched (the true one may lie beyond). ✱ marks an interval that excludes zero.")
    for a in shown:
        doc.h(3, a.run_id)
        if not a.kv_tier_observed:
            doc.p(f"{a.run_id}: no KV tier observed on this stack, so the disk rows are the host's disk, "
                  "which anything else on the machine moves too: not evidence of a storage effect.")
        c = a.correlations.copy()
        low, high = c["pearson_ci_low"], c["pearson_ci_high"]
        c.insert(1, "excludes 0", ((low > 0) | (high < 0)).map(lambda x: "✱" if x else ""))
        doc.table(c, "{:.3g}")


def build(analyses: list[RunAnalysis], out: Path, progress: Callable[[str], None],
          experiments: tuple[Path, ...] = ()) -> dict[str, Path]:
    """The report of ``analyses`` (and of the ``experiments`` directories: paired repeats, capacity searches)
    in ``out``."""
    make_dir(out, exist_ok=True)                      # the harness's modes, whatever the umask
    figs = make_dir(out / "figures", exist_ok=True)
    written: dict[str, Path] = {}
    doc = Document()
    doc.h(1, "DGX Spark storage-aware inference: report")
    findings = _findings(analyses)
    searched = capacities(list(experiments), doc)
    answers(findings, searched, doc)
    capacity_section(searched, doc)
    pairs_section(list(experiments), doc)
    doc.h(2, "Runs")
    doc.p(f"{len(analyses)} run(s). Latency percentiles come from the per-request records (exact); "
          "the histogram-derived p99 from Prometheus is shown beside them (ttft_p99_hist_s; empty, with "
          "ttft_p99_hist_reason, where a step is shorter than its rule's rate window).")
    doc.table(pd.DataFrame([{"run": a.run_id, "rig": a.manifest.get("rig") or "-",
                             "hypothesis": a.manifest["hypothesis"], "stack": a.manifest["stack"],
                             "status": a.manifest["status"], "requests": len(a.records), "verdict": a.verdict,
                             "gates not passed": failing(a)}
                            for a in analyses]))

    summary = pooled_of(analyses)
    if not summary.empty:
        written["summary_v3.csv"] = out / "summary_v3.csv"
        summary.to_csv(written["summary_v3.csv"], index=False)

    def csv(name: str, frame: pd.DataFrame) -> None:
        if not frame.empty:
            written[name] = out / name
            frame.to_csv(written[name], index=False)
            progress(f"  wrote {name}")

    out_ = H.Out(doc, figs, csv)
    for h in H.families():
        mine = [(hid, runs, f) for fh, hid, runs, f in findings if fh is h]
        if mine:
            _section(h, mine, out_)

    rigs.section(analyses, doc, figs, csv)
    distributions(analyses, doc, figs)

    doc.h(2, "Quality gates")
    for a in analyses:
        doc.h(3, f"{a.run_id} — {a.verdict}")
        doc.table(pd.DataFrame([g.as_dict() for g in a.gates]))
    doc.h(2, "Caveats")
    doc.bullets(["Percentiles from records are exact; the Prometheus histogram p99 (ttft_p99_hist_s) comes from "
                 "the load generator's own histograms, whose buckets are at most 20% apart.",
                 "The stacks' own TTFT histograms are coarser: Dynamo " + V.DYNAMO_RELEASE + "'s buckets are "
                 + ", ".join(f"{b:g}" for b in V.FE_TTFT_BUCKETS[1:9]) + " … s, up to "
                 f"{bucket_ratio(V.FE_TTFT_BUCKETS):.2f}x apart, so a p99 read from them can be off by that factor "
                 "(interpolated within a bucket); prefer the records or the load generator's histograms.",
                 "Gates marked `missing` name telemetry that was not there, not a measured failure.",
                 "Steps shorter than the recording rules' windows (5 s, 30 s) give step telemetry from few samples."])
    correlations_appendix(analyses, doc)
    verdicts = {a.run_id: verdict_doc(a) for a in analyses}
    written["verdict.json"] = out / "verdict.json"
    written["verdict.json"].write_text(dumps(verdicts))
    written["report.md"] = out / "report.md"
    written["report.md"].write_text(doc.markdown(out))
    written["report.html"] = out / "report.html"
    written["report.html"].write_text(doc.html("DGX Spark storage-aware inference report"))
    return written
