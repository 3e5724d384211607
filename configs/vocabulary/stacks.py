"""The real stacks' metric names, labels and buckets that the harness reads or emulates, per release.

Checked against NVIDIA Dynamo 1.6.1 as installed from PyPI (``dynamo/prometheus_names.py``, and the
expositions of its frontend, mocker worker and KVBM kept in ``tests/fixtures/dynamo-1.6.1/``) and
trtllm-serve. The simulator serves these names and the exporters read them, from here only, so a
rename in a new release is one edit and a test against the fixtures shows what drifted.

Family names are given as Prometheus parsers report them: counters without ``_total``.
"""
from __future__ import annotations

DYNAMO_RELEASE = "1.6.1"

# ---- Dynamo frontend (/metrics on the HTTP port) ------------------------------------------------
FE = "dynamo_frontend_"
FE_REQUESTS = FE + "requests"                      # counter: endpoint, error_type, model, request_type, status
FE_REQUESTS_STARTED = FE + "requests_started"      # counter: endpoint, model, request_type
FE_FAILURES = FE + "failures"                      # counter: class, reason (400s land here, not in requests)
FE_CANCELLATIONS = FE + "model_cancellation"       # counter: endpoint, model, request_type
FE_OUTPUT_TOKENS = FE + "output_tokens"            # counter: model
FE_TTFT = FE + "time_to_first_token_seconds"       # histograms: model
FE_ITL = FE + "inter_token_latency_seconds"
FE_DURATION = FE + "request_duration_seconds"
FE_INPUT_TOKENS = FE + "input_sequence_tokens"
FE_OUTPUT_SEQ_TOKENS = FE + "output_sequence_tokens"
FE_CACHED_TOKENS = FE + "cached_tokens"            # per request: prompt tokens served from the prefix cache
FE_INFLIGHT = FE + "inflight_requests"             # gauges: model
FE_QUEUED = FE + "queued_requests"
FE_MODEL_READY = FE + "model_ready"
FE_TOTAL_KV_BLOCKS = FE + "model_total_kv_blocks"
FE_BLOCK_SIZE = FE + "model_kv_cache_block_size"   # tokens per KV block
FE_MAX_NUM_SEQS = FE + "model_max_num_seqs"
FE_MAX_BATCHED_TOKENS = FE + "model_max_num_batched_tokens"
FE_CONTEXT_LENGTH = FE + "model_context_length"    # 0 when the worker does not publish it
FE_ACTIVE_DECODE_BLOCKS = FE + "worker_active_decode_blocks"   # kv router only: worker_id, dp_rank, worker_type

FE_REQUEST_LABELS = ("endpoint", "error_type", "model", "request_type", "status")
FE_CANCEL_LABELS = ("endpoint", "model", "request_type")
FE_FAILURE_LABELS = ("class", "reason")
# status="error" error_type values, and the failure classes 1.6.1 uses
ERROR_CANCELLED, ERROR_NOT_FOUND, ERROR_INTERNAL = "cancelled", "not_found", "internal"
ERROR_OVERLOAD, ERROR_UNAVAILABLE = "overload", "unavailable"
UNKNOWN_MODEL = "unknown_model"                    # the model label of requests for a model nobody serves
# (class, reason) of failures_total. A 400 is counted here only, never in requests_total; an over-length
# prompt fails inside the engine: internal, "unclassified" when streamed, "internal" when unary.
FAILURE_INVALID = ("InvalidRequest", "request.invalid")
FAILURE_NOT_FOUND = ("NotFound", "request.not_found")
FAILURE_INTERNAL_STREAM = ("Internal", "runtime.unclassified")
FAILURE_INTERNAL_UNARY = ("Internal", "runtime.internal")

# Buckets exactly as 1.6.1 serves them ("0" is a bucket of its own).
FE_TTFT_BUCKETS = (0, 0.0022, 0.0047, 0.01, 0.022, 0.047, 0.1, 0.22, 0.47, 1, 2.2, 4.7, 10, 22, 48, 100, 220, 480)
FE_ITL_BUCKETS = (0, 0.0018, 0.0033, 0.0059, 0.011, 0.02, 0.035, 0.064, 0.12, 0.21, 0.38, 0.69, 1.2, 2.3, 4.1,
                  7.4, 13, 24, 44, 80)
FE_DURATION_BUCKETS = (0, 2, 4, 8, 16, 32, 64, 130, 260, 510)
FE_INPUT_BUCKETS = (0, 100, 210, 430, 870, 1800, 3600, 7400, 15000, 31000, 63000, 130000)
FE_OUTPUT_BUCKETS = (0, 100, 210, 430, 880, 1800, 3700, 7600, 16000, 32000)

# ---- Dynamo worker (system port, DYN_SYSTEM_PORT) ----------------------------------------------
WK_REQUESTS = "dynamo_component_requests"          # counter: dynamo_component, dynamo_endpoint, dynamo_namespace, worker_id
WK_INFLIGHT = "dynamo_component_inflight_requests"
WK_CANCELLATIONS = "dynamo_component_cancellation"
WK_LABELS = ("dynamo_component", "dynamo_endpoint", "dynamo_namespace", "worker_id")
WK_QUEUE = "dynamo_request_queue"                  # gauge, no labels
# KV usage of the engine, 0..1: the engine's own name first (vLLM-style, what the 1.6.1 mocker serves),
# then Dynamo's component gauge of releases that publish it.
WK_KV_USAGE = ("vllm:kv_cache_usage_perc", "dynamo_component_gpu_cache_usage_percent", "trtllm_kv_cache_utilization")
WK_RUNNING = "vllm:num_requests_running"           # gauges: engine, model_name
WK_WAITING = "vllm:num_requests_waiting"
WK_ENGINE_LABELS = ("engine", "model_name")

# ---- Dynamo KVBM (its own listener, DYN_KVBM_METRICS_PORT) -------------------------------------
KVBM = "kvbm_"
# counter (without prefix) -> (direction, from tier, to tier); 1.6.1 has d2h h2d d2d d2o / h2d d2d o2d,
# later releases renamed the object tier "remote".
KVBM_TRANSFERS = {
    "offload_blocks_d2h": ("offload", "device", "host"),
    "offload_blocks_h2d": ("offload", "host", "disk"),
    "offload_blocks_d2d": ("offload", "device", "disk"),
    "offload_blocks_d2o": ("offload", "device", "object"),
    "offload_blocks_d2r": ("offload", "device", "remote"),
    "onboard_blocks_h2d": ("onboard", "host", "device"),
    "onboard_blocks_d2d": ("onboard", "disk", "device"),
    "onboard_blocks_o2d": ("onboard", "object", "device"),
    "onboard_blocks_r2d": ("onboard", "remote", "device"),
}
KVBM_MEASURED_BYTES = {          # object/remote tiers count their own bytes
    "offload_bytes_object": ("offload", "device", "object"),
    "offload_bytes_remote": ("offload", "device", "remote"),
    "onboard_bytes_object": ("onboard", "object", "device"),
    "onboard_bytes_remote": ("onboard", "remote", "device"),
}
KVBM_HIT_RATES = {"host_cache_hit_rate": "host", "disk_cache_hit_rate": "disk", "object_cache_hit_rate": "object",
                  "remote_cache_hit_rate": "remote"}
KVBM_REQUESTS = {"offload_requests": "offload", "onboard_requests": "onboard"}
KVBM_FAILURES = {"object_read_failures": ("object", "read"), "object_write_failures": ("object", "write"),
                 "remote_read_failures": ("remote", "read"), "remote_write_failures": ("remote", "write")}
KVBM_HELP = {                    # as the simulator describes the counters it serves
    "offload_blocks_d2h": "Blocks offloaded from device to host",
    "offload_blocks_h2d": "Blocks offloaded from host to disk",
    "offload_blocks_d2d": "Blocks offloaded from device to disk, bypassing host",
    "onboard_blocks_h2d": "Blocks onboarded from host to device",
    "onboard_blocks_d2d": "Blocks onboarded from disk to device",
    "matched_tokens": "Prompt tokens matched in KVBM host/disk tiers",
}
KVBM_MATCHED_TOKENS = "matched_tokens"
# gauge of releases after 1.6.1 (beside the remote tier): requests whose onboard transfers are pending, the
# onboarding queue a request's first token waits behind
KVBM_SCHEDULER_ONBOARDING = "scheduler_onboarding"
KVBM_KNOWN_UNMAPPED = ("remote_transfer_latency_seconds", "scheduler_")
# Every release we know exposes these; their absence means a misconfigured or very different KVBM.
KVBM_EXPECTED = ("offload_blocks_d2h", "offload_blocks_h2d", "onboard_blocks_h2d", "onboard_blocks_d2d",
                 "matched_tokens", "host_cache_hit_rate", "disk_cache_hit_rate")

# ---- trtllm-serve (Stack A, /prometheus/metrics) ------------------------------------------------
TRTLLM_LABELS = ("model_name", "engine_type")
TRTLLM_REQUEST_SUCCESS = "trtllm_request_success"             # counter: + finished_reason
TRTLLM_TTFT = "trtllm_time_to_first_token_seconds"            # histograms
TRTLLM_TPOT = "trtllm_time_per_output_token_seconds"
TRTLLM_E2E = "trtllm_e2e_request_latency_seconds"
TRTLLM_QUEUE = "trtllm_request_queue_time_seconds"
TRTLLM_PROMPT_TOKENS = "trtllm_prompt_tokens"                 # counters
TRTLLM_GENERATION_TOKENS = "trtllm_generation_tokens"
TRTLLM_KV_HIT_RATE = "trtllm_kv_cache_hit_rate"               # gauges (iteration stats as Prometheus)
TRTLLM_KV_UTILIZATION = "trtllm_kv_cache_utilization"
TRTLLM_KV_HOST_UTILIZATION = "trtllm_kv_cache_host_utilization"
TRTLLM_RUNNING = "trtllm_num_requests_running"
TRTLLM_WAITING = "trtllm_num_requests_waiting"
TRTLLM_KV_MAX_BLOCKS = "trtllm_kv_cache_max_blocks"
TRTLLM_KV_FREE_BLOCKS = "trtllm_kv_cache_free_blocks"
TRTLLM_KV_USED_BLOCKS = "trtllm_kv_cache_used_blocks"
TRTLLM_KV_TOKENS_PER_BLOCK = "trtllm_kv_cache_tokens_per_block"
TRTLLM_KV_REUSED_BLOCKS = "trtllm_kv_cache_reused_blocks"      # counters
TRTLLM_KV_MISSED_BLOCKS = "trtllm_kv_cache_missed_blocks"

# ---- TensorRT-LLM's native KV offload (Stack B with kv_offload: trtllm) -------------------------
# KVBM's successor: kv_cache_config host_cache_size / disk_cache_size / disk_cache_path (KV cache manager v2).
# Its KV families, as NVIDIA/TensorRT-LLM tensorrt_llm/metrics/collector.py defines them (tests/fixtures/
# trtllm/ says how that fixture was built from it), per release of the feature: the engine metrics came with
# PR #12413 (Mar 2026), the disk tier with PR #14845 (Jun 2026), the per-tier hit counter with PR #18583
# (~Sep 2026). trtllm-serve serves them on /prometheus/metrics (return_perf_metrics and
# enable_iter_perf_stats on); Dynamo's dynamo.trtllm worker (--publish-metrics) passes every trtllm_ family
# through on its system port (dynamo/trtllm/workers/llm_worker.py, metric_prefix_filters=["trtllm_"]),
# adding its dynamo_* / worker_id / model labels. No counter measures disk bytes: the disk's reads come
# from the serving process's /proc/<pid>/io, as KVBM's do.
TRTLLM_KV_ONBOARD_BYTES = "trtllm_kv_cache_onboard_bytes"            # counter: into the GPU from any colder tier
TRTLLM_KV_OFFLOAD_BYTES = "trtllm_kv_cache_offload_bytes"            # counter: out of the GPU to the next tier
TRTLLM_KV_DISK_PREFETCH_BLOCKS = "trtllm_kv_cache_disk_prefetch_blocks"   # counter: disk -> host (prefetch)
TRTLLM_PROMPT_CACHED_TOKENS = "trtllm_prompt_cached_tokens"          # counter: request-scoped cache hits
TRTLLM_PROMPT_CACHE_HIT_TOKENS = "trtllm_prompt_cache_hit_tokens"    # counter: + cache_level, cache_tier
TRTLLM_CACHE_LEVEL_LABELS = ("cache_level", "cache_tier")            # cache_tier: gpu, host or disk
TRTLLM_CACHE_TIERS = {"gpu": "device", "host": "host", "disk": "disk"}   # its tier names -> ours
TRTLLM_KV_RELEASES = {           # the first release stream with each family (a rig's engine may lack the later ones)
    "metrics": (TRTLLM_KV_HIT_RATE, TRTLLM_KV_UTILIZATION, TRTLLM_KV_ONBOARD_BYTES, TRTLLM_KV_OFFLOAD_BYTES,
                TRTLLM_KV_USED_BLOCKS, TRTLLM_KV_MAX_BLOCKS, TRTLLM_KV_TOKENS_PER_BLOCK),
    "disk_tier": (TRTLLM_KV_DISK_PREFETCH_BLOCKS,),
    "per_tier_hits": (TRTLLM_PROMPT_CACHE_HIT_TOKENS,),
}
# Dynamo's worker adds these to every family it passes through (dynamo/common/utils/prometheus.py)
TRTLLM_DYNAMO_LABELS = ("dynamo_namespace", "dynamo_component", "dynamo_endpoint", "worker_id", "model")
