"""Prometheus metrics of one Locust process, announced to Prometheus through a file_sd file.

Every process (standalone, master or worker) serves its own series labelled with its ``worker``;
histograms and counters sum across workers. Buckets are geometric from 5 ms to 120 s with ratio
1.2, so a quantile is resolved to within 20 % — fine enough to tell p99 > 2 x p50.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from configs.runfiles import tpot
from configs.vocabulary import series as S

from .histogram import BatchHistogram


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class LoadgenMetrics:
    def __init__(self, run_labels: dict[str, str]) -> None:
        self.labels = run_labels
        r = self.registry = CollectorRegistry()

        def make(cls, series: S.Series, **kw):
            return cls(series.name, series.help, series.labels, registry=r, **kw)

        def histogram(series: S.Series, buckets: tuple[float, ...]) -> BatchHistogram:
            h = BatchHistogram(series.name, series.help, series.labels, buckets)
            r.register(h)
            return h
        self.ttft = histogram(S.REQUEST_TTFT, S.LATENCY_BUCKETS)
        self.e2e = histogram(S.REQUEST_E2E, S.LATENCY_BUCKETS)
        self.itl = histogram(S.REQUEST_ITL, S.GAP_BUCKETS)
        self.tpot = histogram(S.REQUEST_TPOT, S.GAP_BUCKETS)
        self.requests = make(Counter, S.REQUESTS)
        self.output_tokens = make(Counter, S.OUTPUT_TOKENS)
        self.users = make(Gauge, S.LOADGEN_USERS)
        self.step = make(Gauge, S.LOADGEN_STEP)
        self.concurrency = make(Gauge, S.LOADGEN_CONCURRENCY)
        self.context = make(Gauge, S.LOADGEN_CONTEXT)
        self.rate = make(Gauge, S.LOADGEN_RATE)
        self.server = None
        self.sd_file: Optional[Path] = None

    def serve(self, host: str, port: int) -> int:
        """Listen (port 0: any free port, as Locust workers do) and return the port."""
        self.server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return self.server.server_port

    def count_users(self, runner) -> None:
        """Users running in this process, read at scrape time. A master's count is its workers' sum,
        so only processes that run users call this (the series then sum without double counting)."""
        self.users.labels(**self.labels).set_function(lambda: runner.user_count)

    def observe(self, record) -> None:
        lb = {**self.labels, "step": str(record.step)}
        if record.ok:
            key = tuple(lb[k] for k in self.ttft.labelnames)     # the histograms share the step labels
            if record.ttft_s is not None:
                self.ttft.observe(key, (record.ttft_s,))
            self.e2e.observe(key, (record.e2e_s,))
            self.itl.observe(key, record.itl_s)
            tokens = record.completion_tokens or 0
            self.output_tokens.labels(**lb).inc(tokens)
            if record.ttft_s is not None and tokens > 1 and record.e2e_s > record.ttft_s:
                self.tpot.observe(key, (tpot(record.e2e_s, record.ttft_s, tokens),))
        self.requests.labels(**lb, status=str(record.status), error_class=record.error_class or "").inc()

    def set_step(self, index: int, params) -> None:
        self.step.labels(**self.labels).set(index)
        self.concurrency.labels(**self.labels).set(params.concurrency)
        self.context.labels(**self.labels).set(params.context_tokens)
        self.rate.labels(**self.labels).set(params.arrival_rate_rps)

    def close(self) -> None:
        if self.sd_file:
            self.sd_file.unlink(missing_ok=True)
        if self.server:
            self.server.shutdown()
