"""H4A / H4B — NVMe QoS under fio contention: p99 against the kv_tier2 disk's r_await, per fio profile."""
from __future__ import annotations

from .. import figures
from ..correlate import linear_fit
from .common import cols, ms, pooled_of
from .registry import Hypothesis, Out, register


def section(runs: list, out: Out) -> None:
    pooled = pooled_of(runs)
    # one fit per hypothesis (H4A's stack and H4B's are not one relation), none below MIN_FIT_POINTS steps
    fits = {hid: linear_fit(d["nvme_r_await"], d["ttft_p99_s"]) for hid, d in pooled.groupby("hypothesis")}
    fit = pooled["hypothesis"].map(fits)
    out.csv("H4B_p99_vs_nvme.csv", cols(pooled).assign(fit_slope_s_per_s=fit.str[0], fit_intercept_s=fit.str[1],
                                                       fit_r2=fit.str[2]))
    p = figures.scatter_fit(pooled["nvme_r_await"] * 1000, pooled["ttft_p99_s"] * 1000,
                            pooled["hypothesis"] + " " + pooled["fio_profile"], out.figs / "H4_p99_vs_r_await.png",
                            "H4: TTFT p99 vs NVMe r_await by fio profile", "r_await (ms)", "TTFT p99 (ms)",
                            groups=pooled["hypothesis"])
    if p:
        out.doc.figure(p, "H4: TTFT p99 vs kv_tier2 r_await, by fio profile")
    for a in runs:
        per = a.pooled.set_index("fio_profile")["ttft_p99_s"].to_dict()
        out.doc.bullets([f"{a.manifest['hypothesis']} {a.run_id} ({a.manifest['stack']}): p99 " +
                         ", ".join(f"{k} {ms(v)}" for k, v in per.items())])


register(Hypothesis(("H4A", "H4B"), "NVMe QoS degradation under fio contention", "H4B_p99_vs_nvme.csv", section,
                    storage_claims=("H4B",)))
