"""Metrics under the real systems' names: Dynamo frontend (Stack B), trtllm-serve (Stack A), KVBM, and
TensorRT-LLM's own KV offload families where Stack B runs that offload instead of KVBM.

KVBM registers its counters with the Rust ``prometheus`` crate, which prints the family name
without ``_total``; prometheus_client would append it, so the KVBM block is written by hand.
Simulator-only series are prefixed ``stacksim_``.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from configs.vocabulary import series as S
from configs.vocabulary import stacks as V

from .engine import Engine
from .kvcache import KVBM_COUNTERS

# trtllm-serve's buckets are its own (the Dynamo ones come from configs.vocabulary)
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0,
                   3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)
FETCH_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

# The real servers print no `_created` series (Dynamo's Rust exporter has none); neither do we.
disable_created_metrics()



class _EngineState:
    """Gauges read from the engine at scrape time rather than updated on every iteration."""

    def __init__(self, engine: Engine, style: str, labels: dict) -> None:
        self.engine, self.style, self.labels = engine, style, labels

    def collect(self):
        e, kv, names, values = self.engine, self.engine.kv, list(self.labels), list(self.labels.values())

        def gauge(name, doc, value):
            g = GaugeMetricFamily(name, doc, labels=names)
            g.add_metric(values, value)
            return g

        if self.style == "dynamo":
            yield gauge(V.FE_INFLIGHT, "Number of inflight requests", len(e.running) + len(e.waiting))
            yield gauge(V.FE_QUEUED, "Number of requests in HTTP processing queue", len(e.waiting))
            yield gauge(V.FE_MODEL_READY, "Whether the frontend can route at least one inference request", 1)
            yield gauge(V.FE_TOTAL_KV_BLOCKS, "Total KV cache blocks available for a worker serving the model",
                        kv.capacity0)
            yield gauge(V.FE_BLOCK_SIZE, "KV cache block size in tokens for a worker serving the model",
                        kv.block_tokens)
            yield gauge(V.FE_MAX_NUM_SEQS, "Maximum number of sequences", e.p.max_batch_size)
            yield gauge(V.FE_MAX_BATCHED_TOKENS, "Maximum number of batched tokens", e.p.max_num_tokens)
            yield gauge(V.FE_CONTEXT_LENGTH, "Maximum context length in tokens", e.p.max_num_tokens)
        else:
            c = kv.counters
            looked = c.device_reused_blocks + c.device_missed_blocks
            yield gauge(V.TRTLLM_KV_HIT_RATE, "Device prefix-cache block hit rate",
                        c.device_reused_blocks / looked if looked else 0.0)
            yield gauge(V.TRTLLM_KV_UTILIZATION, "Used share of the KV pool", kv.used0 / kv.capacity0)
            yield gauge(V.TRTLLM_KV_HOST_UTILIZATION, "Used share of the host KV pool",
                        kv.used1 / kv.capacity1 if kv.capacity1 else 0.0)
            yield gauge(V.TRTLLM_RUNNING, "Running requests", len(e.running))
            yield gauge(V.TRTLLM_WAITING, "Waiting requests", len(e.waiting))
            yield gauge(V.TRTLLM_KV_MAX_BLOCKS, "KV pool blocks", kv.capacity0)
            yield gauge(V.TRTLLM_KV_FREE_BLOCKS, "Free KV blocks", kv.capacity0 - kv.used0)
            yield gauge(V.TRTLLM_KV_USED_BLOCKS, "Used KV blocks", kv.used0)
            yield gauge(V.TRTLLM_KV_TOKENS_PER_BLOCK, "Tokens per KV block", kv.block_tokens)
            for name, doc, value in ((V.TRTLLM_KV_REUSED_BLOCKS, "KV blocks reused", c.device_reused_blocks),
                                     (V.TRTLLM_KV_MISSED_BLOCKS, "KV blocks missed", c.device_missed_blocks)):
                m = CounterMetricFamily(name, doc, labels=names)
                m.add_metric(values, value)
                yield m
        rej = S.SIM_REJECTED.family()
        for reason, n in sorted(e.rejected.items()):
            rej.add_metric([reason], n)
        yield rej
        if e.lora is not None:
            lora = S.SIM_LORA_LOADS.family()
            lora.add_metric(["cold"], e.lora.cold_loads)
            lora.add_metric(["warm"], e.lora.warm_hits)
            yield lora


class FrontendMetrics:
    """Request-level metrics for one stack, named like the real server it stands in for."""

    def __init__(self, engine: Engine, style: str, model: str) -> None:
        self.style = style
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        if style == "dynamo":
            self.labels = {"model": model}
            ln = ["model"]
            self.requests = Counter(V.FE_REQUESTS, "Total number of LLM requests processed",
                                    list(V.FE_REQUEST_LABELS), registry=r)
            self.failures = Counter(V.FE_FAILURES, "Total number of terminal semantic request failures",
                                    list(V.FE_FAILURE_LABELS), registry=r)
            for known in (V.FAILURE_INVALID, V.FAILURE_NOT_FOUND):   # known failure classes start at 0
                self.failures.labels(*known)
            self.ttft = Histogram(V.FE_TTFT, "Time to first token in seconds", ln, buckets=V.FE_TTFT_BUCKETS,
                                  registry=r)
            self.itl = Histogram(V.FE_ITL, "Inter-token latency in seconds", ln, buckets=V.FE_ITL_BUCKETS,
                                 registry=r)
            self.e2e = Histogram(V.FE_DURATION, "Duration of LLM requests", ln, buckets=V.FE_DURATION_BUCKETS,
                                 registry=r)
            self.isl = Histogram(V.FE_INPUT_TOKENS, "Input sequence length in tokens", ln,
                                 buckets=V.FE_INPUT_BUCKETS, registry=r)
            self.osl = Histogram(V.FE_OUTPUT_SEQ_TOKENS, "Output sequence length in tokens", ln,
                                 buckets=V.FE_OUTPUT_BUCKETS, registry=r)
            self.cached = Histogram(V.FE_CACHED_TOKENS, "Number of cached tokens (prefix cache hits) per request",
                                    ln, buckets=V.FE_INPUT_BUCKETS, registry=r)
            self.out_tokens = Counter(V.FE_OUTPUT_TOKENS, "Total number of output tokens generated", ln, registry=r)
            self.cancelled = Counter(V.FE_CANCELLATIONS, "Total number of request cancellations",
                                     list(V.FE_CANCEL_LABELS), registry=r)
        else:
            self.labels = {"model_name": model, "engine_type": "trtllm"}
            ln = list(V.TRTLLM_LABELS)
            self.success = Counter(V.TRTLLM_REQUEST_SUCCESS, "Finished requests", ln + ["finished_reason"],
                                   registry=r)
            self.ttft = Histogram(V.TRTLLM_TTFT, "TTFT", ln, buckets=LATENCY_BUCKETS, registry=r)
            self.itl = Histogram(V.TRTLLM_TPOT, "TPOT", ln, buckets=ITL_BUCKETS, registry=r)
            self.e2e = Histogram(V.TRTLLM_E2E, "E2E latency", ln, buckets=LATENCY_BUCKETS, registry=r)
            self.queue = Histogram(V.TRTLLM_QUEUE, "Queue time", ln, buckets=LATENCY_BUCKETS, registry=r)
            self.prompt_tokens = Counter(V.TRTLLM_PROMPT_TOKENS, "Prompt tokens", ln, registry=r)
            self.gen_tokens = Counter(V.TRTLLM_GENERATION_TOKENS, "Generated tokens", ln, registry=r)
        self.http = Counter(S.SIM_HTTP_REQUESTS.name, S.SIM_HTTP_REQUESTS.help, S.SIM_HTTP_REQUESTS.labels,
                            registry=r)
        r.register(_EngineState(engine, style, self.labels))

    def observe(self, *, endpoint: str, stream: bool, code: int, ttft: float | None, itls: list[float],
                duration: float, prompt_tokens: int, completion_tokens: int, queue_s: float,
                finish_reason: str | None, cancelled: bool = False, cached_tokens: int = 0,
                error_type: str | None = None) -> None:
        """``error_type`` for a request that failed inside the engine (Dynamo's label value); otherwise the
        outcome follows from ``code`` and ``cancelled`` as the real frontend counts it."""
        lv = list(self.labels.values())
        self.http.labels(endpoint, str(code)).inc()
        if self.style == "dynamo":
            if not self._count_dynamo(endpoint, stream, code, cancelled, error_type):
                return
            self.isl.labels(*lv).observe(prompt_tokens)
            self.osl.labels(*lv).observe(completion_tokens)
            self.cached.labels(*lv).observe(cached_tokens)
            self.out_tokens.labels(*lv).inc(completion_tokens)
        else:
            if code != 200:
                return
            if finish_reason:
                self.success.labels(*lv, finish_reason).inc()
            self.queue.labels(*lv).observe(queue_s)
            self.prompt_tokens.labels(*lv).inc(prompt_tokens)
            self.gen_tokens.labels(*lv).inc(completion_tokens)
        if ttft is not None:
            self.ttft.labels(*lv).observe(ttft)
        for gap in itls:
            self.itl.labels(*lv).observe(gap)
        self.e2e.labels(*lv).observe(duration)

    def _count_dynamo(self, endpoint: str, stream: bool, code: int, cancelled: bool, error_type: str | None) -> bool:
        """requests_total / failures_total / model_cancellation_total as Dynamo 1.6.1 counts them; True
        when the request finished and its latency and token histograms apply."""
        model = self.labels["model"]
        rtype = "stream" if stream else "unary"
        if code == 400:                                # refused before the handler: a failure only
            self.failures.labels(*V.FAILURE_INVALID).inc()
            return False
        if code == 404:
            self.failures.labels(*V.FAILURE_NOT_FOUND).inc()
            error_type, model = V.ERROR_NOT_FOUND, V.UNKNOWN_MODEL
        elif cancelled:
            error_type = V.ERROR_CANCELLED
            self.cancelled.labels(endpoint, model, rtype).inc()
        elif error_type == V.ERROR_INTERNAL or code >= 500 and code not in (503,):
            error_type = V.ERROR_INTERNAL
            self.failures.labels(*(V.FAILURE_INTERNAL_STREAM if stream else V.FAILURE_INTERNAL_UNARY)).inc()
        elif code == 429:
            error_type = V.ERROR_OVERLOAD
        elif code == 503:
            error_type = V.ERROR_UNAVAILABLE
        self.requests.labels(endpoint, error_type or "", model, rtype, "error" if error_type else "success").inc()
        return not error_type

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class KvbmMetrics:
    """KVBM's own families (no labels, no ``_total``) plus the simulator's tier extras, among them the
    bytes it really writes per block (the exporter turns blocks into bytes with it)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.registry = CollectorRegistry(auto_describe=True)
        tier_extras(engine, self.registry)

    def exposition(self) -> bytes:
        kv = self.engine.kv
        lines = []
        for name in KVBM_COUNTERS:
            family = V.KVBM + name
            lines += [f"# HELP {family} {V.KVBM_HELP[name]}", f"# TYPE {family} counter",
                      f"{family} {getattr(kv.counters, name)}"]
        host, disk = kv.hit_rates()
        for name, value in (("host_cache_hit_rate", host), ("disk_cache_hit_rate", disk)):
            family = V.KVBM + name
            lines += [f"# HELP {family} Sliding-window hit rate", f"# TYPE {family} gauge", f"{family} {value}"]
        return ("\n".join(lines) + "\n").encode() + generate_latest(self.registry)


def tier_extras(engine: Engine, registry: CollectorRegistry) -> Histogram:
    """The simulator's own tier series (stacksim_*: occupancy, the bytes per block it writes, its tier2 file's
    bytes, onboard fetch times) beside whichever offload's families it serves; the engine reports each fetch."""
    fetch = Histogram(S.SIM_FETCH.name, S.SIM_FETCH.help, S.SIM_FETCH.labels, buckets=FETCH_BUCKETS, registry=registry)
    for tier in ("host", "disk"):       # present from the start, so dashboards show 0, not "no data"
        fetch.labels(tier=tier)
    registry.register(_TierState(engine))
    engine.on_fetch = lambda tier, seconds: fetch.labels(tier).observe(seconds)
    return fetch


class _TierState:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self):
        kv = self.engine.kv
        occ, cap = S.SIM_OCCUPANCY.family(), S.SIM_CAPACITY.family()
        for tier, used, capacity in (("device", kv.used0, kv.capacity0), ("host", kv.used1, kv.capacity1),
                                     ("disk", kv.used2, kv.tier2.capacity if kv.tier2 else 0)):
            occ.add_metric([tier], used)
            cap.add_metric([tier], capacity)
        yield occ
        yield cap
        yield S.SIM_BLOCK_BYTES.family(self.engine.block_bytes)
        yield S.SIM_PINNED.family(kv.pinned0)
        if kv.tier2 is not None:
            io = S.SIM_TIER2_IO.family()
            io.add_metric(["read"], kv.tier2.bytes_read)
            io.add_metric(["write"], kv.tier2.bytes_written)
            yield io
        c = kv.counters
        yield S.SIM_TIER2_EVICTED.family(c.tier2_evicted_blocks)
        err = S.SIM_TIER2_ERRORS.family()
        err.add_metric(["read"], c.tier2_read_errors)
        err.add_metric(["write"], c.tier2_write_errors)
        yield err


class WorkerMetrics:
    """A Dynamo worker's system-port metrics (DYN_SYSTEM_PORT) under 1.6.1's names and labels: the
    work handler's request counters and the engine's KV usage and queue, read at scrape time. With
    TensorRT-LLM's native offload (``trtllm_kv``) the worker also passes the engine's trtllm_ KV families
    through, as dynamo.trtllm does with --publish-metrics, and the simulator's tier extras sit beside them."""

    def __init__(self, engine: Engine, model: str, worker_id: str, trtllm_kv: bool = False) -> None:
        self.engine, self.model = engine, model
        self.component = dict(zip(V.WK_LABELS, ("backend", "generate", "dynamo", worker_id)))
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)
        if trtllm_kv:
            self.registry.register(TrtllmKvMetrics(engine, model, worker_id))
            tier_extras(engine, self.registry)

    def collect(self):
        e, kv = self.engine, self.engine.kv
        names, values = list(V.WK_LABELS), [self.component[k] for k in V.WK_LABELS]
        req = CounterMetricFamily(V.WK_REQUESTS, "Total number of requests processed by work handler", labels=names)
        req.add_metric(values, e.accepted)
        yield req
        inflight = GaugeMetricFamily(V.WK_INFLIGHT, "Number of requests currently being processed by work handler",
                                     labels=names)
        inflight.add_metric(values, len(e.running) + len(e.waiting))
        yield inflight
        queue = GaugeMetricFamily(V.WK_QUEUE, "Current number of requests queued in Dynamo not yet in the engine")
        queue.add_metric([], 0)
        yield queue
        engine_labels = ["0", self.model]
        for name, doc, value in (
                (V.WK_KV_USAGE[0], "KV-cache usage as a fraction of available cache blocks", kv.used0 / kv.capacity0),
                (V.WK_RUNNING, "Number of requests currently running on GPU", len(e.running)),
                (V.WK_WAITING, "Number of requests waiting to be processed", len(e.waiting))):
            g = GaugeMetricFamily(name, doc, labels=list(V.WK_ENGINE_LABELS))
            g.add_metric(engine_labels, value)
            yield g

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class TrtllmKvMetrics:
    """TensorRT-LLM's KV-cache families (tensorrt_llm/metrics/collector.py: log_iteration_stats and
    _log_cached_tokens_by_level; tests/fixtures/trtllm/) as Dynamo's worker passes them through: the engine's
    labels plus the ones Dynamo injects. Its onboard/offload counters count bytes into and out of the GPU
    only (any colder tier together); the per-tier split is the hit tokens by cache level. The simulator's
    blocks are counted in KVBM's names (kvcache.py) and served here in TRT-LLM's."""

    def __init__(self, engine: Engine, model: str, worker_id: str) -> None:
        self.engine = engine
        injected = dict(zip(V.TRTLLM_DYNAMO_LABELS, ("dynamo", "backend", "generate", worker_id, model)))
        self.labels = {"engine_type": "trtllm", "model_name": model, **injected}

    def collect(self):
        kv = self.engine.kv
        c, tokens, block = kv.counters, kv.block_tokens, self.engine.block_bytes
        names, values = list(self.labels), list(self.labels.values())

        def family(cls, name, doc, value):
            f = cls(name, doc, labels=names)
            f.add_metric(values, value)
            return f
        looked = c.device_reused_blocks + c.device_missed_blocks
        cold = kv.capacity1 + (kv.tier2.capacity if kv.tier2 else 0)
        for name, doc, value in (
                (V.TRTLLM_KV_HIT_RATE, "KV cache hit rate", c.device_reused_blocks / looked if looked else 0.0),
                (V.TRTLLM_KV_UTILIZATION, "KV cache utilization", kv.used0 / kv.capacity0),
                (V.TRTLLM_KV_HOST_UTILIZATION, "KV cache host (secondary) pool utilization",
                 (kv.used1 + kv.used2) / cold if cold else 0.0),
                (V.TRTLLM_KV_MAX_BLOCKS, "Maximum number of KV cache blocks", kv.capacity0),
                (V.TRTLLM_KV_FREE_BLOCKS, "Number of free KV cache blocks", kv.capacity0 - kv.used0),
                (V.TRTLLM_KV_USED_BLOCKS, "Number of used KV cache blocks", kv.used0),
                (V.TRTLLM_KV_TOKENS_PER_BLOCK, "Number of tokens per KV cache block", tokens)):
            yield family(GaugeMetricFamily, name, doc, value)
        for name, doc, value in (
                (V.TRTLLM_KV_REUSED_BLOCKS, "Cumulative number of KV cache blocks reused (cache hits)",
                 c.device_reused_blocks),
                (V.TRTLLM_KV_MISSED_BLOCKS, "Cumulative number of KV cache blocks missed (cache misses)",
                 c.device_missed_blocks),
                (V.TRTLLM_KV_ONBOARD_BYTES, "Total bytes transferred from host to GPU (onboard)",
                 (c.onboard_blocks_h2d + c.onboard_blocks_d2d) * block),
                (V.TRTLLM_KV_OFFLOAD_BYTES, "Total bytes transferred from GPU to host (offload)",
                 (c.offload_blocks_d2h + c.offload_blocks_d2d) * block)):
            yield family(CounterMetricFamily, name, doc, value)
        hits = CounterMetricFamily(V.TRTLLM_PROMPT_CACHE_HIT_TOKENS, "Process-lifetime total prompt tokens served "
                                   "from each KV cache level.", labels=list(V.TRTLLM_CACHE_LEVEL_LABELS) + names)
        levels = [("gpu", c.device_reused_blocks)] + ([("host", c.onboard_blocks_h2d)] if kv.capacity1 else []) \
            + ([("disk", c.onboard_blocks_d2d)] if kv.tier2 is not None else [])
        for level, (tier, blocks) in enumerate(levels):
            hits.add_metric([str(level), tier] + values, blocks * tokens)
        yield hits
