"""The configuration model every component reads: models, stacks, profiles, fio profiles, hypotheses.

Values live only in the YAML files next to this module (or a user's overlay); this
module holds types and range checks, never numbers of its own.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Optional, Union, get_args

from . import checks
from .checks import FieldError
from .paths import dedicated_dir
from .schema import ByteSize

EvictionPolicy = Literal["lru", "lfu", "segmented"]
WorkloadClass = Literal["fixed_context", "sessioned_chat", "lora_churn", "rehydrate_replay", "trace_replay"]
ChurnMode = Literal["uniform", "hot_cold", "round_robin"]
CacheState = Literal["cold", "warm"]
ArrivalProcess = Literal["poisson", "constant"]
# Workloads whose next request does not depend on the previous answer: the ones an open loop can drive.
OPEN_LOOP_WORKLOADS = ("fixed_context", "trace_replay")
# KVBM tier modes of Stack B (the later harness' names): B0 no KVBM at all, B1 CPU (host) tier only,
# B2 CPU + SSD tiers. Operators also write them as off / cpu_only / cpu_disk.
TIER_MODES = ("B0", "B1", "B2")
TIER_MODE_ALIASES = {"off": "B0", "cpu_only": "B1", "cpu_disk": "B2"}


def tier_mode(value: str, key: str = "tier_mode") -> str:
    """``B0``/``B1``/``B2`` from any accepted spelling; a FieldError naming ``key`` otherwise."""
    mode = TIER_MODE_ALIASES.get(str(value).strip().lower(), str(value).strip().upper())
    if mode not in TIER_MODES:
        raise FieldError(key, f"expected one of {', '.join(TIER_MODES)} (or {', '.join(TIER_MODE_ALIASES)}), "
                              f"got {value!r}")
    return mode


def _check(cond: bool, key: str, message: str) -> None:
    """A range check on the field ``key``: its error names that key, so it is blamed on the file that set it."""
    if not cond:
        raise FieldError(key, message)


@dataclass(frozen=True)
class ModelShape:
    """The attention shape that fixes how many bytes one token of KV cache takes (Hugging Face
    config.json names in the comments); a real rig's KV bytes are derived from it, not assumed."""
    layers: int                   # num_hidden_layers
    kv_heads: int                 # num_key_value_heads
    head_dim: int                 # head_dim (hidden_size / num_attention_heads)
    attention_heads: int          # num_attention_heads
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    kv_cache_dtype_bytes: int = 2  # 2 for bf16/fp16 KV, 1 for an FP8 KV cache

    def __post_init__(self):
        for name in ("layers", "kv_heads", "head_dim", "attention_heads", "hidden_size", "intermediate_size",
                     "vocab_size", "max_position_embeddings"):
            _check(getattr(self, name) > 0, name, "must be positive")
        _check(self.kv_cache_dtype_bytes in (1, 2, 4), "kv_cache_dtype_bytes", "must be 1, 2 or 4")

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V for every layer and KV head."""
        return self.layers * self.kv_heads * self.head_dim * 2 * self.kv_cache_dtype_bytes

    def kv_block_bytes(self, block_tokens: int) -> int:
        return self.kv_bytes_per_token * block_tokens


@dataclass(frozen=True)
class ModelSpec:
    handle: str
    description: str = ""
    shape: Optional[ModelShape] = None
    # A local directory holding the model's Hugging Face tokenizer (tokenizer.json): prompts are then
    # sized with the real tokenizer instead of being calibrated from the server's usage counts.
    tokenizer: Optional[str] = None


@dataclass(frozen=True)
class StackSpec:
    description: str
    server: Literal["trtllm", "dynamo"]
    openai_base: str
    metrics_url: str
    model: str
    kv_tiering: bool
    kvbm_metrics_url: Optional[str] = None
    # The serving workers' own metrics (Dynamo's system port, DYN_SYSTEM_PORT): KV usage, queue. One URL,
    # or a list with one per worker behind the frontend (each is scraped).
    worker_metrics_url: Union[str, list[str], None] = None
    # How the frontend spreads requests over its workers (Dynamo's --router-mode), as the deployment runs
    # it; recorded with each run so that H5's reuse is read per router mode. None: not said.
    router_mode: Optional[Literal["round-robin", "random", "kv"]] = None
    # Who moves Stack B's KV between its tiers: Dynamo's KVBM (its own metrics listener, kvbm_metrics_url), or
    # TensorRT-LLM's native offload that succeeds it (kv_cache_config host/disk tiers; its trtllm_ metrics on
    # the worker's system port under Dynamo, on /prometheus/metrics under trtllm-serve). B0/B1/B2 are the same
    # tiers in both; `python -m configs.tier_env` prints the setup for either.
    kv_offload: Literal["kvbm", "trtllm"] = "kvbm"

    def __post_init__(self):
        for name in ("openai_base", "metrics_url", "kvbm_metrics_url"):
            if getattr(self, name) is not None:
                checks.http_url(getattr(self, name), name)
        for url in self.worker_urls:
            checks.http_url(url, "worker_metrics_url")
        _check(len(set(self.worker_urls)) == len(self.worker_urls), "worker_metrics_url", "lists a URL twice")
        _check(not self.kv_tiering or self.kv_offload != "kvbm" or self.kvbm_metrics_url is not None,
               "kvbm_metrics_url", "a stack with kv_tiering through KVBM needs kvbm_metrics_url")
        _check(not self.kv_tiering or self.kv_offload != "trtllm" or bool(self.kv_metrics_urls), "worker_metrics_url",
               "kv_offload: trtllm under Dynamo reads TensorRT-LLM's KV metrics from the worker's system port: "
               "give worker_metrics_url")

    @property
    def worker_urls(self) -> tuple[str, ...]:
        w = self.worker_metrics_url
        return () if w is None else (w,) if isinstance(w, str) else tuple(w)

    @property
    def kv_metrics_urls(self) -> tuple[str, ...]:
        """Where this stack's KV tier counters are read: KVBM's listener, or the engines' own metrics."""
        if not self.kv_tiering:
            return ()
        if self.kv_offload == "kvbm":
            return (self.kvbm_metrics_url,) if self.kvbm_metrics_url else ()
        return self.worker_urls if self.server == "dynamo" else (self.metrics_url,)

    @property
    def simulated_worker_url(self) -> Optional[str]:
        """The embedded simulator serves one worker behind its frontend."""
        _check(len(self.worker_urls) <= 1, "worker_metrics_url", "the simulator serves one worker: give one URL")
        return self.worker_urls[0] if self.worker_urls else None


@dataclass(frozen=True)
class Profile:
    description: str
    tier0_bytes: ByteSize
    tier1_bytes: ByteSize
    tier2_bytes: ByteSize
    kv_block_size_bytes: ByteSize
    kv_block_size_tokens: int
    tier2_path: str
    eviction_policy: EvictionPolicy = "lru"
    prefetch_enable: bool = False
    prefetch_depth: int = 0
    telemetry_cadence_ms: int = 200
    # KVBM's CPU->disk offload filter (on by default in KVBM: a block reaches the disk only on its second
    # offload within 600 s; stacksim/offload_filter.py). False: DYN_KVBM_DISABLE_DISK_OFFLOAD_FILTER=true.
    disk_offload_filter: bool = True

    def __post_init__(self):
        _check(self.kv_block_size_bytes > 0, "kv_block_size_bytes", "must be positive")
        _check(self.kv_block_size_tokens > 0, "kv_block_size_tokens", "must be positive")
        _check(self.tier0_bytes >= self.kv_block_size_bytes, "tier0_bytes", "must hold at least one KV block")
        _check(self.prefetch_depth >= 0, "prefetch_depth", "must not be negative")
        _check(self.telemetry_cadence_ms > 0, "telemetry_cadence_ms", "must be positive")
        dedicated_dir(self.tier2_path, "tier2_path")


@dataclass(frozen=True)
class FioProfile:
    description: str
    rw: Literal["randrw", "randread", "randwrite", "read", "write", "rw"]
    bs: ByteSize
    iodepth: int
    numjobs: int
    size: ByteSize
    rwmixread: int = 70
    rate_iops: Optional[int] = None
    ioengine: str = "libaio"
    direct: bool = True

    def __post_init__(self):
        _check(0 <= self.rwmixread <= 100, "rwmixread", "must be within 0..100")
        _check(self.iodepth > 0, "iodepth", "must be positive")
        _check(self.numjobs > 0, "numjobs", "must be positive")
        _check(self.bs > 0, "bs", "must be positive")
        _check(self.size >= self.bs, "size", "must be at least one bs")
        _check(self.rate_iops is None or self.rate_iops > 0, "rate_iops", "must be positive")


# More concurrent users than this is a typo, not a load test (one Locust worker runs a few thousand).
MAX_CONCURRENCY = 100_000
MAX_RATE_RPS = 100_000.0


@dataclass(frozen=True)
class WorkloadParams:
    """Everything a locustfile needs to shape requests; any of these can be swept."""
    concurrency: int = 32
    context_tokens: int = 1024
    max_tokens: int = 128
    nonce_per_user: bool = True
    session_turns: int = 6
    reuse_ratio: float = 0.0
    think_time_s: float = 0.0
    adapter_count: int = 0
    lora_churn_mode: ChurnMode = "uniform"
    lora_hot_ratio: float = 0.2
    lora_hot_prob: float = 0.8
    cache_state: CacheState = "warm"
    # Open loop: > 0 starts requests on a schedule at this rate whatever the completions do (0: closed loop,
    # `concurrency` users each waiting for its answer); arrivals beyond max_in_flight are shed and recorded.
    arrival_rate_rps: float = 0.0
    arrival_process: ArrivalProcess = "poisson"
    max_in_flight: int = 256
    # trace_replay: the trace (Mooncake JSONL) is the schedule and the prompts; its gaps x trace_time_scale,
    # never faster than trace_max_rps (0: no cap); each request's output is capped at max_tokens
    trace_file: Optional[str] = None
    trace_time_scale: float = 1.0
    trace_max_rps: float = 0.0

    def __post_init__(self):
        _check(0 < self.concurrency <= MAX_CONCURRENCY, "concurrency", f"must be within 1..{MAX_CONCURRENCY}")
        _check(self.context_tokens > 0, "context_tokens", "must be positive")
        _check(self.max_tokens > 0, "max_tokens", "must be positive")
        _check(self.session_turns > 0, "session_turns", "must be positive")
        _check(self.adapter_count >= 0, "adapter_count", "must not be negative")
        _check(self.think_time_s >= 0, "think_time_s", "must not be negative")
        for name in ("reuse_ratio", "lora_hot_ratio", "lora_hot_prob"):
            _check(0.0 <= getattr(self, name) <= 1.0, name, "must be within 0..1")
        _check(0 <= self.arrival_rate_rps <= MAX_RATE_RPS, "arrival_rate_rps", f"must be within 0..{MAX_RATE_RPS}")
        _check(0 < self.max_in_flight <= MAX_CONCURRENCY, "max_in_flight", f"must be within 1..{MAX_CONCURRENCY}")
        _check(self.trace_time_scale > 0, "trace_time_scale", "must be positive")
        _check(self.trace_max_rps >= 0, "trace_max_rps", "must not be negative")


# Parameters a sweep may vary besides the workload's own: profile fields and the fio job.
PROFILE_SWEEP_KEYS = ("tier0_bytes", "tier1_bytes", "tier2_bytes", "eviction_policy", "telemetry_cadence_ms")
FIO_SWEEP_KEY = "fio_profile"

SweepValue = Union[int, float, str]


Phase = Literal["A", "B", "C", "H9"]
PLAYBOOK_PHASES = get_args(Phase)          # the sweep playbook's phases, in the order it runs them


@dataclass(frozen=True)
class Slo:
    """A request's service-level objective, as DistServe's goodput and vLLM's --goodput have it: a served
    request is good when it met every bound given (TTFT, TPOT, E2E; None: not bounded), and a step meets the
    objective when at least ``percentile`` % of its served requests are good. In a hypothesis every field
    left out is the harness' (objectives.requests); ``gate``: a goodput gate judges every step."""
    ttft_s: Optional[float] = None
    tpot_s: Optional[float] = None
    e2e_s: Optional[float] = None
    percentile: Optional[float] = None
    gate: Optional[bool] = None

    def __post_init__(self):
        for name in ("ttft_s", "tpot_s", "e2e_s"):
            value = getattr(self, name)
            _check(value is None or value > 0, name, "must be positive (leave it out: not bounded)")
        _check(self.percentile is None or 0 < self.percentile <= 100, "percentile", "must be in (0, 100]")

    def over(self, base: "Slo") -> "Slo":
        """This objective with ``base``'s values where it gives none."""
        mine = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return Slo(**{k: getattr(base, k) if v is None else v for k, v in mine.items()})


@dataclass(frozen=True)
class Hypothesis:
    title: str
    stacks: list[str]
    profile: str
    model: str
    workload: WorkloadClass
    expected: str
    params: WorkloadParams = field(default_factory=WorkloadParams)
    sweep: dict[str, list[SweepValue]] = field(default_factory=dict)
    step_duration_s: int = 300
    repetitions: int = 3
    seed: int = 42
    fio_profile: Optional[str] = None
    adapter_proxy: bool = False
    blocked_if: Optional[str] = None
    tier_mode: str = "B2"          # Stack B's KVBM tiers for this hypothesis (TIER_MODE overrides)
    slo: Slo = field(default_factory=Slo)   # over the harness' objectives.requests (SLO_* override both)
    # the sweep playbook's phase (`rig sweep`): A baselines, B features, C hero, H9 the rehydration check;
    # None: not in the playbook. A phase runs its hypotheses in this file's order, each on its stacks.
    phase: Optional[Phase] = None

    def __post_init__(self):
        object.__setattr__(self, "tier_mode", tier_mode(self.tier_mode))
        _check(len(self.stacks) > 0, "stacks", "must name at least one stack")
        _check(self.step_duration_s > 0, "step_duration_s", "must be positive")
        _check(self.repetitions > 0, "repetitions", "must be positive")
        for key, values in self.sweep.items():
            _check(len(values) > 0, "sweep", f"sweep.{key} must list at least one value")


MAX_LORA_BYTES = 64 * 2**30


@dataclass(frozen=True)
class EngineParams:
    """Serving-engine model of the embedded simulator (the knobs that place its queue knee)."""
    max_batch_size: int
    max_num_tokens: int
    max_output_tokens: int
    iteration_base_ms: float
    decode_ms_per_seq: float
    prefill_us_per_token: float
    host_onboard_gbps: float
    max_queue: int
    admission_timeout_s: float
    lora_count: int
    lora_bytes: ByteSize
    max_loras: int
    lora_load_ms: float
    time_scale: float = 1.0
    # fault mode, off in every shipped profile: ai-dynamo/dynamo #15079 (kvbm 1.4.2): a disk onboard whose
    # transfer failed is still counted as a full hit (kvbm_onboard_blocks_d2d, matched tokens) and the
    # request answered 200; the simulator then reads nothing and prefills the blocks again
    count_failed_disk_onboards: bool = False

    def __post_init__(self):
        for name in ("max_batch_size", "max_num_tokens", "max_output_tokens", "max_queue", "max_loras"):
            _check(getattr(self, name) > 0, name, "must be positive")
        for name in ("iteration_base_ms", "decode_ms_per_seq", "prefill_us_per_token", "lora_load_ms",
                     "admission_timeout_s", "lora_count"):
            _check(getattr(self, name) >= 0, name, "must not be negative")
        for name in ("host_onboard_gbps", "time_scale"):
            _check(getattr(self, name) > 0, name, "must be positive")
        _check(self.lora_bytes <= MAX_LORA_BYTES, "lora_bytes",
               f"must be at most {MAX_LORA_BYTES // 2**30} GiB (a rank-64 adapter of a 70B model is about 1 GiB)")


@dataclass(frozen=True)
class ExporterSettings:
    """Where our exporters listen and what they watch; Prometheus targets are generated from this."""
    listen: str
    port: int
    ports: dict[str, int]
    disk_exclude: str
    processes: dict[str, str]
    smart_tool: Literal["auto", "smartctl", "nvme", "off"] = "auto"
    smart_interval_s: float = 60.0
    kvbm_timeout_s: float = 2.0

    def __post_init__(self):
        import re
        checks.listen_address(self.listen, "listen")
        for name in ("smart_interval_s", "kvbm_timeout_s"):
            _check(getattr(self, name) > 0, name, "must be positive")
        checks.tcp_port(self.port, "port")
        for name, port in self.ports.items():
            checks.tcp_port(port, "ports", name)
        for name, pattern in {"disk_exclude": self.disk_exclude, **self.processes}.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise FieldError("disk_exclude" if name == "disk_exclude" else "processes",
                                 f"{name} is not a valid regular expression: {exc}") from None


@dataclass(frozen=True)
class RemoteWrite:
    """A long-term store the rig's Prometheus sends every sample to (VictoriaMetrics, Mimir, Thanos receive:
    one contract). Credentials are files Prometheus reads itself, so no secret is in configs, the generated
    prometheus.yml or a run's manifest. Queue settings are Prometheus' queue_config."""
    url: str
    username: Optional[str] = None            # basic auth, with password_file
    password_file: Optional[str] = None
    bearer_token_file: Optional[str] = None
    capacity: int = 10000                     # samples buffered per shard
    max_shards: int = 10
    max_samples_per_send: int = 2000
    batch_send_deadline_ms: int = 5000
    min_backoff_ms: int = 30
    max_backoff_ms: int = 5000                # a store that is down is retried at most this far apart

    def __post_init__(self):
        checks.http_url(self.url, "url")
        _check("@" not in self.url.split("//", 1)[-1].split("/", 1)[0], "url",
               "must not carry credentials; give username + password_file or bearer_token_file")
        _check(bool(self.username) == bool(self.password_file), "password_file",
               "basic auth needs both username and password_file")
        _check(not (self.username and self.bearer_token_file), "bearer_token_file",
               "give basic auth (username + password_file) or a bearer_token_file, not both")
        for name in ("capacity", "max_shards", "max_samples_per_send", "batch_send_deadline_ms", "min_backoff_ms"):
            _check(getattr(self, name) > 0, name, "must be positive")
        _check(self.max_backoff_ms >= self.min_backoff_ms, "max_backoff_ms", "must be at least min_backoff_ms")


@dataclass(frozen=True)
class PrometheusSettings:
    """The Prometheus that `make up` / the demo start locally, and the cadence every scrape config uses."""
    listen: str
    port: int
    retention: str
    fast_interval_ms: int      # NVMe and KV tier targets (the plan's 250 ms)
    slow_interval_ms: int      # everything else (the plan's <= 1 s)
    evaluation_interval_ms: int
    remote_write: list[RemoteWrite] = field(default_factory=list)

    def __post_init__(self):
        checks.listen_address(self.listen, "listen")
        checks.tcp_port(self.port, "port")
        checks.prometheus_duration(self.retention, "retention")
        _check(0 < self.fast_interval_ms <= self.slow_interval_ms <= 1000, "fast_interval_ms",
               "need 0 < fast_interval_ms <= slow_interval_ms <= 1000 (the plan's cadence)")
        _check(self.evaluation_interval_ms > 0, "evaluation_interval_ms", "must be positive")


@dataclass(frozen=True)
class LoadgenSettings:
    """Where the Locust process publishes its Prometheus metrics (one port per worker process from here up)."""
    listen: str
    metrics_port: int
    adapter_proxy_port: int
    ready_timeout_s: float = 60.0     # wait this long for /v1/models to list the model before load starts
    grafana_url: Optional[str] = None  # post step boundaries as annotations here (token from $GRAFANA_TOKEN)

    def __post_init__(self):
        checks.listen_address(self.listen, "listen")
        for name in ("metrics_port", "adapter_proxy_port"):
            checks.tcp_port(getattr(self, name), name)
        _check(self.ready_timeout_s >= 0, "ready_timeout_s", "must not be negative")
        if self.grafana_url is not None:
            checks.http_url(self.grafana_url, "grafana_url")


MAX_DYNAMO_WORKERS, WORKER_PORT_STRIDE = 16, 10


@dataclass(frozen=True)
class DynamoSettings:
    """The real NVIDIA Dynamo (frontend + its mocker engine, NATS as event plane) run locally by
    `python -m rig dynamo up`: what to install and which loopback ports it uses."""
    version: str
    listen: str
    http_port: int               # the frontend's OpenAI API and /metrics
    system_port: int             # the worker's metrics and health (DYN_SYSTEM_PORT)
    rpc_port: int                # request plane (DYN_TCP_RPC_PORT)
    response_port: int           # response streams (DYN_TCP_RESPONSE_STREAM_PORT)
    nats_port: int               # event plane
    model: str                   # key in models: its handle is served, its shape and tokenizer are used
    max_model_len: int           # the engine's context limit, as a real deployment sets it
    router_mode: Literal["round-robin", "random", "kv"] = "round-robin"
    speedup_ratio: float = 1.0   # the mocker's timing model runs this many times faster than real time
    venv: str = "var/dynamo-venv"
    home: str = "var/dynamo"     # model directory, discovery files, NATS store, pid files and logs
    workers: int = 1             # mocker processes behind the frontend; worker i: system_port, rpc_port + i x 10

    def __post_init__(self):
        checks.listen_address(self.listen, "listen")
        for name in ("http_port", "system_port", "rpc_port", "response_port", "nats_port"):
            checks.tcp_port(getattr(self, name), name)
        _check(1 <= self.workers <= MAX_DYNAMO_WORKERS, "workers", f"must be 1 to {MAX_DYNAMO_WORKERS}")
        last_system, last_rpc = self.worker_ports(self.workers - 1)
        # Dynamo 1.6.1 reads DYN_SYSTEM_PORT as a signed 16-bit number and refuses to start above it
        _check(last_system <= 32767, "system_port", f"must be at most 32767 for every worker (Dynamo reads "
                                                    f"DYN_SYSTEM_PORT as a 16-bit signed number), got {last_system}")
        checks.tcp_port(last_rpc, "rpc_port")
        ports = [self.http_port, self.response_port, self.nats_port,
                 *(p for i in range(self.workers) for p in self.worker_ports(i))]
        _check(len(set(ports)) == len(ports), "workers", f"ports collide: {sorted(ports)} (worker i takes "
                                                         f"system_port and rpc_port + i x {WORKER_PORT_STRIDE})")
        for name in ("max_model_len", "speedup_ratio"):
            _check(getattr(self, name) > 0, name, "must be positive")

    def worker_ports(self, i: int) -> tuple[int, int]:
        """Worker i's DYN_SYSTEM_PORT and DYN_TCP_RPC_PORT: each worker process binds its own (the request
        plane's server is per process: lib/runtime/src/pipeline/network/manager.rs in ai-dynamo/dynamo)."""
        return self.system_port + i * WORKER_PORT_STRIDE, self.rpc_port + i * WORKER_PORT_STRIDE


@dataclass(frozen=True)
class Objectives:
    """What a number must stay under to be good, where a dashboard, a report or a gate draws the line."""
    nvme_r_await_ms: float = 5.0      # the kv_tier2 disk's read latency (iostat r_await)
    requests: Slo = field(default_factory=lambda: Slo(ttft_s=2.0, tpot_s=0.1, percentile=99.0, gate=False))

    def __post_init__(self):
        _check(self.nvme_r_await_ms > 0, "nvme_r_await_ms", "must be positive")


@dataclass(frozen=True)
class Harness:
    models: dict[str, ModelSpec]
    stacks: dict[str, StackSpec]
    profiles: dict[str, Profile]
    fio_profiles: dict[str, FioProfile]
    hypotheses: dict[str, Hypothesis]
    engine: EngineParams
    exporters: ExporterSettings
    prometheus: PrometheusSettings
    loadgen: LoadgenSettings
    dynamo: DynamoSettings
    objectives: Objectives = field(default_factory=Objectives)
    results_dir: str = "results"
    run_dir: str = "var/run"        # pid files, logs, Prometheus data and scrape targets of `make up`
    rig: Optional[str] = None       # this rig's name in a fleet (default: the host name)
    site: Optional[str] = None
    # The overlay file this configuration was loaded with (absolute; None: the shipped files alone), so
    # that every process a command starts reads what the command read, however the overlay was given
    # (--config or $HARNESS_CONFIG). Set by configs.load, never by a file.
    overlay: Optional[str] = field(default=None, init=False, compare=False)

    def __post_init__(self):
        dedicated_dir(self.results_dir, "results_dir")
        dedicated_dir(self.run_dir, "run_dir")
        for key in ("rig", "site"):
            value = getattr(self, key)
            _check(value is None or bool(checks.LABEL_VALUE.fullmatch(value)), key,
                   f"must be letters, digits, '.', '_' or '-' (at most 63), got {value!r}")

    def rig_labels(self) -> dict[str, str]:
        """The labels that tell this rig's series and runs from another's: Prometheus' external_labels, and
        what a run's manifest records."""
        labels = {"rig": self.rig or checks.host_label()}
        if self.site:
            labels["site"] = self.site
        return labels
