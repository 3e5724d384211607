"""KV tier metrics scraped from Dynamo KVBM (and the frontend) and republished version-independently.

KVBM's names change between releases (the object tier became "remote", request counters came and
went) and carry no bytes. This collector maps whatever a release exposes onto one vocabulary —
blocks and bytes per direction and tier pair, hit ratios per tier, matched tokens, occupancy —
with bytes = blocks x the configured block size. Counters stay monotonic across KVBM restarts
(a decrease adds the last value to an offset), so ``rate()`` never sees a drop. Unknown names
and names a release lacks are logged once, not per scrape.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import requests
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("exporters.kvbm")

# KVBM counter (family name, no prefix) -> (direction, from tier, to tier)
TRANSFERS = {
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
# Object/remote tiers count their own bytes; blocks x block size would be a guess there.
MEASURED_BYTES = {
    "offload_bytes_object": ("offload", "device", "object"),
    "offload_bytes_remote": ("offload", "device", "remote"),
    "onboard_bytes_object": ("onboard", "object", "device"),
    "onboard_bytes_remote": ("onboard", "remote", "device"),
}
HIT_RATES = {"host_cache_hit_rate": "host", "disk_cache_hit_rate": "disk", "object_cache_hit_rate": "object",
             "remote_cache_hit_rate": "remote"}
REQUESTS = {"offload_requests": "offload", "onboard_requests": "onboard"}
FAILURES = {"remote_read_failures": ("remote", "read"), "remote_write_failures": ("remote", "write")}
SCRAPE_ERRORS = ("connection", "timeout", "http_status", "parse")
KNOWN_UNMAPPED = ("remote_transfer_latency_seconds", "scheduler_")
# Every release we know exposes these; their absence means a misconfigured or very different KVBM.
EXPECTED = ("offload_blocks_d2h", "offload_blocks_h2d", "onboard_blocks_h2d", "onboard_blocks_d2d",
            "matched_tokens", "host_cache_hit_rate", "disk_cache_hit_rate")
# Occupancy where a target publishes it: (family, label holding the tier or None, tier, kind)
OCCUPANCY = (
    ("stacksim_kv_tier_occupancy_blocks", "tier", None, "occupancy"),
    ("stacksim_kv_tier_capacity_blocks", "tier", None, "capacity"),
    ("dynamo_component_active_blocks", None, "device", "occupancy"),
    ("dynamo_component_total_blocks", None, "device", "capacity"),
    ("dynamo_frontend_model_total_kv_blocks", None, "device", "capacity"),
)


def parse(text: str) -> dict[str, list]:
    """{family name: samples}; prometheus_client's parser drops ``_total`` from counter family names,
    which is exactly KVBM's own spelling."""
    return {fam.name: fam.samples for fam in text_string_to_metric_families(text)}


def _value(families: dict, name: str) -> Optional[float]:
    samples = families.get(name)
    return sum(s.value for s in samples) if samples else None


@dataclass
class Monotonic:
    """Keeps republished counters monotonic when the source restarts and starts again from zero."""
    last: dict = field(default_factory=dict)
    offset: dict = field(default_factory=dict)
    resets: int = 0

    def __call__(self, key, raw: float) -> float:
        if key in self.last and raw < self.last[key]:
            self.offset[key] = self.offset.get(key, 0.0) + self.last[key]
            self.resets += 1
        self.last[key] = raw
        return self.offset.get(key, 0.0) + raw


class KvbmCollector:
    def __init__(self, kvbm_url: str, frontend_url: Optional[str], block_bytes: int, timeout_s: float = 2.0,
                 get: Optional[Callable] = None) -> None:
        self.targets = {"kvbm": kvbm_url, **({"frontend": frontend_url} if frontend_url else {})}
        self.block_bytes = block_bytes
        self.timeout_s = timeout_s
        self.get = get or requests.Session().get     # keep-alive: a new connection per 250 ms scrape costs more
        self._lock = threading.Lock()                # scrapes may overlap; counters and the session are shared
        # every (target, reason) starts at 0, as Prometheus counters with known labels should
        self.errors = {(t, r): 0 for t in self.targets for r in SCRAPE_ERRORS}
        self.monotonic = Monotonic()
        self._reported: set[str] = set()

    def _once(self, key: str, message: str, *args) -> None:
        if key not in self._reported:
            self._reported.add(key)
            log.warning(message, *args)

    def _scrape(self, target: str, url: str) -> Optional[dict]:
        try:
            resp = self.get(url, timeout=self.timeout_s)
            if resp.status_code != 200:
                raise _Failure("http_status", f"HTTP {resp.status_code}")
            return parse(resp.text)
        except requests.Timeout:
            failure = _Failure("timeout", f"no answer within {self.timeout_s:g} s")
        except requests.RequestException:
            hint = " (is the worker started with DYN_KVBM_METRICS=true?)" if target == "kvbm" else ""
            failure = _Failure("connection", "cannot connect" + hint)
        except ValueError as exc:
            failure = _Failure("parse", f"not Prometheus text ({exc})")
        except _Failure as exc:
            failure = exc
        self.errors[(target, failure.reason)] = self.errors.get((target, failure.reason), 0) + 1
        self._once(f"{target}:{failure.message}", "%s metrics at %s unavailable: %s (sparkrig_kvbm_up{target=%r} is 0)",
                   target, url, failure.message, target)
        return None

    def _check_names(self, families: dict) -> None:
        for name in families:
            if not name.startswith("kvbm_"):
                continue
            short = name[len("kvbm_"):]
            known = (short in TRANSFERS or short in MEASURED_BYTES or short in HIT_RATES or short in REQUESTS
                     or short in FAILURES or short == "matched_tokens" or short.startswith(KNOWN_UNMAPPED))
            if not known:
                self._once("unknown:" + name, "KVBM exposes %s, which this exporter does not know; not normalised",
                           name)
        for short in EXPECTED:
            if not families.get("kvbm_" + short):
                self._once("missing:" + short, "KVBM does not expose kvbm_%s; its normalised series are absent",
                           short)

    def collect(self):
        with self._lock:
            return self._collect()

    def _collect(self) -> list:
        up = GaugeMetricFamily("sparkrig_kvbm_up", "1 when the last scrape of the target succeeded",
                               labels=["target"])
        took = GaugeMetricFamily("sparkrig_kvbm_scrape_duration_seconds", "Time the last scrape of the target took",
                                 labels=["target"])
        scraped = {}
        for target, url in self.targets.items():
            start = time.perf_counter()
            families = self._scrape(target, url)
            took.add_metric([target], time.perf_counter() - start)
            up.add_metric([target], 0 if families is None else 1)
            if families is not None:
                scraped[target] = families
        errors = CounterMetricFamily("sparkrig_kvbm_scrape_errors", "Failed scrapes by target and reason",
                                     labels=["target", "reason"])
        for (target, reason), n in sorted(self.errors.items()):
            errors.add_metric([target, reason], n)
        out = [up, took, errors]
        kvbm = scraped.get("kvbm")
        if kvbm is not None:
            self._check_names(kvbm)
            out += self._kv_families(kvbm)
        out += self._occupancy(scraped)
        resets = CounterMetricFamily("sparkrig_kvbm_counter_resets", "Source counters seen going backwards "
                                     "(restarts); republished counters continue from where they were")
        resets.add_metric([], self.monotonic.resets)
        size = GaugeMetricFamily("sparkrig_kv_block_size_bytes", "Configured KV block size used for bytes")
        size.add_metric([], self.block_bytes)
        return out + [resets, size]

    def _kv_families(self, kvbm: dict):
        pair = ["direction", "from_tier", "to_tier"]
        blocks = CounterMetricFamily("sparkrig_kv_transfer_blocks", "KV blocks moved between tiers", labels=pair)
        nbytes = CounterMetricFamily("sparkrig_kv_transfer_bytes", "KV bytes moved between tiers (blocks x block "
                                     "size; measured bytes for object/remote tiers)", labels=pair)
        for short, labels in TRANSFERS.items():
            raw = _value(kvbm, "kvbm_" + short)
            if raw is None:
                continue
            count = self.monotonic(short, raw)
            blocks.add_metric(list(labels), count)
            if labels[1] not in ("object", "remote") and labels[2] not in ("object", "remote"):
                nbytes.add_metric(list(labels), count * self.block_bytes)
        for short, labels in MEASURED_BYTES.items():
            raw = _value(kvbm, "kvbm_" + short)
            if raw is not None:
                nbytes.add_metric(list(labels), self.monotonic(short, raw))
        hits = GaugeMetricFamily("sparkrig_kv_hit_ratio", "Sliding-window hit ratio per tier", labels=["tier"])
        for short, tier in HIT_RATES.items():
            raw = _value(kvbm, "kvbm_" + short)
            if raw is not None:
                hits.add_metric([tier], raw)
        reqs = CounterMetricFamily("sparkrig_kv_transfer_requests", "Offload/onboard requests (older releases)",
                                   labels=["direction"])
        for short, direction in REQUESTS.items():
            raw = _value(kvbm, "kvbm_" + short)
            if raw is not None:
                reqs.add_metric([direction], self.monotonic(short, raw))
        fails = CounterMetricFamily("sparkrig_kv_transfer_failures", "Failed tier transfers (blocks)",
                                    labels=["tier", "op"])
        for short, labels in FAILURES.items():
            raw = _value(kvbm, "kvbm_" + short)
            if raw is not None:
                fails.add_metric(list(labels), self.monotonic(short, raw))
        matched = _value(kvbm, "kvbm_matched_tokens")
        out = [blocks, nbytes, hits, reqs, fails]
        if matched is not None:
            m = CounterMetricFamily("sparkrig_kv_matched_tokens", "Prompt tokens matched in KVBM tiers")
            m.add_metric([], self.monotonic("matched_tokens", matched))
            out.append(m)
        return [f for f in out if f.samples]

    def _occupancy(self, scraped: dict) -> list:
        fams = {kind: GaugeMetricFamily(f"sparkrig_kv_tier_{kind}_blocks", f"KV tier {kind} in blocks",
                                        labels=["tier"]) for kind in ("occupancy", "capacity")}
        seen: set[tuple[str, str]] = set()
        for families in scraped.values():
            for name, label, tier, kind in OCCUPANCY:
                for s in families.get(name, []):
                    t = s.labels.get(label) if label else tier
                    if t and (kind, t) not in seen:
                        seen.add((kind, t))
                        fams[kind].add_metric([t], s.value)
        return [f for f in fams.values() if f.samples]


class _Failure(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


if __name__ == "__main__":
    from .cli import main
    sys.exit(main(only="kvbm"))
