"""Cross-run report: per-hypothesis CSVs named as the old harness did, figures, verdict.json and
report.md / report.html stating each hypothesis, its evidence, verdict and caveats."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from configs.paths import make_dir
from configs.vocabulary import stacks as V

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


def _section(h: H.Hypothesis, runs: list[RunAnalysis], out: H.Out) -> None:
    """A hypothesis' heading, each of its ids' claim and expected outcome as the runs' configuration stated
    them, the finding it draws, then its own section."""
    seen = [hid for hid in h.ids if any(a.manifest["hypothesis"] == hid for a in runs)]
    first = {hid: next(a for a in runs if a.manifest["hypothesis"] == hid) for hid in seen}
    out.doc.h(2, f"{seen[0]} — {first[seen[0]].manifest['title']}" if len(seen) == 1 else
              f"{' / '.join(seen)} — {h.name}")
    said = []
    for hid in seen:
        mine = [a for a in runs if a.manifest["hypothesis"] == hid]
        f = h.finding(hid, mine)
        claim = "" if len(seen) == 1 else f"{first[hid].manifest['title']}. "
        said.append(f"**{hid}**: {claim}Expected: {first[hid].manifest['plan']['hypothesis']['expected']} "
                    f"**Finding: {f.status}** — {f.why}")
    out.doc.bullets(said)
    h.section(runs, out)


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
        runs = [a for a in analyses if a.manifest["hypothesis"] in h.ids and not a.pooled.empty]
        if runs:
            _section(h, runs, out_)

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
