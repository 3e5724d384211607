"""Our own series: what the exporters, the load generator and the simulator publish, with type, help and
labels, defined once. Counters are named without ``_total`` (prometheus_client adds it on the wire;
``Series.total`` is the name PromQL sees). Families whose names follow what the kernel lists
(meminfo fields, vmstat counters, PSI resources, NVMe health fields, NVML fields) are a ``Prefix``.
"""
from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


# the tag of every Grafana annotation the load generator posts (a step's start); the dashboards show them by it
ANNOTATION_TAG = "sparkrig"


@dataclass(frozen=True)
class Series:
    name: str
    kind: str                    # counter | gauge | histogram
    help: str
    labels: tuple[str, ...] = ()

    @property
    def total(self) -> str:
        """The sample name a query uses: ``_total`` for counters, ``_bucket`` etc. are added by the caller."""
        return self.name + "_total" if self.kind == "counter" else self.name

    def family(self, value: float | None = None, labels: tuple[str, ...] | None = None, help: str | None = None):
        """A prometheus_client family for a custom collector (``labels`` when a collector adds its own)."""
        cls = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        if value is not None:
            return cls(self.name, help or self.help, value)
        return cls(self.name, help or self.help, labels=list(self.labels if labels is None else labels))


@dataclass(frozen=True)
class Prefix:
    """Families named ``prefix + field``. With ``fields`` (field -> help) only those exist, and asking for
    another is an error at import time, not an empty panel later."""
    prefix: str
    fields: dict | None = None

    def __call__(self, field: str) -> str:
        if self.fields is not None and field not in self.fields:
            raise KeyError(f"{self.prefix}{field} is not a series we publish")
        return self.prefix + field


RUN_LABELS = ("run_id", "hypothesis", "stack", "workload", "worker")
STEP_LABELS = RUN_LABELS + ("step",)
PAIR = ("direction", "from_tier", "to_tier")

# ---- load generator (locustfiles/lib/metrics.py) ----------------------------------------------------
def geometric_buckets(low: float, high: float, ratio: float = 1.2) -> tuple[float, ...]:
    out, b = [], low
    while b < high:
        out.append(round(b, 6))
        b *= ratio
    return tuple(out) + (high,)


# at most 1.2x apart, so a histogram p99 is within 20 % and a dashboard can read a share under a bound
LATENCY_BUCKETS = geometric_buckets(0.005, 120.0)     # TTFT, E2E
GAP_BUCKETS = geometric_buckets(0.0005, 10.0)         # ITL, TPOT
REQUEST_TTFT = Series("sparkrig_request_ttft_seconds", "histogram", "Time to first text token", STEP_LABELS)
REQUEST_E2E = Series("sparkrig_request_e2e_seconds", "histogram", "Request end to end", STEP_LABELS)
REQUEST_ITL = Series("sparkrig_request_itl_seconds", "histogram", "Gap between text chunks", STEP_LABELS)
REQUEST_TPOT = Series("sparkrig_request_tpot_seconds", "histogram",
                      "Time per output token after the first: (E2E - TTFT) / (output tokens - 1)", STEP_LABELS)
OUTPUT_TOKENS = Series("sparkrig_request_output_tokens", "counter",
                       "Output tokens of served requests (the server's usage.completion_tokens)", STEP_LABELS)
REQUESTS = Series("sparkrig_requests", "counter", "Requests by HTTP status and error class",
                  STEP_LABELS + ("status", "error_class"))
LOADGEN_USERS = Series("sparkrig_loadgen_active_users", "gauge", "Locust users running in this process", RUN_LABELS)
LOADGEN_STEP = Series("sparkrig_loadgen_step", "gauge", "Index of the current step", RUN_LABELS)
LOADGEN_CONCURRENCY = Series("sparkrig_loadgen_target_concurrency", "gauge", "Target concurrency of the current step",
                             RUN_LABELS)
LOADGEN_CONTEXT = Series("sparkrig_loadgen_target_context_tokens", "gauge", "Target context of the current step",
                         RUN_LABELS)
LOADGEN_RATE = Series("sparkrig_loadgen_target_arrival_rate", "gauge", "Target arrival rate of the current step in "
                      "requests per second (0: closed loop)", RUN_LABELS)

# ---- every exporter (exporters/scrape.py: node_exporter's node_scrape_collector_*) -------------------
SCRAPE_COLLECTOR_SUCCESS = Series("sparkrig_scrape_collector_success", "gauge",
                                  "1 when the collector's last scrape succeeded (0: its series are left out)",
                                  ("collector",))
SCRAPE_COLLECTOR_DURATION = Series("sparkrig_scrape_collector_duration_seconds", "gauge",
                                   "Time the collector's last scrape took", ("collector",))
PROCFS_PARSE_ERRORS = Series("sparkrig_procfs_parse_errors", "counter",
                             "Damaged lines of a procfs file skipped (the file's other lines are read)", ("file",))

# ---- nvme exporter (/proc/diskstats, node_exporter's node_disk_* semantics) -------------------------
DISK_LABELS = ("device", "role")
# (diskstats field, metric name, help, scale): counters
DISK_COUNTERS = (
    ("reads_completed", "reads_completed", "Reads completed", 1),
    ("reads_merged", "reads_merged", "Reads merged", 1),
    ("sectors_read", "read_bytes", "Bytes read", 512),
    ("read_time_ms", "read_time_seconds", "Time spent reading", 1e-3),
    ("writes_completed", "writes_completed", "Writes completed", 1),
    ("writes_merged", "writes_merged", "Writes merged", 1),
    ("sectors_written", "written_bytes", "Bytes written", 512),
    ("write_time_ms", "write_time_seconds", "Time spent writing", 1e-3),
    ("io_time_ms", "io_time_seconds", "Time the device had I/O in flight", 1e-3),
    ("io_weighted_time_ms", "io_time_weighted_seconds", "In-flight I/O count integrated over time", 1e-3),
    ("discards_completed", "discards_completed", "Discards completed", 1),
    ("discards_merged", "discards_merged", "Discards merged", 1),
    ("sectors_discarded", "discarded_sectors", "Sectors discarded", 1),
    ("discard_time_ms", "discard_time_seconds", "Time spent discarding", 1e-3),
    ("flushes_completed", "flush_requests", "Flush requests completed", 1),
    ("flush_time_ms", "flush_requests_time_seconds", "Time spent flushing", 1e-3),
)
DISK = Prefix("sparkrig_disk_", {name: doc for _f, name, doc, _s in DISK_COUNTERS})


def _disk(name: str) -> Series:
    return Series(DISK(name), "counter", DISK.fields[name], DISK_LABELS)


DISK_READS, DISK_WRITES = _disk("reads_completed"), _disk("writes_completed")
DISK_READ_BYTES, DISK_WRITTEN_BYTES = _disk("read_bytes"), _disk("written_bytes")
DISK_READ_TIME, DISK_WRITE_TIME = _disk("read_time_seconds"), _disk("write_time_seconds")
DISK_IO_TIME, DISK_IO_WEIGHTED = _disk("io_time_seconds"), _disk("io_time_weighted_seconds")
DISK_IO_NOW = Series("sparkrig_disk_io_now", "gauge", "I/Os currently in flight", DISK_LABELS)
DISK_INFO = Series("sparkrig_disk_info", "gauge", "Device identity (serial hashed)",
                   ("device", "model", "serial_sha256", "firmware", "rotational"))
DISK_SIZE = Series("sparkrig_disk_size_bytes", "gauge", "Device capacity", ("device",))
DISK_ROLE_INFO = Series("sparkrig_disk_role_info", "gauge", "Roles a disk plays for the rig", DISK_LABELS)
TIER2_FS_SIZE = Series("sparkrig_kv_tier2_filesystem_size_bytes", "gauge",
                       "Size of the filesystem holding the KV tier2 directory")
TIER2_FS_AVAIL = Series("sparkrig_kv_tier2_filesystem_avail_bytes", "gauge",
                        "Space unprivileged writers can still use there")
TIER2_PATH_EXISTS = Series("sparkrig_kv_tier2_path_exists", "gauge",
                           "1 when the KV tier2 directory exists; 0: not yet, and kv_tier2 marks the disk of its "
                           "nearest existing parent, where it would be created")

# ---- NVMe health log (smartctl / nvme-cli), one family per field, labelled by device -----------------
NVME_HEALTH_COUNTERS = frozenset({"data_read_bytes", "data_written_bytes", "media_errors", "error_log_entries",
                                  "unsafe_shutdowns", "warning_temperature_time_seconds",
                                  "critical_temperature_time_seconds"})
NVME = Prefix("sparkrig_nvme_", {
    "critical_warning": "Critical warning bitmask (0 = none)",
    "available_spare_ratio": "Remaining spare capacity",
    "available_spare_threshold_ratio": "Spare capacity below which the drive warns",
    "percentage_used_ratio": "Vendor estimate of endurance used (may exceed 1)",
    "data_read_bytes": "Host data read (data units x 512000)",
    "data_written_bytes": "Host data written (data units x 512000)",
    "media_errors": "Unrecovered data integrity errors",
    "error_log_entries": "Error information log entries",
    "unsafe_shutdowns": "Unsafe shutdowns",
    "warning_temperature_time_seconds": "Time above the warning composite temperature",
    "critical_temperature_time_seconds": "Time above the critical composite temperature",
    "temperature_celsius": "Composite temperature",
    "temperature_warning_celsius": "Warning composite temperature threshold (WCTEMP)",
    "temperature_critical_celsius": "Critical composite temperature threshold (CCTEMP)",
})
NVME_SMART_UP = Series("sparkrig_nvme_smart_up", "gauge", "1 when the device's health log was read", ("device",))

# ---- uma exporter (/proc/meminfo, vmstat, pressure, stat; serving processes) -------------------------
MEMORY = Prefix("sparkrig_memory_")            # + each /proc/meminfo field: <Field>_bytes (HugePages_* counts)
MEM_AVAILABLE = Series(MEMORY("MemAvailable_bytes"), "gauge", "MemAvailable from /proc/meminfo")
MEM_TOTAL = Series(MEMORY("MemTotal_bytes"), "gauge", "MemTotal from /proc/meminfo")
MEM_CACHED = Series(MEMORY("Cached_bytes"), "gauge", "Cached from /proc/meminfo")
MEM_DIRTY = Series(MEMORY("Dirty_bytes"), "gauge", "Dirty from /proc/meminfo")
VMSTAT_COUNTERS = ("pgmajfault", "pgfault", "pgpgin", "pgpgout", "pswpin", "pswpout", "workingset_refault",
                   "workingset_refault_anon", "workingset_refault_file", "oom_kill")
VMSTAT = Prefix("sparkrig_vmstat_", {f: f"{f} from /proc/vmstat" for f in VMSTAT_COUNTERS})
VM_MAJOR_FAULTS = Series(VMSTAT("pgmajfault"), "counter", VMSTAT.fields["pgmajfault"])
VM_REFAULTS = Series(VMSTAT("workingset_refault_file"), "counter", VMSTAT.fields["workingset_refault_file"])
PSI_RESOURCES = ("cpu", "io", "memory")
PSI_KINDS = (("some", "waiting"), ("full", "stalled"))      # PSI's word, ours in the series name
PRESSURE = Prefix("sparkrig_pressure_", {f"{r}_{suffix}_seconds": f"PSI {kind} total for {r}"
                                          for r in PSI_RESOURCES for kind, suffix in PSI_KINDS})
PRESSURE_UP = Series("sparkrig_pressure_up", "gauge", "1 when /proc/pressure (PSI) is readable")
PRESSURE_AVG10 = Series("sparkrig_pressure_avg10_ratio", "gauge", "PSI share of the last 10 s", ("resource", "kind"))
PRESSURE_IO_WAITING = Series(PRESSURE("io_waiting_seconds"), "counter", PRESSURE.fields["io_waiting_seconds"])
PRESSURE_MEMORY_WAITING = Series(PRESSURE("memory_waiting_seconds"), "counter",
                                 PRESSURE.fields["memory_waiting_seconds"])
CPU_SECONDS = Series("sparkrig_cpu_seconds", "counter", "CPU time summed over all CPUs", ("mode",))
CPU_COUNT = Series("sparkrig_cpu_count", "gauge", "Online CPUs")
PROCESS_RSS = Series("sparkrig_process_resident_memory_bytes", "gauge", "RSS of matching processes", ("process",))
PROCESS_COUNT = Series("sparkrig_process_count", "gauge", "Number of matching processes", ("process",))
# /proc/<pid>/io read_bytes / write_bytes: what the process itself caused the storage layer to move. Bytes the
# rig may attribute to a serving process, where device-wide counters move for every reader of the disk.
PROCESS_READ_BYTES = Series("sparkrig_process_read_bytes", "counter",
                            "Bytes matching processes caused to be read from storage (/proc/<pid>/io)", ("process",))
PROCESS_WRITTEN_BYTES = Series("sparkrig_process_written_bytes", "counter",
                               "Bytes matching processes caused to be written to storage (/proc/<pid>/io)",
                               ("process",))
PROCESS_GPU_MEMORY = Series("sparkrig_process_gpu_memory_bytes", "gauge",
                            "GPU memory NVML attributes to matching processes (part of UMA on GB10)", ("process",))

# ---- gpu exporter (NVML) -----------------------------------------------------------------------------
GPU_LABELS = ("gpu", "uuid")
GPU_UP = Series("sparkrig_gpu_up", "gauge", "1 when NVML answers and sees at least one GPU")
GPU_ENERGY = Series("sparkrig_gpu_energy_joules", "counter", "Energy used since the driver loaded", GPU_LABELS)
GPU_INFO = Series("sparkrig_gpu_info", "gauge", "GPU identity", GPU_LABELS + ("name", "driver_version"))
GPU_UTILIZATION = Series("sparkrig_gpu_utilization_ratio", "gauge", "Share of time a kernel ran", GPU_LABELS)
GPU_MEMORY_UTILIZATION = Series("sparkrig_gpu_memory_utilization_ratio", "gauge",
                                "Share of time device memory was read or written", GPU_LABELS)
GPU_MEMORY_TOTAL = Series("sparkrig_gpu_memory_total_bytes", "gauge", "Device memory (absent on unified-memory GPUs)",
                          GPU_LABELS)
GPU_MEMORY_USED = Series("sparkrig_gpu_memory_used_bytes", "gauge", "Device memory in use", GPU_LABELS)
GPU_POWER = Series("sparkrig_gpu_power_watts", "gauge", "Board power draw", GPU_LABELS)
GPU_TEMPERATURE = Series("sparkrig_gpu_temperature_celsius", "gauge", "GPU die temperature", GPU_LABELS)
GPU_SM_CLOCK = Series("sparkrig_gpu_sm_clock_hertz", "gauge", "SM clock", GPU_LABELS)
GPU_MEMORY_CLOCK = Series("sparkrig_gpu_memory_clock_hertz", "gauge", "Memory clock", GPU_LABELS)
GPU_PCIE_TX = Series("sparkrig_gpu_pcie_tx_bytes_per_second", "gauge", "PCIe transmit throughput (20 ms sample)",
                     GPU_LABELS)
GPU_PCIE_RX = Series("sparkrig_gpu_pcie_rx_bytes_per_second", "gauge", "PCIe receive throughput (20 ms sample)",
                     GPU_LABELS)
GPU_THROTTLE = Series("sparkrig_gpu_throttle_reason", "gauge", "1 while this clock-limiting reason is active",
                      GPU_LABELS + ("reason",))
GPU_PROCESS_MEMORY = Series("sparkrig_gpu_process_memory_bytes", "gauge", "GPU memory used by a process",
                            GPU_LABELS + ("pid",))
GPU_FIELD_SUPPORTED = Series("sparkrig_gpu_field_supported", "gauge",
                             "0 for fields NVML answers NOT_SUPPORTED on this GPU", GPU_LABELS + ("field",))

# ---- kvbm exporter (KVBM, frontend and worker scraped and normalised) --------------------------------
KVBM_UP = Series("sparkrig_kvbm_up", "gauge", "1 when the last scrape of the target succeeded", ("target",))
# the target whose counters say what moved between the KV tiers, per offload: KVBM's listener, or under
# TensorRT-LLM's native offload the engines themselves ("engine", then "engine-1", ... one per worker)
KV_SOURCE_TARGETS = {"kvbm": "kvbm", "trtllm": "engine"}
KV_SOURCE_TARGET_RE = "kvbm|engine(-[0-9]+)?"
KVBM_SCRAPE_DURATION = Series("sparkrig_kvbm_scrape_duration_seconds", "gauge",
                              "Time the last scrape of the target took", ("target",))
KVBM_SCRAPE_ERRORS = Series("sparkrig_kvbm_scrape_errors", "counter", "Failed scrapes by target and reason",
                            ("target", "reason"))
KVBM_SCRAPE_OVERLAPS = Series("sparkrig_kvbm_scrape_overlaps", "counter", "Scrapes answered with the previous result "
                              "because the one before was still reading its targets")
KVBM_COUNTER_RESETS = Series("sparkrig_kvbm_counter_resets", "counter", "Source counters seen going backwards "
                             "(restarts); republished counters continue from where they were")
KV_BLOCK_SIZE_BYTES = Series("sparkrig_kv_block_size_bytes", "gauge", "KV block size used to turn blocks into bytes, "
                             "and where it came from (target, model_shape, profile)", ("source",))
KV_BLOCK_SIZE_TOKENS = Series("sparkrig_kv_block_size_tokens", "gauge", "Tokens per KV block (served by the "
                              "frontend where it publishes it, else the profile's)")
KV_TRANSFER_BLOCKS = Series("sparkrig_kv_transfer_blocks", "counter", "KV blocks moved between tiers", PAIR)
KV_TRANSFER_BYTES = Series("sparkrig_kv_transfer_bytes", "counter", "KV bytes moved between tiers (blocks x block "
                           "size; measured bytes for object/remote tiers)", PAIR)
KV_ONBOARDING_REQUESTS = Series("sparkrig_kv_onboarding_requests", "gauge", "Requests waiting on pending KV "
                                "onboard transfers (KVBM's scheduler_onboarding, releases after 1.6.1)")
KV_HIT_RATIO = Series("sparkrig_kv_hit_ratio", "gauge", "Sliding-window hit ratio per tier", ("tier",))
KV_TRANSFER_REQUESTS = Series("sparkrig_kv_transfer_requests", "counter", "Offload/onboard requests (older releases)",
                              ("direction",))
KV_TRANSFER_FAILURES = Series("sparkrig_kv_transfer_failures", "counter", "Failed tier transfers (blocks)",
                              ("tier", "op"))
KV_TIER2_FILE_BYTES = Series("sparkrig_kv_tier2_file_bytes", "counter", "Bytes the target really moved through its "
                             "tier2 file (where it states them): the evidence behind KVBM's disk counters",
                             ("direction",))
KV_MATCHED_TOKENS = Series("sparkrig_kv_matched_tokens", "counter", "Prompt tokens matched in KVBM tiers")
KV_TIER_OCCUPANCY = Series("sparkrig_kv_tier_occupancy_blocks", "gauge", "KV tier occupancy in blocks", ("tier",))
KV_TIER_CAPACITY = Series("sparkrig_kv_tier_capacity_blocks", "gauge", "KV tier capacity in blocks", ("tier",))
KV_TIER_USAGE = Series("sparkrig_kv_tier_usage_ratio", "gauge", "Used share of a tier's KV blocks, as the engine "
                       "reports it", ("tier",))
KV_PREFIX_CACHED_TOKENS = Series("sparkrig_kv_prefix_cached_tokens", "counter", "Prompt tokens the engine served "
                                 "from its prefix cache (Dynamo frontend cached_tokens)")
KV_PROMPT_TOKENS = Series("sparkrig_kv_prompt_tokens", "counter", "Prompt tokens of finished requests (Dynamo "
                          "frontend input_sequence_tokens)")

# ---- the simulator's own series (beside the real stacks' names it serves) ----------------------------
SIM_HTTP_REQUESTS = Series("stacksim_http_requests", "counter", "HTTP requests by endpoint and status code",
                           ("endpoint", "code"))
SIM_REJECTED = Series("stacksim_rejected_requests", "counter", "Requests the engine refused", ("reason",))
SIM_LORA_LOADS = Series("stacksim_lora_loads", "counter", "LoRA adapter loads", ("kind",))
SIM_FETCH = Series("stacksim_kv_tier_fetch_seconds", "histogram", "Onboarding time per request and tier", ("tier",))
SIM_OCCUPANCY = Series("stacksim_kv_tier_occupancy_blocks", "gauge", "Blocks held per tier", ("tier",))
SIM_CAPACITY = Series("stacksim_kv_tier_capacity_blocks", "gauge", "Block capacity per tier", ("tier",))
SIM_BLOCK_BYTES = Series("stacksim_kv_block_size_bytes", "gauge", "Bytes of one KV block in the tier2 file")
SIM_PINNED = Series("stacksim_kv_pinned_blocks", "gauge", "Device blocks pinned by running sequences")
SIM_TIER2_IO = Series("stacksim_kv_tier2_io_bytes", "counter", "Bytes moved by tier2 file I/O", ("direction",))
SIM_TIER2_EVICTED = Series("stacksim_kv_tier2_evicted_blocks", "counter", "Blocks dropped from tier2")
SIM_TIER2_ERRORS = Series("stacksim_kv_tier2_errors", "counter", "Failed tier2 I/O", ("op",))
