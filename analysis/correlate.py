"""Latency against storage telemetry on a common time grid: Pearson and Spearman with the best lag, a
block-bootstrap interval of r (windows next to each other are not independent, so blocks of them are
resampled), no r at all below MIN_WINDOWS windows, and a flag when the best lag sits at the search edge
(the true one may lie beyond it)."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

GRID_S = 0.2          # the plan's telemetry cadence
MIN_WINDOWS = 20      # fewer paired windows than this give no r worth printing
BLOCK = 3             # windows per bootstrap block


@dataclass(frozen=True)
class Correlation:
    pearson: float
    spearman: float
    lag_s: float          # telemetry shifted by this much (positive: telemetry leads latency)
    samples: int
    ci: tuple[float, float] = (float("nan"), float("nan"))   # 95 % block-bootstrap interval of pearson
    at_edge: bool = False  # the best lag is the largest searched: the true one may be beyond


def on_grid(series: pd.Series, start: float, end: float, step: float = GRID_S) -> pd.Series:
    """Resample an irregular series onto [start, end) every ``step`` s (last value carried, 1 s at most)."""
    grid = np.arange(start, end, step)
    if series.empty:
        return pd.Series(np.nan, index=grid)
    s = series.sort_index()
    s = s[~s.index.duplicated(keep="last")]
    return s.reindex(s.index.union(grid)).ffill(limit=int(1 / step) + 1).reindex(grid)


def window_p99(times: np.ndarray, values: np.ndarray, start: float, end: float, window_s: float) -> pd.Series:
    """p99 of the requests that started in each window."""
    edges = np.arange(start, end + window_s, window_s)
    out = {}
    for a, b in zip(edges[:-1], edges[1:]):
        sel = values[(times >= a) & (times < b)]
        out[a] = float(np.percentile(sel, 99)) if len(sel) >= 3 else np.nan
    return pd.Series(out)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def bootstrap_r(a: np.ndarray, b: np.ndarray, n: int = 2000, block: int = BLOCK, seed: int = 0) -> tuple[float, float]:
    """95 % moving-block bootstrap interval of Pearson r over paired windows."""
    k = len(a)
    if k < MIN_WINDOWS:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, k - block + 1, size=(n, -(-k // block)))
    idx = (starts[:, :, None] + np.arange(block)).reshape(n, -1)[:, :k]
    rs = [r for r in (_pearson(a[i], b[i]) for i in idx) if not np.isnan(r)]
    return (float(np.percentile(rs, 2.5)), float(np.percentile(rs, 97.5))) if rs else (float("nan"), float("nan"))


def best_lag(latency: pd.Series, telemetry: pd.Series, max_lag: int = 5, step_s: float = GRID_S) -> Correlation:
    """Both series on the same grid; telemetry shifted by -max_lag..max_lag grid steps, keeping the lag
    with the largest |Pearson r|, then its interval."""
    best, pairs = Correlation(float("nan"), float("nan"), 0.0, 0), None
    for lag in range(-max_lag, max_lag + 1):
        shifted = telemetry.shift(lag)
        both = pd.concat([latency, shifted], axis=1).dropna()
        if len(both) < 3:
            continue
        r = _pearson(both.iloc[:, 0].to_numpy(), both.iloc[:, 1].to_numpy())
        if np.isnan(r):
            continue
        if np.isnan(best.pearson) or abs(r) > abs(best.pearson):
            rho = _pearson(both.iloc[:, 0].rank().to_numpy(), both.iloc[:, 1].rank().to_numpy())
            best, pairs = Correlation(r, rho, lag * step_s, len(both), at_edge=max_lag > 0 and abs(lag) == max_lag), both
    if pairs is not None:
        best = replace(best, ci=bootstrap_r(pairs.iloc[:, 0].to_numpy(), pairs.iloc[:, 1].to_numpy()))
    return best


MIN_FIT_POINTS = 5       # a line through 3 points has R² near 1 whatever the relation: no fit below this


def linear_fit(x, y) -> tuple[float, float, float]:
    """slope, intercept, R^2 of y ~ x (nan below MIN_FIT_POINTS points or with a single distinct x)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    if len(x) < MIN_FIT_POINTS or np.ptp(x) == 0:
        return float("nan"), float("nan"), float("nan")
    slope, intercept = np.polyfit(x, y, 1)
    pred = slope * x + intercept
    ss = np.sum((y - y.mean()) ** 2)
    return float(slope), float(intercept), float(1 - np.sum((y - pred) ** 2) / ss) if ss else float("nan")
