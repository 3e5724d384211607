"""Metrics under the real systems' names: Dynamo frontend (Stack B), trtllm-serve (Stack A), KVBM.

KVBM registers its counters with the Rust ``prometheus`` crate, which prints the family name
without ``_total``; prometheus_client would append it, so the KVBM block is written by hand.
Simulator-only series are prefixed ``stacksim_``.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .engine import Engine
from .kvcache import KVBM_COUNTERS

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0,
                   3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)
TOKEN_BUCKETS = (16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
FETCH_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

KVBM_HELP = {
    "offload_blocks_d2h": "Blocks offloaded from device to host",
    "offload_blocks_h2d": "Blocks offloaded from host to disk",
    "offload_blocks_d2d": "Blocks offloaded from device to disk, bypassing host",
    "onboard_blocks_h2d": "Blocks onboarded from host to device",
    "onboard_blocks_d2d": "Blocks onboarded from disk to device",
    "matched_tokens": "Prompt tokens matched in KVBM host/disk tiers",
}


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
            yield gauge("dynamo_frontend_inflight_requests", "Requests in flight", len(e.running) + len(e.waiting))
            yield gauge("dynamo_frontend_queued_requests", "Requests waiting for the engine", len(e.waiting))
            yield gauge("dynamo_frontend_model_total_kv_blocks", "Device KV blocks", kv.capacity0)
            yield gauge("dynamo_frontend_model_kv_cache_block_size", "Tokens per KV block", kv.block_tokens)
            yield gauge("dynamo_frontend_model_max_num_seqs", "Max running sequences", e.p.max_batch_size)
            yield gauge("dynamo_frontend_model_max_num_batched_tokens", "Max tokens per iteration",
                        e.p.max_num_tokens)
            yield gauge("dynamo_frontend_model_context_length", "Max prompt tokens", e.p.max_num_tokens)
        else:
            c = kv.counters
            looked = c.device_reused_blocks + c.device_missed_blocks
            yield gauge("trtllm_kv_cache_hit_rate", "Device prefix-cache block hit rate",
                        c.device_reused_blocks / looked if looked else 0.0)
            yield gauge("trtllm_kv_cache_utilization", "Used share of the KV pool", kv.used0 / kv.capacity0)
            yield gauge("trtllm_kv_cache_host_utilization", "Used share of the host KV pool",
                        kv.used1 / kv.capacity1 if kv.capacity1 else 0.0)
            yield gauge("trtllm_num_requests_running", "Running requests", len(e.running))
            yield gauge("trtllm_num_requests_waiting", "Waiting requests", len(e.waiting))
            yield gauge("trtllm_kv_cache_max_blocks", "KV pool blocks", kv.capacity0)
            yield gauge("trtllm_kv_cache_free_blocks", "Free KV blocks", kv.capacity0 - kv.used0)
            yield gauge("trtllm_kv_cache_used_blocks", "Used KV blocks", kv.used0)
            yield gauge("trtllm_kv_cache_tokens_per_block", "Tokens per KV block", kv.block_tokens)
            for name, value in (("trtllm_kv_cache_reused_blocks", c.device_reused_blocks),
                                ("trtllm_kv_cache_missed_blocks", c.device_missed_blocks)):
                m = CounterMetricFamily(name, "KV blocks " + name.rsplit("_", 2)[1], labels=names)
                m.add_metric(values, value)
                yield m
        rej = CounterMetricFamily("stacksim_rejected_requests", "Requests the engine refused", labels=["reason"])
        for reason, n in sorted(e.rejected.items()):
            rej.add_metric([reason], n)
        yield rej
        if e.lora is not None:
            lora = CounterMetricFamily("stacksim_lora_loads", "LoRA adapter loads", labels=["kind"])
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
            self.requests = Counter("dynamo_frontend_requests", "Requests by outcome", ln + [
                "endpoint", "request_type", "status"], registry=r)
            self.ttft = Histogram("dynamo_frontend_time_to_first_token_seconds", "TTFT", ln,
                                  buckets=LATENCY_BUCKETS, registry=r)
            self.itl = Histogram("dynamo_frontend_inter_token_latency_seconds", "ITL", ln,
                                 buckets=ITL_BUCKETS, registry=r)
            self.e2e = Histogram("dynamo_frontend_request_duration_seconds", "Request duration", ln,
                                 buckets=LATENCY_BUCKETS, registry=r)
            self.isl = Histogram("dynamo_frontend_input_sequence_tokens", "Input tokens", ln,
                                 buckets=TOKEN_BUCKETS, registry=r)
            self.osl = Histogram("dynamo_frontend_output_sequence_tokens", "Output tokens", ln,
                                 buckets=TOKEN_BUCKETS, registry=r)
            self.out_tokens = Counter("dynamo_frontend_output_tokens", "Output tokens", ln, registry=r)
            self.cancelled = Counter("dynamo_frontend_model_cancellation", "Cancelled requests", ln, registry=r)
        else:
            self.labels = {"model_name": model, "engine_type": "trtllm"}
            ln = ["model_name", "engine_type"]
            self.success = Counter("trtllm_request_success", "Finished requests", ln + ["finished_reason"],
                                   registry=r)
            self.ttft = Histogram("trtllm_time_to_first_token_seconds", "TTFT", ln, buckets=LATENCY_BUCKETS,
                                  registry=r)
            self.itl = Histogram("trtllm_time_per_output_token_seconds", "TPOT", ln, buckets=ITL_BUCKETS,
                                 registry=r)
            self.e2e = Histogram("trtllm_e2e_request_latency_seconds", "E2E latency", ln,
                                 buckets=LATENCY_BUCKETS, registry=r)
            self.queue = Histogram("trtllm_request_queue_time_seconds", "Queue time", ln,
                                   buckets=LATENCY_BUCKETS, registry=r)
            self.prompt_tokens = Counter("trtllm_prompt_tokens", "Prompt tokens", ln, registry=r)
            self.gen_tokens = Counter("trtllm_generation_tokens", "Generated tokens", ln, registry=r)
        self.http = Counter("stacksim_http_requests", "HTTP requests by endpoint and status code",
                            ["endpoint", "code"], registry=r)
        r.register(_EngineState(engine, style, self.labels))

    def observe(self, *, endpoint: str, stream: bool, code: int, ttft: float | None, itls: list[float],
                duration: float, prompt_tokens: int, completion_tokens: int, queue_s: float,
                finish_reason: str | None, cancelled: bool = False) -> None:
        lv = list(self.labels.values())
        self.http.labels(endpoint, str(code)).inc()
        if self.style == "dynamo":
            status = "success" if code == 200 and not cancelled else "error"
            self.requests.labels(*lv, endpoint, "stream" if stream else "unary", status).inc()
            if cancelled:
                self.cancelled.labels(*lv).inc()
            if code != 200:
                return
            self.isl.labels(*lv).observe(prompt_tokens)
            self.osl.labels(*lv).observe(completion_tokens)
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

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class KvbmMetrics:
    """KVBM's own families (no labels, no ``_total``) plus the simulator's tier extras."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.registry = CollectorRegistry(auto_describe=True)
        self.fetch = Histogram("stacksim_kv_tier_fetch_seconds", "Onboarding time per request and tier",
                               ["tier"], buckets=FETCH_BUCKETS, registry=self.registry)
        for tier in ("host", "disk"):       # present from the start, so dashboards show 0, not "no data"
            self.fetch.labels(tier=tier)
        self.registry.register(_TierState(engine))

    def exposition(self) -> bytes:
        kv = self.engine.kv
        lines = []
        for name in KVBM_COUNTERS:
            lines += [f"# HELP kvbm_{name} {KVBM_HELP[name]}", f"# TYPE kvbm_{name} counter",
                      f"kvbm_{name} {getattr(kv.counters, name)}"]
        host, disk = kv.hit_rates()
        for name, value in (("host_cache_hit_rate", host), ("disk_cache_hit_rate", disk)):
            lines += [f"# HELP kvbm_{name} Sliding-window hit rate", f"# TYPE kvbm_{name} gauge",
                      f"kvbm_{name} {value}"]
        return ("\n".join(lines) + "\n").encode() + generate_latest(self.registry)


class _TierState:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self):
        kv = self.engine.kv
        occ = GaugeMetricFamily("stacksim_kv_tier_occupancy_blocks", "Blocks held per tier", labels=["tier"])
        cap = GaugeMetricFamily("stacksim_kv_tier_capacity_blocks", "Block capacity per tier", labels=["tier"])
        for tier, used, capacity in (("device", kv.used0, kv.capacity0), ("host", kv.used1, kv.capacity1),
                                     ("disk", kv.used2, kv.tier2.capacity if kv.tier2 else 0)):
            occ.add_metric([tier], used)
            cap.add_metric([tier], capacity)
        yield occ
        yield cap
        pinned = GaugeMetricFamily("stacksim_kv_pinned_blocks", "Device blocks pinned by running sequences")
        pinned.add_metric([], kv.pinned0)
        yield pinned
        if kv.tier2 is not None:
            io = CounterMetricFamily("stacksim_kv_tier2_io_bytes", "Bytes moved by tier2 file I/O",
                                     labels=["direction"])
            io.add_metric(["read"], kv.tier2.bytes_read)
            io.add_metric(["write"], kv.tier2.bytes_written)
            yield io
        c = kv.counters
        ev = CounterMetricFamily("stacksim_kv_tier2_evicted_blocks", "Blocks dropped from tier2")
        ev.add_metric([], c.tier2_evicted_blocks)
        yield ev
        err = CounterMetricFamily("stacksim_kv_tier2_errors", "Failed tier2 I/O", labels=["op"])
        err.add_metric(["read"], c.tier2_read_errors)
        err.add_metric(["write"], c.tier2_write_errors)
        yield err
