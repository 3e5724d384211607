"""H7 — KV telemetry explains NVMe traffic: reads predicted from tier2 onboard blocks x block size against
those observed, and p99 against the tier2 fetch latency."""
from __future__ import annotations

import pandas as pd

from .. import figures
from .common import cols
from .registry import Hypothesis, Out, register


def section(runs: list, out: Out) -> None:
    rows = []
    for a in runs:
        size = a.frames.get("kv_block_size")
        bs = float(size["value"].max()) if size is not None and not size.empty else float("nan")
        d = cols(a.pooled, ("kv_onboard_disk_blocks", "nvme_read_bytes", "tier2_fetch_p95")).copy()
        d["predicted_read_bytes_per_s"] = d["kv_onboard_disk_blocks"] * bs
        d["observed_read_bytes_per_s"] = d["nvme_read_bytes"]
        rows.append(d)
    d = pd.concat(rows, ignore_index=True)
    out.csv("H7_predicted_vs_observed.csv", d)
    p = figures.scatter_fit(d["predicted_read_bytes_per_s"] / 2**20, d["observed_read_bytes_per_s"] / 2**20,
                            d["label"], out.figs / "H7_predicted_vs_observed.png",
                            "H7: predicted (onboard blocks x block size) vs observed NVMe reads",
                            "predicted MiB/s", "observed MiB/s")
    if p:
        out.doc.figure(p, "H7: predicted vs observed NVMe read MiB/s")
    p = figures.scatter_fit(d["tier2_fetch_p95"] * 1000, d["ttft_p99_s"] * 1000, d["label"],
                            out.figs / "H7_p99_vs_fetch.png", "H7: p99 vs tier2 fetch latency",
                            "tier2 fetch p95 (ms)", "TTFT p99 (ms)")
    if p:
        out.doc.figure(p, "H7: TTFT p99 vs tier2 fetch p95")


register(Hypothesis(("H7",), "KV telemetry explains NVMe traffic", "H7_predicted_vs_observed.csv", section,
                    storage_claims=("H7",)))
