"""The telemetry a report needs, as named PromQL queries over recording rules (one place to change
a name), and how to pull them for a run's window."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from configs.vocabulary import rules as R
from configs.vocabulary import series as S

from .promdata import Source

IDLE_S = 30.0                  # telemetry before the run: the idle baseline (H2A's flat-NVMe gate)


def sel(name: str, matchers: str = "") -> str:
    """A selector of ``name`` as a query template: its matchers and the run's {scope} (see scope())."""
    inner = ",".join(m for m in (matchers, "{scope}") if m)
    return f"{name}{{{{{inner}}}}}"


def agg(op: str, name: str, matchers: str = "") -> str:
    return f"{op}({sel(name, matchers)})"


RUN = 'run_id="{run_id}"'
KV2, ONBOARD_DISK = 'role="kv_tier2"', 'direction="onboard",from_tier="disk"'
# name -> (PromQL template with {run_id} and {scope}, needed for): "all" for every run, "tiered" for Stack B
QUERIES: dict[str, tuple[str, str]] = {
    "loadgen_step": (agg("max", S.LOADGEN_STEP.name, RUN), "all"),
    "ttft_p50_hist": (agg("max by (step) ", R.TTFT_P50, RUN), "all"),
    "ttft_p99_hist": (agg("max by (step) ", R.TTFT_P99, RUN), "all"),
    "nvme_reads": (agg("sum", R.DISK_READS_RATE, KV2), "all"),
    "nvme_read_bytes": (agg("sum", R.DISK_READ_BYTES_RATE, KV2), "all"),
    "nvme_r_await": (agg("max", R.DISK_READ_AWAIT, KV2), "all"),
    "nvme_util": (agg("max", R.DISK_UTIL, KV2), "all"),
    "iowait": (agg("avg", R.CPU_IOWAIT_RATIO), "all"),
    "psi_io": (agg("avg", R.PRESSURE_IO_RATIO), "all"),
    "kv_onboard_disk_bytes": (agg("sum", R.KV_TRANSFER_BYTES_RATE, ONBOARD_DISK), "tiered"),
    "kv_onboard_disk_blocks": (agg("sum", R.KV_TRANSFER_BLOCKS_RATE, ONBOARD_DISK), "tiered"),
    "kv_onboard_blocks": (agg("sum", R.KV_TRANSFER_BLOCKS_RATE, 'direction="onboard"'), "tiered"),
    "kv_offload_disk_bytes": (agg("sum", R.KV_TRANSFER_BYTES_RATE, 'direction="offload",to_tier="disk"'), "tiered"),
    # bytes the target read from its tier2 file, where it states them (the simulator does)
    "tier2_file_read_bytes": (agg("sum", R.KV_TIER2_FILE_BYTES_RATE, 'direction="read"'), "optional"),
    "kv_hit_disk": (agg("max", R.KV_HIT_RATIO, 'tier="disk"'), "tiered"),
    "kv_hit_host": (agg("max", R.KV_HIT_RATIO, 'tier="host"'), "tiered"),
    "kv_onboard_share_disk": (agg("max", R.KV_ONBOARD_SHARE, 'from_tier="disk"'), "tiered"),
    "kv_block_size": (agg("max", S.KV_BLOCK_SIZE_BYTES.name), "tiered"),
    # requests waiting on KV onboarding (KVBM after 1.6.1 publishes it): a direct cause of TTFT
    "kv_onboarding": (agg("max", S.KV_ONBOARDING_REQUESTS.name), "optional"),
    # bytes the stack's own serving process had read from storage (/proc/<pid>/io via the uma exporter)
    "serving_read_bytes": (agg("sum", R.PROCESS_READ_BYTES_RATE, 'process="{stack}"'), "optional"),
    # watts the GPUs drew (NVML's energy counter), for output tokens per joule; none without NVML energy
    "gpu_watts": (agg("sum", R.GPU_ENERGY_RATE), "optional"),
    "tier2_fetch_p95": ("histogram_quantile(0.95, sum by (le) (rate("
                        + sel(S.SIM_FETCH.name + "_bucket", 'tier="disk"') + "[30s])))", "optional"),
}


def scope(manifest: dict) -> str:
    """The matchers that keep a run's queries to its own rig. Its rig's Prometheus stores series without the
    rig label (external_labels are added only on the way out) and a fleet's store with it, so a series
    matches when it carries the run's rig or none: one query works against both. A run from before rigs
    were recorded matches every rig."""
    out = []
    for key in ("rig", "site"):
        value = manifest.get(key)
        # names are LABEL_VALUE ([A-Za-z0-9_.-]): only "." means something in a regex
        out.append(f'{key}=~"{value.replace(".", "[.]")}|"' if value else f'{key}=~".*"')
    return ",".join(out)


# the three sources whose alignment the gate checks, as raw samples (a range query would fill a scrape gap
# from 5 minutes of lookback): a selector, and the value a sample must have to count (None: any). A raw
# sample exists only for a scrape that succeeded; the KVBM exporter answers while KVBM does not, so kv
# counts the samples where its target was up.
ALIGNMENT = {"latency": (sel(S.LOADGEN_STEP.name, RUN), None),
             "sysmon": (sel(S.DISK_READS.total, KV2), None),
             "kv": (sel(S.KVBM_UP.name, f'target=~"{S.KV_SOURCE_TARGET_RE}"'), 1.0)}
# what each source is, for a gate's words when it is missing
ALIGNMENT_TARGETS = {"latency": "the load generator's metrics (loadgen job)",
                     "sysmon": "the nvme exporter's kv_tier2 disk series",
                     "kv": f"the KV tier counters ({S.KVBM_UP.name}{{target=~\"{S.KV_SOURCE_TARGET_RE}\"}}: KVBM "
                           "needs DYN_KVBM_METRICS=true on the worker, TensorRT-LLM's offload --publish-metrics; "
                           "either needs its metrics port reachable)"}


def raw_name(source: str) -> str:
    return f"raw_{source}"


def quote(value: str) -> str:
    """A label value inside a PromQL double-quoted string: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def pull(source: Source, manifest: dict, start: float, end: float, step: float,
         progress: Callable[[str], None] = lambda _m: None) -> dict[str, pd.DataFrame]:
    frames = {}
    where = scope(manifest)
    names = {"run_id": quote(manifest["run_id"]), "stack": quote(manifest.get("stack") or ""), "scope": where}
    for name, (template, _) in QUERIES.items():
        frames[name] = source.range(name, template.format(**names), start, end, step)
    for src, (template, _) in ALIGNMENT.items():
        frames[raw_name(src)] = source.samples(raw_name(src), template.format(**names), start, end)
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


def total(frames: dict, name: str, start: float, end: float) -> float:
    """Integral over the run of a per-second rate series (bytes/s -> bytes); nan without samples."""
    s = single(frames[name])
    s = s[(s.index >= start) & (s.index <= end)].dropna()
    return float(np.trapezoid(s.to_numpy(), s.index.to_numpy())) if len(s) > 1 else float("nan")
