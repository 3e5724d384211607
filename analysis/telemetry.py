"""The telemetry a report needs, as named PromQL queries over recording rules (one place to change
a name), and how to pull them for a run's window."""
from __future__ import annotations

from typing import Callable

import pandas as pd

from configs.vocabulary import rules as R
from configs.vocabulary import series as S

from .promdata import Source

# name -> (PromQL with {run_id}, needed for) ; "all" for every run, "tiered" for Stack B runs
RUN = '{{run_id="{run_id}"}}'
QUERIES: dict[str, tuple[str, str]] = {
    "loadgen_step": (f"max({S.LOADGEN_STEP.name}{RUN})", "all"),
    "ttft_p50_hist": (f"max by (step) ({R.TTFT_P50}{RUN})", "all"),
    "ttft_p99_hist": (f"max by (step) ({R.TTFT_P99}{RUN})", "all"),
    "nvme_reads": (f'sum({R.DISK_READS_RATE}{{{{role="kv_tier2"}}}})', "all"),
    "nvme_read_bytes": (f'sum({R.DISK_READ_BYTES_RATE}{{{{role="kv_tier2"}}}})', "all"),
    "nvme_r_await": (f'max({R.DISK_READ_AWAIT}{{{{role="kv_tier2"}}}})', "all"),
    "nvme_util": (f'max({R.DISK_UTIL}{{{{role="kv_tier2"}}}})', "all"),
    "iowait": (f"avg({R.CPU_IOWAIT_RATIO})", "all"),
    "psi_io": (f"avg({R.PRESSURE_IO_RATIO})", "all"),
    "kv_onboard_disk_bytes": (f'sum({R.KV_TRANSFER_BYTES_RATE}{{{{direction="onboard",from_tier="disk"}}}})', "tiered"),
    "kv_onboard_disk_blocks": (f'sum({R.KV_TRANSFER_BLOCKS_RATE}{{{{direction="onboard",from_tier="disk"}}}})',
                               "tiered"),
    "kv_onboard_blocks": (f'sum({R.KV_TRANSFER_BLOCKS_RATE}{{{{direction="onboard"}}}})', "tiered"),
    "kv_offload_disk_bytes": (f'sum({R.KV_TRANSFER_BYTES_RATE}{{{{direction="offload",to_tier="disk"}}}})', "tiered"),
    # bytes the target read from its tier2 file, where it states them (the simulator does)
    "tier2_file_read_bytes": (f'sum({R.KV_TIER2_FILE_BYTES_RATE}{{{{direction="read"}}}})', "optional"),
    "kv_hit_disk": (f'max({R.KV_HIT_RATIO}{{{{tier="disk"}}}})', "tiered"),
    "kv_hit_host": (f'max({R.KV_HIT_RATIO}{{{{tier="host"}}}})', "tiered"),
    "kv_onboard_share_disk": (f'max({R.KV_ONBOARD_SHARE}{{{{from_tier="disk"}}}})', "tiered"),
    "kv_block_size": (f"max({S.KV_BLOCK_SIZE_BYTES.name})", "tiered"),
    "tier2_fetch_p95": (f'histogram_quantile(0.95, sum by (le) (rate({S.SIM_FETCH.name}_bucket{{{{tier="disk"}}}}[30s])))',
                        "optional"),
}
# the three sources whose alignment the gate checks
ALIGNMENT = {"latency": "loadgen_step", "sysmon": "nvme_reads", "kv": "kv_onboard_disk_bytes"}


def pull(source: Source, run_id: str, start: float, end: float, step: float,
         progress: Callable[[str], None] = lambda _m: None) -> dict[str, pd.DataFrame]:
    frames = {}
    for name, (template, _) in QUERIES.items():
        frames[name] = source.range(name, template.format(run_id=run_id), start, end, step)
    progress(f"  {sum(len(f) for f in frames.values())} telemetry points in {len(frames)} series")
    return frames


def single(frame: pd.DataFrame) -> pd.Series:
    """One time series (the queries aggregate to one), indexed by time."""
    if frame.empty:
        return pd.Series(dtype=float)
    return frame.groupby("time")["value"].max().sort_index()


def window_mean(frame: pd.DataFrame, start: float, end: float) -> float:
    s = single(frame)
    s = s[(s.index >= start) & (s.index <= end)]
    s = s[~s.isna()]
    return float(s.mean()) if len(s) else float("nan")
