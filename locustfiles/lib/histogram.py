"""A labelled Prometheus histogram that takes a request's values in one call.

prometheus_client's Histogram finds a value's bucket by a linear walk under a lock per observation;
with 55 geometric ITL buckets and 63 gaps per streamed request that was ~120 µs of the client's one
core per request. Here a request's values are binned with bisect under one lock, and the families
are built at scrape time (prometheus_client's custom Collector pattern), so the exposition is the
same histogram: cumulative ``_bucket{le}``, ``_sum`` and ``_count``.
"""
from __future__ import annotations

import threading
from bisect import bisect_left
from typing import Iterable

from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString


class BatchHistogram:
    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...], buckets: tuple[float, ...]):
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self.bounds = tuple(buckets)
        self._series: dict[tuple[str, ...], list] = {}     # label values -> [counts per bucket + +Inf, sum]
        self._lock = threading.Lock()

    def observe(self, labelvalues: tuple[str, ...], values: Iterable[float]) -> None:
        """Count every value of ``values`` under one label set (a bound is inclusive, as Prometheus' le)."""
        bounds = self.bounds
        with self._lock:
            entry = self._series.get(labelvalues)
            if entry is None:
                entry = self._series[labelvalues] = [[0] * (len(bounds) + 1), 0.0]
            counts = entry[0]
            total = 0.0
            for v in values:
                counts[bisect_left(bounds, v)] += 1
                total += v
            entry[1] += total

    def collect(self):
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            snapshot = [(k, list(c), s) for k, (c, s) in self._series.items()]
        edges = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        for labelvalues, counts, total in snapshot:
            running, buckets = 0, []
            for edge, n in zip(edges, counts):
                running += n
                buckets.append((edge, running))
            family.add_metric(list(labelvalues), buckets, total)
        yield family
