"""Figures for the plan's checklist (matplotlib, PNG). Each takes tables and returns the file it wrote,
or None when it has nothing to draw."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from configs.paths import open_file  # noqa: E402

from .correlate import linear_fit  # noqa: E402


def _save(fig, path: Path) -> Path:
    """Written through open_file: a figure has the harness's file mode whatever the umask."""
    fig.tight_layout()
    with os.fdopen(open_file(path), "wb") as f:
        fig.savefig(f, dpi=110, format="png")
    plt.close(fig)
    return path


def _drawn(handle) -> bool:
    """Whether a legend handle has anything on the axes (a line of NaNs has not)."""
    if hasattr(handle, "get_ydata"):
        return bool(np.isfinite(np.asarray(handle.get_ydata(), dtype=float)).any())
    if hasattr(handle, "get_offsets"):
        return bool(np.isfinite(np.asarray(handle.get_offsets(), dtype=float)).any())
    return True


def legend(ax, **kw) -> None:
    """A legend of the series that are drawn, none where nothing is."""
    pairs = [(h, label) for h, label in zip(*ax.get_legend_handles_labels()) if _drawn(h)]
    if pairs:
        ax.legend(*zip(*pairs), **kw)


def step_ticks(ax, values) -> None:
    """x ticks at the steps' own values (a knee at 24 between unlabelled log ticks says nothing)."""
    values = sorted({float(v) for v in values if v == v})
    if values:
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.minorticks_off()


def percentiles_vs(pooled: pd.DataFrame, level: str, path: Path, title: str,
                   knees: Optional[dict] = None) -> Optional[Path]:
    """p50/p95/p99 TTFT against a level (concurrency, context), one panel per line (``series``: a stack, or
    a plan of it where its runs differ; the stack where no series is given), knee marked."""
    if pooled.empty or level not in pooled:
        return None
    by = "series" if "series" in pooled else "stack"
    stacks = list(dict.fromkeys(pooled[by]))
    fig, axes = plt.subplots(1, len(stacks), figsize=(6 * len(stacks), 4), squeeze=False)
    for ax, stack in zip(axes[0], stacks):
        d = pooled[pooled[by] == stack].sort_values(level)
        for q, style in (("p50", "-o"), ("p95", "-s"), ("p99", "-^")):
            ax.plot(d[level], d[f"ttft_{q}_s"] * 1000, style, label=f"TTFT {q}")
        if "repetitions" in d and (d["repetitions"] > 1).any():          # p99's spread across repetitions
            ax.fill_between(d[level], d["ttft_p99_min"] * 1000, d["ttft_p99_max"] * 1000, alpha=0.2,
                            color="tab:green", label=f"p99 range over {int(d['repetitions'].max())} repetitions")
        knee = (knees or {}).get(stack)
        if knee is not None and knee.knee_index is not None:
            ax.axvline(d[level].iloc[knee.knee_index], color="red", ls="--", label="knee")
        if knee is not None and knee.u_work is not None:
            ax.axvline(knee.u_work, color="green", ls=":", label=f"U_work={knee.u_work:g}")
        if level == "concurrency":
            ax.set_xscale("log", base=2)
        step_ticks(ax, d[level])
        ax.set(title=f"{stack}", xlabel=level, ylabel="ms")
        ax.grid(alpha=0.3)
        legend(ax)
    fig.suptitle(title)
    return _save(fig, path)


def compare(pooled: pd.DataFrame, level: str, column: str, path: Path, title: str, ylabel: str,
            scale: float = 1.0, share: bool = False) -> Optional[Path]:
    """One line per hypothesis and ``series`` (or stack) of ``column`` against ``level``; a ``share`` (0..1)
    in percent on an axis from 0 to 100, so a move from 1 % to 2 % does not fill the figure."""
    if pooled.empty or column not in pooled or pooled[column].isna().all():
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for (hyp, stack), d in pooled.groupby(["hypothesis", "series" if "series" in pooled else "stack"], sort=False):
        d = d.sort_values(level)
        line, = ax.plot(d[level], d[column] * (100 if share else scale), "-o", label=f"{hyp} {stack}")
        spread = f"{column[:-2]}_min", f"{column[:-2]}_max"          # ttft_p99_s: its repetitions' range
        if column.endswith("_s") and set(spread) <= set(d) and "repetitions" in d and (d["repetitions"] > 1).any():
            ax.fill_between(d[level], d[spread[0]] * scale, d[spread[1]] * scale, alpha=0.2, color=line.get_color())
    if share:
        ax.set_ylim(0, 100)
    step_ticks(ax, pooled[level])
    ax.set(title=title, xlabel=level, ylabel=f"{ylabel} (%)" if share else ylabel)
    ax.grid(alpha=0.3)
    legend(ax)
    return _save(fig, path)


def scatter_fit(x: pd.Series, y: pd.Series, labels: pd.Series, path: Path, title: str, xlabel: str,
                ylabel: str, groups: Optional[pd.Series] = None) -> Optional[Path]:
    """Points by label, and a line fitted per group (``groups``: what one fit may pool, e.g. a stack —
    never two stacks in one line; all points where not given), only where the group has enough points
    for a fit to mean something (correlate.MIN_FIT_POINTS)."""
    ok = ~(x.isna() | y.isna())
    if ok.sum() < 2:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for label in dict.fromkeys(labels[ok]):
        sel = ok & (labels == label)
        ax.scatter(x[sel], y[sel], label=str(label))
    groups = groups if groups is not None else pd.Series("", index=x.index)
    for group in dict.fromkeys(groups[ok]):
        sel = ok & (groups == group)
        slope, intercept, r2 = linear_fit(x[sel], y[sel])
        if slope == slope:
            xs = [x[sel].min(), x[sel].max()]
            name = f"fit {group} " if group else "fit "
            ax.plot(xs, [slope * v + intercept for v in xs], "--", label=f"{name}R²={r2:.2f}")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    legend(ax)
    return _save(fig, path)


def timeline(series: dict[str, pd.Series], path: Path, title: str, ylabel: str) -> Optional[Path]:
    series = {k: v for k, v in series.items() if not v.empty}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(9, 3.5))
    t0 = min(v.index.min() for v in series.values())
    for name, s in series.items():
        ax.plot(s.index - t0, s.values, label=name)
    ax.set(title=title, xlabel="s since start", ylabel=ylabel)
    ax.grid(alpha=0.3)
    legend(ax)
    return _save(fig, path)


def pair_deltas(deltas: list[float], orders: list[str], mean: float, ci: tuple[float, float], metric: str,
                path: Path) -> Optional[Path]:
    """Each pair's delta (marker by order), the mean and its interval: what a paired verdict rests on."""
    if not deltas:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (d, order) in enumerate(zip(deltas, orders)):
        ax.plot(i, d, "o" if i % 2 == 0 else "s", color="tab:blue" if i % 2 == 0 else "tab:orange",
                label=order if i < 2 else None)
    ax.axhline(0, color="grey", lw=0.8)
    ax.axhline(mean, color="black", ls="--", label=f"mean {mean:.2f}")
    if ci[0] == ci[0]:                                  # an interval exists (not nan)
        ax.axhspan(ci[0], ci[1], color="black", alpha=0.1, label="95 % bootstrap interval")
    ax.set_xlabel("pair")
    ax.set_ylabel(f"delta {metric}")
    ax.set_title(f"Per-pair delta of {metric}")
    ax.legend(fontsize=8)
    return _save(fig, path)


def ttfc_cdf(by_mode: dict[str, list[float]], path: Path) -> Optional[Path]:
    """Empirical CDF of replay TTFC per tier mode, all legs of a mode pooled."""
    by_mode = {m: sorted(v) for m, v in by_mode.items() if v}
    if not by_mode:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, values in sorted(by_mode.items()):
        ax.step(values, [(i + 1) / len(values) for i in range(len(values))], where="post",
                label=f"{mode} (n={len(values)})")
    ax.set_xlabel("replay TTFC (ms)")
    ax.set_ylabel("share of requests")
    ax.set_title("Replay TTFC by tier mode")
    ax.legend()
    return _save(fig, path)


def by_rig(pooled: pd.DataFrame, path: Path, title: str) -> Optional[Path]:
    """TTFT p99 per step, one line per rig (runs of one rig: their median)."""
    if pooled.empty or pooled["ttft_p99_s"].isna().all():
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for rig, d in pooled.groupby("rig", sort=True):
        per = d.groupby("step", sort=True).agg(label=("label", "first"), p99=("ttft_p99_s", "median"))
        ax.plot(range(len(per)), per["p99"] * 1000, "-o", label=rig)
        ax.set_xticks(range(len(per)), per["label"], rotation=30, ha="right", fontsize=7)
    ax.set(title=title, ylabel="TTFT p99 (ms)")
    ax.grid(alpha=0.3)
    ax.legend(title="rig")
    return _save(fig, path)


def pareto_front(x, y) -> list[bool]:
    """The points no other point beats on both axes (more total throughput and more per user)."""
    pts = list(zip(x, y))
    return [not any(a >= px and b >= py and (a, b) != (px, py) for a, b in pts) for px, py in pts]


def throughput_vs_user(pooled: pd.DataFrame, path: Path) -> Optional[Path]:
    """Output tokens/s per user against total output tokens/s, one curve per series (a stack and tier mode),
    its steps in order, the Pareto front ringed: where more users stop buying throughput and start costing
    each user speed."""
    need = ["output_tokens_per_s", "output_tokens_per_s_per_user"]
    d = pooled.dropna(subset=need) if not pooled.empty and set(need) <= set(pooled) else pd.DataFrame()
    if len(d) < 2:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for series, g in d.groupby("series", sort=False):
        ax.plot(g["output_tokens_per_s"], g["output_tokens_per_s_per_user"], "-o", label=str(series))
    front = d[pareto_front(d["output_tokens_per_s"], d["output_tokens_per_s_per_user"])]
    ax.scatter(front["output_tokens_per_s"], front["output_tokens_per_s_per_user"], s=160, facecolors="none",
               edgecolors="black", label="Pareto front")
    ax.set(title="Throughput vs per-user speed", xlabel="output tokens/s (total)", ylabel="output tokens/s per user")
    ax.grid(alpha=0.3)
    legend(ax, fontsize=8)
    return _save(fig, path)


def latency_cdfs(records: pd.DataFrame, labels: dict, path: Path, title: str) -> Optional[Path]:
    """Empirical CDFs of TTFT and of the gaps between chunks (ITL), one line per step (``labels``: step -> its
    label), over the served requests."""
    ok = records[records["ok"].astype(bool)] if not records.empty else records
    if ok.empty or "step" not in ok or ok["ttft_s"].isna().all():
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for step, d in ok.groupby("step", sort=True):
        label = labels.get(step, f"step {step}")
        ttft = np.sort(d["ttft_s"].dropna().astype(float).to_numpy()) * 1000
        if len(ttft):
            left.step(ttft, np.arange(1, len(ttft) + 1) / len(ttft), where="post", label=label)
        gaps = np.sort(np.concatenate([np.empty(0, np.float32), *d["itl_s"]])) * 1000 if "itl_s" in d else []
        if len(gaps):
            right.step(gaps, np.arange(1, len(gaps) + 1) / len(gaps), where="post", label=label)
    for ax, what in ((left, "TTFT (ms)"), (right, "gap between chunks (ms)")):
        ax.set(xlabel=what, ylabel="share of requests" if ax is left else "share of gaps", ylim=(0, 1))
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
        legend(ax, fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)
