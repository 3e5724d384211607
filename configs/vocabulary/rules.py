"""Recording rules and alerts over our series and the stacks', as data. ``prometheus/build.py`` writes them
to ``prometheus/rules/*.rules.yml`` (committed, checked current by a test, unit-tested with promtool);
dashboards and the analysis query the recorded names defined here.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import series as S
from . import stacks as V

# ---- recorded series --------------------------------------------------------------------------------
DISK_READS_RATE = "device:sparkrig_disk_reads:rate5s"
DISK_WRITES_RATE = "device:sparkrig_disk_writes:rate5s"
DISK_READ_BYTES_RATE = "device:sparkrig_disk_read_bytes:rate5s"
DISK_WRITTEN_BYTES_RATE = "device:sparkrig_disk_written_bytes:rate5s"
DISK_READ_AWAIT = "device:sparkrig_disk_read_await_seconds:rate5s"
DISK_WRITE_AWAIT = "device:sparkrig_disk_write_await_seconds:rate5s"
DISK_READ_REQUEST_BYTES = "device:sparkrig_disk_read_request_bytes:rate5s"
DISK_QUEUE_SIZE = "device:sparkrig_disk_queue_size:rate5s"
DISK_UTIL = "device:sparkrig_disk_util:ratio_rate5s"

TTFT_P50 = "run_stack_step:sparkrig_request_ttft_seconds:p50_rate30s"
TTFT_P95 = "run_stack_step:sparkrig_request_ttft_seconds:p95_rate30s"
TTFT_P99 = "run_stack_step:sparkrig_request_ttft_seconds:p99_rate30s"
E2E_P50 = "run_stack_step:sparkrig_request_e2e_seconds:p50_rate30s"
E2E_P95 = "run_stack_step:sparkrig_request_e2e_seconds:p95_rate30s"
E2E_P99 = "run_stack_step:sparkrig_request_e2e_seconds:p99_rate30s"
TTFT_P99_OVER_P50 = "run_stack_step:sparkrig_request_ttft_seconds:p99_over_p50_rate30s"
ITL_P50 = "run_stack_step:sparkrig_request_itl_seconds:p50_rate30s"
ITL_P99 = "run_stack_step:sparkrig_request_itl_seconds:p99_rate30s"
TPOT_P50 = "run_stack_step:sparkrig_request_tpot_seconds:p50_rate30s"
TPOT_P99 = "run_stack_step:sparkrig_request_tpot_seconds:p99_rate30s"
REQUESTS_FAILED_RATIO = "run_stack_step:sparkrig_requests_failed:ratio_rate30s"
FRONTEND_FAILURES_RATE = "stack:dynamo_frontend_failures:rate30s"

CPU_IOWAIT_RATIO = "instance:sparkrig_cpu_iowait:ratio_rate5s"
GPU_ENERGY_RATE = "instance:sparkrig_gpu_energy_joules:rate30s"     # watts, from NVML's energy counter
OUTPUT_TOKENS_PER_JOULE = "run_stack:sparkrig_request_output_tokens:per_joule_rate30s"
MEMORY_AVAILABLE_RATIO = "instance:sparkrig_memory_available:ratio"
MEMORY_USED = "instance:sparkrig_memory_used:bytes"
PRESSURE_IO_RATIO = "instance:sparkrig_pressure_io_waiting:ratio_rate30s"
PRESSURE_MEMORY_RATIO = "instance:sparkrig_pressure_memory_waiting:ratio_rate30s"
PROCESS_READ_BYTES_RATE = "process:sparkrig_process_read_bytes:rate5s"

KV_TRANSFER_BYTES_RATE = "tier:sparkrig_kv_transfer_bytes:rate5s"
KV_TIER2_FILE_BYTES_RATE = "direction:sparkrig_kv_tier2_file_bytes:rate5s"
KV_TRANSFER_BLOCKS_RATE = "tier:sparkrig_kv_transfer_blocks:rate5s"
KV_ONBOARD_SHARE = "tier:sparkrig_kv_onboard_share:ratio_rate30s"
KV_HIT_RATIO = "tier:sparkrig_kv_hit:ratio"
KV_PREFIX_HIT_RATIO = "instance:sparkrig_kv_prefix_hit:ratio_rate30s"


@dataclass(frozen=True)
class Rule:
    record: str
    expr: str
    comment: str = ""         # written above the rule


@dataclass(frozen=True)
class Alert:
    alert: str
    expr: str
    summary: str
    severity: str = "warning"
    for_: str = ""


@dataclass(frozen=True)
class RuleFile:
    stem: str                 # prometheus/rules/<stem>.rules.yml
    group: str
    header: str               # the file's leading comment
    rules: tuple


# The rules' two rate windows, as the monitoring mixins' rateInterval, each set once. RATE_WINDOW_S: the
# device and KV transfer rates (20 samples at the 250 ms cadence: close to `iostat -x 1` yet not noisy);
# a value needs this long inside a step to speak for it. LATENCY_WINDOW_S: the latency quantiles and the
# shares of slower counters; a value recorded at t covers (t - 30 s, t], so it speaks for one step only
# from 30 s into it (the analysis leaves it out of shorter steps).
RATE_WINDOW_S = 5
KNEE_RATIO = 2.0          # the test plan's knee: TTFT p99 over p50 (the analysis' rule, the alert, the dashboards)
LATENCY_WINDOW_S = 30
_FAST, _SLOW = f"[{RATE_WINDOW_S}s]", f"[{LATENCY_WINDOW_S}s]"


def _await(time: S.Series, count: S.Series) -> str:
    return f"rate({time.total}{_FAST}) / clamp_min(rate({count.total}{_FAST}), 1e-9)"


def _quantile(q: str, hist: S.Series) -> str:
    return (f"histogram_quantile({q}, sum by (run_id, hypothesis, stack, step, le) "
            f"(rate({hist.name}_bucket[{LATENCY_WINDOW_S}s])))")


_STEP = "run_id, hypothesis, stack, step"

FILES = (
    RuleFile("iostat", "sparkrig_iostat", f"""\
iostat -x equivalents from the nvme exporter's raw diskstats counters (sysstat's formulas).
Window {RATE_WINDOW_S}s: 20 samples at the 250 ms NVMe cadence, close to `iostat -x 1` yet not noisy.
r_await/w_await use clamp_min so an idle device reads 0 like iostat, not NaN.""", (
        Rule(DISK_READS_RATE, f"rate({S.DISK_READS.total}{_FAST})"),
        Rule(DISK_WRITES_RATE, f"rate({S.DISK_WRITES.total}{_FAST})"),
        Rule(DISK_READ_BYTES_RATE, f"rate({S.DISK_READ_BYTES.total}{_FAST})"),
        Rule(DISK_WRITTEN_BYTES_RATE, f"rate({S.DISK_WRITTEN_BYTES.total}{_FAST})"),
        Rule(DISK_READ_AWAIT, _await(S.DISK_READ_TIME, S.DISK_READS)),
        Rule(DISK_WRITE_AWAIT, _await(S.DISK_WRITE_TIME, S.DISK_WRITES)),
        Rule(DISK_READ_REQUEST_BYTES, _await(S.DISK_READ_BYTES, S.DISK_READS)),
        Rule(DISK_QUEUE_SIZE, f"rate({S.DISK_IO_WEIGHTED.total}{_FAST})"),
        Rule(DISK_UTIL, f"rate({S.DISK_IO_TIME.total}{_FAST})"),
    )),
    RuleFile("latency", "sparkrig_latency", """\
Request latency quantiles from the load generator's histograms, per run, stack and step, summed
over Locust worker processes; and the knee test's p99/p50 ratio.""", (
        Rule(TTFT_P50, _quantile("0.50", S.REQUEST_TTFT)),
        Rule(TTFT_P95, _quantile("0.95", S.REQUEST_TTFT)),
        Rule(TTFT_P99, _quantile("0.99", S.REQUEST_TTFT)),
        Rule(E2E_P50, _quantile("0.50", S.REQUEST_E2E)),
        Rule(E2E_P95, _quantile("0.95", S.REQUEST_E2E)),
        Rule(E2E_P99, _quantile("0.99", S.REQUEST_E2E)),
        Rule(ITL_P50, _quantile("0.50", S.REQUEST_ITL)),
        Rule(ITL_P99, _quantile("0.99", S.REQUEST_ITL)),
        Rule(TPOT_P50, _quantile("0.50", S.REQUEST_TPOT)),
        Rule(TPOT_P99, _quantile("0.99", S.REQUEST_TPOT)),
        Rule(TTFT_P99_OVER_P50, f"{TTFT_P99}\n  / clamp_min({TTFT_P50}, 1e-9)"),
        Rule(REQUESTS_FAILED_RATIO,
             f'sum by ({_STEP}) (rate({S.REQUESTS.total}{{error_class!=""}}{_SLOW}))\n'
             f"  / (sum by ({_STEP}) (rate({S.REQUESTS.total}{_SLOW})) > 0)",
             "share of requests that failed, as the client saw them: HTTP errors and failures that arrive with\n"
             "HTTP 200 (an SSE error event mid-stream, a cut stream) alike"),
        Rule(FRONTEND_FAILURES_RATE, f"sum by (stack, class) (rate({V.FE_FAILURES}_total{_SLOW}))",
             "the Dynamo frontend's own failures by class: a 400 (InvalidRequest) is counted only here, never\n"
             "in its requests_total"),
    )),
    RuleFile("host", "sparkrig_host", "Host and unified memory: the CPU iowait share (H8) and UMA headroom.", (
        Rule(CPU_IOWAIT_RATIO, f'sum by (instance) (rate({S.CPU_SECONDS.total}{{mode="iowait"}}{_FAST}))\n'
                               f"  / clamp_min(sum by (instance) (rate({S.CPU_SECONDS.total}{_FAST})), 1e-9)"),
        Rule(MEMORY_AVAILABLE_RATIO, f"{S.MEM_AVAILABLE.name} / {S.MEM_TOTAL.name}"),
        Rule(MEMORY_USED, f"{S.MEM_TOTAL.name} - {S.MEM_AVAILABLE.name}"),
        Rule(PRESSURE_IO_RATIO, f"rate({S.PRESSURE_IO_WAITING.total}{_SLOW})"),
        Rule(PRESSURE_MEMORY_RATIO, f"rate({S.PRESSURE_MEMORY_WAITING.total}{_SLOW})"),
        Rule(PROCESS_READ_BYTES_RATE, f"sum by (instance, process) (rate({S.PROCESS_READ_BYTES.total}{_FAST}))",
             "bytes the serving processes themselves had read from storage: what backs a KV-from-disk claim"),
        Rule(GPU_ENERGY_RATE, f"sum by (instance) (rate({S.GPU_ENERGY.total}{_SLOW}))",
             "the GPUs' power from NVML's energy counter (joules per second): what output tokens per joule\n"
             "divide by; none where NVML has no energy counter"),
        Rule(OUTPUT_TOKENS_PER_JOULE,
             f"sum by (run_id, stack) (rate({S.OUTPUT_TOKENS.total}{_SLOW}))\n"
             f"  / on() group_left() sum({GPU_ENERGY_RATE})",
             "output tokens per joule of the GPUs: the load generator's served output tokens over every GPU's\n"
             "power (one stack served at a time on a rig); none where NVML has no energy counter, never a 0"),
    )),
    RuleFile("kv", "sparkrig_kv", """\
KV tiers from the kvbm exporter's normalised series: bytes and blocks per second per tier pair,
and each source tier's share of the blocks onboarded to the device (how often a hit came from disk).""", (
        Rule(KV_TRANSFER_BYTES_RATE, f"sum by (instance, {', '.join(S.PAIR)}) "
                                     f"(rate({S.KV_TRANSFER_BYTES.total}{_FAST}))"),
        Rule(KV_TIER2_FILE_BYTES_RATE, f"sum by (instance, direction) (rate({S.KV_TIER2_FILE_BYTES.total}{_FAST}))",
             "bytes a target really moved through its tier2 file, where it states them (the simulator)"),
        Rule(KV_TRANSFER_BLOCKS_RATE, f"sum by (instance, {', '.join(S.PAIR)}) "
                                      f"(rate({S.KV_TRANSFER_BLOCKS.total}{_FAST}))"),
        Rule(KV_ONBOARD_SHARE,
             f'sum by (instance, from_tier) (rate({S.KV_TRANSFER_BLOCKS.total}{{direction="onboard"}}{_SLOW}))\n'
             f"  / ignoring (from_tier) group_left ()\n"
             f'(sum by (instance) (rate({S.KV_TRANSFER_BLOCKS.total}{{direction="onboard"}}{_SLOW})) > 0)',
             "no sample while nothing is onboarded: a share of nothing is no signal, not a 0 % share"),
        Rule(KV_HIT_RATIO, f"max by (instance, tier) ({S.KV_HIT_RATIO.name})"),
        Rule(KV_PREFIX_HIT_RATIO, f"sum by (instance) (rate({S.KV_PREFIX_CACHED_TOKENS.total}{_SLOW}))\n"
                                  f"  / (sum by (instance) (rate({S.KV_PROMPT_TOKENS.total}{_SLOW})) > 0)",
             "share of prompt tokens the engine served from its prefix cache (Dynamo frontend cached_tokens);\n"
             "no sample while no prompt finished"),
    )),
    RuleFile("alerts", "sparkrig_alerts", "", (
        Alert("SparkrigTargetDown", 'up{job=~"sparkrig-.*|stack-.*|kvbm"} == 0',
              "{{ $labels.job }} at {{ $labels.instance }} is not answering scrapes", for_="30s"),
        Alert("KvbmMetricsDown", f"{S.KVBM_UP.name} == 0",
              "the kvbm exporter cannot read {{ $labels.target }}: KV tier evidence for Stack B is missing", for_="30s"),
        Alert("KvTier2PathMissing", f"{S.TIER2_PATH_EXISTS.name} == 0",
              "the KV tier2 directory does not exist: the kv_tier2 disk is its parent's, a guess; create it on "
              "the NVMe (sparkrig doctor)", for_="1m"),
        Alert("KvTier2DiskNearlyFull", f"{S.TIER2_FS_AVAIL.name} / {S.TIER2_FS_SIZE.name} < 0.10",
              "filesystem of the KV tier2 directory has under 10% free", for_="1m"),
        Alert("NvmeTemperatureAboveWarning", f"{S.NVME('temperature_celsius')} >= on (instance, device) "
                                             f"{S.NVME('temperature_warning_celsius')}",
              "{{ $labels.device }} at {{ $value }} C, over its warning threshold: expect throttled I/O", for_="30s"),
        Alert("NvmeThermalThrottling", f"increase({S.NVME('warning_temperature_time_seconds')}_total[5m]) > 0 or "
                                       f"(floor({S.NVME('critical_warning')} / 2) % 2) == 1",
              "{{ $labels.device }} reports time above its temperature threshold: latency numbers are suspect"),
        Alert("MemoryPressureSustained", f"rate({S.PRESSURE_MEMORY_WAITING.total}[1m]) > 0.10",
              "tasks stalled on memory over 10% of the time for 2 minutes (PSI)", for_="2m"),
        Alert("LatencyKneeReached", f"{TTFT_P99_OVER_P50} > {KNEE_RATIO:g}",
              f"{{{{ $labels.stack }}}} step {{{{ $labels.step }}}}: TTFT p99 > {KNEE_RATIO:g} x p50 for a minute "
              "(queue knee)",
              severity="info", for_="1m"),
    )),
)
