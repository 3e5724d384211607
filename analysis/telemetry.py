"""The telemetry a report needs, as named PromQL queries over recording rules (one place to change
a name), and how to pull them for a run's window."""
from __future__ import annotations

from typing import Callable

import pandas as pd

from .promdata import Source

# name -> (PromQL with {run_id}, needed for) ; "all" for every run, "tiered" for Stack B runs
QUERIES: dict[str, tuple[str, str]] = {
    "loadgen_step": ('max(sparkrig_loadgen_step{{run_id="{run_id}"}})', "all"),
    "ttft_p50_hist": ('max by (step) (run_stack_step:sparkrig_request_ttft_seconds:p50_rate30s{{run_id="{run_id}"}})',
                      "all"),
    "ttft_p99_hist": ('max by (step) (run_stack_step:sparkrig_request_ttft_seconds:p99_rate30s{{run_id="{run_id}"}})',
                      "all"),
    "nvme_reads": ('sum(device:sparkrig_disk_reads:rate5s{{role="kv_tier2"}})', "all"),
    "nvme_read_bytes": ('sum(device:sparkrig_disk_read_bytes:rate5s{{role="kv_tier2"}})', "all"),
    "nvme_r_await": ('max(device:sparkrig_disk_read_await_seconds:rate5s{{role="kv_tier2"}})', "all"),
    "nvme_util": ('max(device:sparkrig_disk_util:ratio_rate5s{{role="kv_tier2"}})', "all"),
    "iowait": ("avg(instance:sparkrig_cpu_iowait:ratio_rate5s)", "all"),
    "psi_io": ("avg(instance:sparkrig_pressure_io_waiting:ratio_rate30s)", "all"),
    "kv_onboard_disk_bytes": (
        'sum(tier:sparkrig_kv_transfer_bytes:rate5s{{direction="onboard",from_tier="disk"}})', "tiered"),
    "kv_onboard_disk_blocks": (
        'sum(tier:sparkrig_kv_transfer_blocks:rate5s{{direction="onboard",from_tier="disk"}})', "tiered"),
    "kv_onboard_blocks": ('sum(tier:sparkrig_kv_transfer_blocks:rate5s{{direction="onboard"}})', "tiered"),
    "kv_offload_disk_bytes": ('sum(tier:sparkrig_kv_transfer_bytes:rate5s{{direction="offload",to_tier="disk"}})',
                              "tiered"),
    # bytes the target read from its tier2 file, where it states them (the simulator does)
    "tier2_file_read_bytes": ('sum(direction:sparkrig_kv_tier2_file_bytes:rate5s{{direction="read"}})', "optional"),
    "kv_hit_disk": ('max(tier:sparkrig_kv_hit:ratio{{tier="disk"}})', "tiered"),
    "kv_hit_host": ('max(tier:sparkrig_kv_hit:ratio{{tier="host"}})', "tiered"),
    "kv_onboard_share_disk": ('max(tier:sparkrig_kv_onboard_share:ratio_rate30s{{from_tier="disk"}})', "tiered"),
    "kv_block_size": ("max(sparkrig_kv_block_size_bytes)", "tiered"),
    "tier2_fetch_p95": ('histogram_quantile(0.95, sum by (le) '
                        '(rate(stacksim_kv_tier_fetch_seconds_bucket{{tier="disk"}}[30s])))', "optional"),
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
