"""Paired AB/BA repeats: per-pair deltas, intervals, tests, order effects and a decision-grade verdict.

Each pair runs mode A and mode B back to back (default B1 then B2, or B2 then B1: counterbalanced), so a
slow drift of the machine lands in both legs of a pair and cancels in its delta (``B − A``). With a
handful of pairs, large-sample formulas lie; everything here is exact or resampled:

- a **bootstrap** interval (percentile, fixed seed) of the mean delta (scipy.stats.bootstrap);
- the **Wilcoxon signed-rank** test and the **sign test**, exact (the null distribution of every sign
  assignment, ties included; the sign test is scipy.stats.binomtest), two-sided;
- an **order effect**: the AB pairs' deltas against the BA pairs' (difference of means with its own
  bootstrap interval) — a difference beyond noise and at least a quarter of the effect means the first leg
  warms or cools the second enough to question the comparison.

A difference is *decision-grade* only when the interval excludes zero and the exact Wilcoxon test reaches
5 % (which takes 6 pairs at least), no order effect shows, no leg had errors and the storage mechanism was
seen; otherwise the verdict says why, in reason codes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

MIN_PAIRS = 3                 # fewer pairs than this give no interval worth printing
ALPHA = 0.05                  # the exact Wilcoxon test must reach this too (6 pairs at least: 2/64 = 0.031)
# An order effect counts when its interval excludes zero and it is at least this share of the mean delta: a
# small carry-over cancels in a counterbalanced design, one of the effect's size questions the comparison.
ORDER_EFFECT_SHARE = 0.25
# every reason code a paired experiment (rig pairs, rig rehydrate) can give, and what it means; the fault
# suite (tests/faults) holds at least one case per code
REASONS = {
    "OK": "decision-grade: nothing below applies",
    "TOO_FEW_PAIRS": f"fewer than {MIN_PAIRS} complete pairs: no interval",
    "INTERVAL_INCLUDES_ZERO": "the bootstrap interval of the mean delta includes zero",
    "NOT_SIGNIFICANT": "the exact Wilcoxon test does not reach 5 % (it cannot with fewer than 6 pairs)",
    "ORDER_EFFECT_<METRIC>": "AB and BA pairs differ beyond noise by at least a quarter of the effect",
    "RUN_ERRORS_PRESENT": "a leg had failed requests",
    "METRIC_FALLBACK_TTFT": "no chunk carried text: end-to-end time stood in for TTFC (a warning)",
    "NO_COMPARISON": "no metric could be compared",
    "TELEMETRY_MISSING": "the B legs' KVBM counters, or the reads that back them, were not observed",
    "GATE_NO_SSD_MECHANISM_SIGNAL": "the B legs wrote nothing to and read nothing from the disk tier",
    "REHYDRATE_SIGNAL_ABSENT_WRITE_ONLY": "the B legs wrote to the disk tier and read nothing back",
    "DISK_READS_NOT_BACKED": "KVBM counted disk onboards but the serving process read nothing from storage",
    "B1_DISK_TIER_NOT_DISABLED": "a B1 (CPU tier only) leg moved data through the disk tier",
    "MECHANISM_GATE_DISABLED": "the early mechanism gate failed and --no-mechanism-gate went on",
    "REQUEST_MANIFEST_DIFFERS": "the legs did not replay the same requests",
    "BASELINE_MANIFEST_MISMATCH": "the replay list differs from the accepted baseline (--strict-baseline)",
    "BASELINE_MANIFEST_CHANGED": "the replay list differs from an earlier experiment's (a warning)",
    "LEG_FAILED": "a leg left no readable run; the legs before it are kept",
    "LEG_BLOCKED": "a leg ran blocked (the frontend refused what the workload needs, e.g. session_id)",
    "MODES_NOT_DISTINCT": "no leg showed KVBM at all: both tier modes ran the same stack, no delta is a finding",
    "INTERRUPTED": "Ctrl-C or SIGTERM ended the experiment; the legs that finished are kept and compared",
    "PREFLIGHT_STACK_DID_NOT_START": "Stack B could not be (re)started in a tier mode",
    "PREFLIGHT_FRONTEND_UNREACHABLE": "the frontend does not answer",
    "PREFLIGHT_FRONTEND_UNHEALTHY": "the frontend's /health is not healthy",
    "PREFLIGHT_MODEL_NOT_REGISTERED": "the frontend lists no model",
    "PREFLIGHT_KVBM_METRICS_UNREACHABLE": "KVBM's metrics do not answer (DYN_KVBM_METRICS=true on the worker)",
    "DISK_OFFLOAD_FILTER_ON": "nothing moved through the disk tier with KVBM's disk-offload filter on",
    "CONTROL_DIFFERS": "the control legs (a working set inside tier0, which no offload tier can help) differ between "
                       "the modes beyond noise: the method is biased, so no delta is a finding",
    "CONTROL_TOO_FEW_PAIRS": f"fewer than {MIN_PAIRS} control pairs: the control cannot speak (a warning)",
    "CONTROL_NOT_IN_TIER0": "a control leg onboarded KV from the disk tier: its working set left tier0, so it "
                            "controls nothing (a warning)",
}
# reasons said in the verdict that do not make a comparison less sound: a metric's stand-in, and a replay
# list that differs from an earlier experiment's (this one is compared within itself)
WARNINGS = frozenset({"METRIC_FALLBACK_TTFT", "BASELINE_MANIFEST_CHANGED", "CONTROL_TOO_FEW_PAIRS",
                      "CONTROL_NOT_IN_TIER0"})


@dataclass(frozen=True)
class Leg:
    pair: int
    order: str                 # "A_B" or "B_A" with the modes' names, e.g. "B1_B2"
    mode: str
    metrics: dict              # e.g. {"ttfc_p50_ms": ..., "ttfc_p99_ms": ..., "throughput_rps": ...}
    errors: int = 0
    metric_used: str = "ttfc"  # "ttft" where no chunk carried text


@dataclass(frozen=True)
class Mechanism:
    """The storage mechanism in the B legs: KV written to the disk tier, and read back from it. ``rehydrate``
    is KVBM's word (blocks onboarded from disk); ``backed`` whether bytes were really read to serve them (the
    serving process's /proc/<pid>/io, or the simulator's count for its tier2 file). KVBM's counters alone
    are no mechanism: they count disk hits whose transfer failed (ai-dynamo/dynamo #15079). None where no
    telemetry could tell."""
    write: Optional[bool]
    rehydrate: Optional[bool]
    backed: Optional[bool] = None
    filter_on: bool = False          # KVBM's disk-offload filter, as the legs' profile set it

    @property
    def reason(self) -> Optional[str]:
        if self.write is None and self.rehydrate is None:
            return "TELEMETRY_MISSING"
        if self.rehydrate:
            return {True: None, False: "DISK_READS_NOT_BACKED"}.get(self.backed, "TELEMETRY_MISSING")
        return "REHYDRATE_SIGNAL_ABSENT_WRITE_ONLY" if self.write else \
            "DISK_OFFLOAD_FILTER_ON" if self.filter_on else "GATE_NO_SSD_MECHANISM_SIGNAL"


@dataclass
class Comparison:
    metric: str
    deltas: list[float]
    mean: float
    ci: tuple[float, float]
    wilcoxon_p: float
    sign_p: float
    order_diff: float          # mean delta of A-first pairs minus that of B-first pairs
    order_ci: tuple[float, float]
    reasons: list[str] = field(default_factory=list)

    @property
    def excludes_zero(self) -> bool:
        return not (self.ci[0] <= 0 <= self.ci[1])


def bootstrap_ci(values: list[float], level: float = 0.95, n: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (scipy.stats.bootstrap, a fixed seed); (nan, nan) below
    MIN_PAIRS values, the value itself where every value is the same."""
    if len(values) < MIN_PAIRS:
        return (math.nan, math.nan)
    if len(set(values)) == 1:
        return (values[0], values[0])
    from scipy import stats               # here: 1.2 s to import, and every `rig` command registers through this module
    ci = stats.bootstrap((np.asarray(values, dtype=float),), np.mean, confidence_level=level, n_resamples=n,
                         method="percentile", rng=np.random.default_rng(seed)).confidence_interval
    return (float(ci.low), float(ci.high))


def wilcoxon_p(deltas: list[float]) -> float:
    """Exact two-sided p of the signed-rank statistic (zeros dropped, ties get average ranks), from the null
    distribution of every sign assignment, counted by its rank sum. Not scipy's: its method="exact" applies
    the no-ties distribution when ranks tie (p 0.3125 where the tie-aware one is 0.34375), and the
    PermutationMethod that counts ties right took 380 s at 20 pairs (tests compare the two where both run)."""
    d = [x for x in deltas if x != 0]
    if not d:
        return 1.0
    order = sorted(range(len(d)), key=lambda i: abs(d[i]))
    ranks = [0.0] * len(d)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and abs(d[order[j + 1]]) == abs(d[order[i]]):
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    # the null distribution of the positive-rank sum: every sign equally likely; ranks doubled to integers
    doubled = [int(round(2 * r)) for r in ranks]
    counts = {0: 1}
    for r in doubled:
        nxt = dict(counts)
        for total, ways in counts.items():
            nxt[total + r] = nxt.get(total + r, 0) + ways
        counts = nxt
    observed = sum(r for r, x in zip(doubled, d) if x > 0)
    centre = sum(doubled) / 2
    extreme = sum(ways for total, ways in counts.items() if abs(total - centre) >= abs(observed - centre))
    return extreme / 2 ** len(d)


def sign_p(deltas: list[float]) -> float:
    """Exact two-sided binomial p of as many positive deltas as seen (zeros dropped): scipy's binomtest."""
    d = [x for x in deltas if x != 0]
    if not d:
        return 1.0
    from scipy import stats
    return float(stats.binomtest(sum(1 for x in d if x > 0), len(d), 0.5).pvalue)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def compare(legs: list[Leg], metric: str, a: str = "B1", b: str = "B2") -> Comparison:
    """Deltas ``b − a`` of ``metric`` per complete pair, with interval, tests and the order check."""
    by_pair: dict[int, dict[str, Leg]] = {}
    for leg in legs:
        by_pair.setdefault(leg.pair, {})[leg.mode] = leg
    pairs = [(p, m[a], m[b]) for p, m in sorted(by_pair.items()) if a in m and b in m
             and not math.isnan(m[a].metrics.get(metric, math.nan))
             and not math.isnan(m[b].metrics.get(metric, math.nan))]
    deltas = [lb.metrics[metric] - la.metrics[metric] for _, la, lb in pairs]
    first_a = [lb.metrics[metric] - la.metrics[metric] for _, la, lb in pairs if la.order.startswith(a)]
    first_b = [lb.metrics[metric] - la.metrics[metric] for _, la, lb in pairs if la.order.startswith(b)]
    order_boot = _order_ci(first_a, first_b)
    c = Comparison(metric=metric, deltas=deltas, mean=_mean(deltas), ci=bootstrap_ci(deltas),
                   wilcoxon_p=wilcoxon_p(deltas), sign_p=sign_p(deltas),
                   order_diff=_mean(first_a) - _mean(first_b), order_ci=order_boot)
    if len(deltas) < MIN_PAIRS:
        c.reasons.append("TOO_FEW_PAIRS")
    elif not c.excludes_zero:
        c.reasons.append("INTERVAL_INCLUDES_ZERO")
    elif c.wilcoxon_p >= ALPHA:          # a bootstrap of a handful of pairs is overconfident; the exact test is not
        c.reasons.append("NOT_SIGNIFICANT")
    beyond_noise = not math.isnan(order_boot[0]) and not (order_boot[0] <= 0 <= order_boot[1])
    if beyond_noise and abs(c.order_diff) >= ORDER_EFFECT_SHARE * abs(c.mean):
        c.reasons.append("ORDER_EFFECT_" + metric.upper())
    return c


def control_reason(c: Comparison) -> Optional[str]:
    """The control legs replay prefixes that stay in tier0 (no thrash, a working set inside it): no tier mode
    can change them, so a delta there beyond noise, by the same test a finding needs, is the method's bias."""
    if len(c.deltas) < MIN_PAIRS:
        return "CONTROL_TOO_FEW_PAIRS"
    return "CONTROL_DIFFERS" if c.excludes_zero and c.wilcoxon_p < ALPHA else None


def _order_ci(first_a: list[float], first_b: list[float], n: int = 10_000, seed: int = 1) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(first_a) − mean(first_b), each group resampled within itself."""
    if len(first_a) < 2 or len(first_b) < 2:
        return (math.nan, math.nan)
    if len(set(first_a)) == 1 and len(set(first_b)) == 1:
        return (first_a[0] - first_b[0],) * 2
    from scipy import stats
    ci = stats.bootstrap((np.asarray(first_a, dtype=float), np.asarray(first_b, dtype=float)),
                         lambda x, y, axis=-1: np.mean(x, axis=axis) - np.mean(y, axis=axis), n_resamples=n,
                         method="percentile", rng=np.random.default_rng(seed)).confidence_interval
    return (float(ci.low), float(ci.high))


def verdict(legs: list[Leg], comparisons: list[Comparison], mechanism: Mechanism,
            overrides: tuple[str, ...] = ()) -> dict:
    """Decision-grade or not, and every reason."""
    reasons: list[str] = []
    if any(leg.errors for leg in legs):
        reasons.append("RUN_ERRORS_PRESENT")
    if mechanism.reason:
        reasons.append(mechanism.reason)
    if any(leg.metric_used != "ttfc" for leg in legs):
        reasons.append("METRIC_FALLBACK_TTFT")
    primary = comparisons[0] if comparisons else None
    if primary is None:
        reasons.append("NO_COMPARISON")
    else:
        reasons += [r for r in primary.reasons if r not in reasons]
    for c in comparisons[1:]:
        reasons += [r for r in c.reasons if r.startswith("ORDER_EFFECT_") and r not in reasons]
    reasons += [o for o in overrides if o not in reasons]
    blocking = [r for r in reasons if r not in WARNINGS]
    return {"decision_grade": not blocking, "reasons": reasons or ["OK"],
            "primary_metric": primary.metric if primary else None,
            "ssd_write_signal_present": mechanism.write, "ssd_rehydrate_signal_present": mechanism.rehydrate,
            "ssd_rehydrate_backed_by_reads": mechanism.backed}
