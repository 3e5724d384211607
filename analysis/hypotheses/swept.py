"""H5 and H8: one metric against one swept level, drawn per stack; the level read back from the step label
where it is a workload parameter rather than a column."""
from __future__ import annotations

import pandas as pd

from .. import figures
from .common import cols, pooled_of
from .registry import Out


def table_and_figure(runs: list, out: Out, level: str, column: str, name: str, title: str, ylabel: str,
                     scale: float, share: bool = False) -> pd.DataFrame:
    pooled = pooled_of(runs)
    if level not in pooled:
        pooled[level] = pooled["label"].str.extract(rf"{level}=([0-9.]+)")[0].astype(float)
    out.csv(name, cols(pooled, (level,)))
    p = figures.compare(pooled, level, column, out.figs / name.replace(".csv", ".png"), title, ylabel, scale, share)
    if p:
        out.doc.figure(p, title)
    return pooled
