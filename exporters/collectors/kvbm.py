"""KV tier metrics scraped from Dynamo KVBM (and the frontend) and republished version-independently.

KVBM's names change between releases (the object tier became "remote", request counters came and
went) and carry no bytes. This collector maps whatever a release exposes onto one vocabulary —
blocks and bytes per direction and tier pair, hit ratios per tier, matched tokens, occupancy —
with bytes = blocks x the configured block size. Under TensorRT-LLM's native offload (``offload="trtllm"``)
the same series come from the engines' trtllm_ families instead (``_trtllm_families``), so gates, pairs and
reports read one vocabulary whichever offload ran. Counters stay monotonic across KVBM restarts
(a decrease adds the last value to an offset), so ``rate()`` never sees a drop. Unknown names
and names a release lacks are logged once, not per scrape.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import requests
import urllib3
from prometheus_client.parser import text_string_to_metric_families

from configs import redact
from configs.vocabulary import series as S
from configs.vocabulary import stacks as V
from configs.model import ModelShape

log = logging.getLogger("exporters.kvbm")

SCRAPE_ERRORS = ("connection", "timeout", "http_status", "parse", "too_large")
MAX_BODY_BYTES = 16 * 2**20      # real KVBM and frontend expositions are tens of KiB
READ_BYTES = 256 * 2**10
# Occupancy where a target publishes it: (family, label holding the tier or None, tier, kind)
OCCUPANCY = (
    (S.SIM_OCCUPANCY.name, "tier", None, "occupancy"),
    (S.SIM_CAPACITY.name, "tier", None, "capacity"),
    (V.FE_ACTIVE_DECODE_BLOCKS, None, "device", "occupancy"),
    (V.FE_TOTAL_KV_BLOCKS, None, "device", "capacity"),
    (V.TRTLLM_KV_USED_BLOCKS, None, "device", "occupancy"),
    (V.TRTLLM_KV_MAX_BLOCKS, None, "device", "capacity"),
)
OCCUPANCY_SERIES = {"occupancy": S.KV_TIER_OCCUPANCY, "capacity": S.KV_TIER_CAPACITY}
# Token counters taken from the frontend's per-request histograms (their _sum): prefix-cache hits
# against all prompt tokens give the served prefix hit share.
TOKEN_SUMS = ((V.FE_CACHED_TOKENS, S.KV_PREFIX_CACHED_TOKENS), (V.FE_INPUT_TOKENS, S.KV_PROMPT_TOKENS))


@dataclass(frozen=True)
class BlockSize:
    """How KV blocks become bytes. A target that states its bytes per block wins (the simulator, whose
    blocks are what it writes to its tier2 file); else the model's shape x the tokens per block the
    frontend serves; else the profile's configured bytes."""
    profile_bytes: int
    profile_tokens: int
    shape: Optional[ModelShape] = None

    def resolve(self, stated_bytes: Optional[float], served_tokens: Optional[float]) -> tuple[int, int, str]:
        tokens = int(served_tokens) if served_tokens else self.profile_tokens
        if stated_bytes:
            return int(stated_bytes), tokens, "target"
        if self.shape is not None:
            return self.shape.kv_block_bytes(tokens), tokens, "model_shape"
        return self.profile_bytes, tokens, "profile"


def parse(text: str) -> dict[str, list]:
    """{family name: samples}; prometheus_client's parser drops ``_total`` from counter family names,
    which is exactly KVBM's own spelling."""
    return {fam.name: fam.samples for fam in text_string_to_metric_families(text)}


def _value(families: dict, name: str) -> Optional[float]:
    """The family's value summed over its label sets: its own samples only, never a ``_created`` timestamp."""
    samples = [s for s in families.get(name, ()) if s.name in (name, name + "_total")]
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

    def held(self, key) -> Optional[float]:
        """The value last republished for ``key`` (a source that did not answer this time), None if never."""
        return self.offset.get(key, 0.0) + self.last[key] if key in self.last else None


class KvbmCollector:
    def __init__(self, kvbm_url: str, frontend_url: Optional[str], block: BlockSize, timeout_s: float = 2.0,
                 get: Optional[Callable] = None, worker_urls: Sequence[str] = (), offload: str = "kvbm") -> None:
        """``kvbm_url``: the KV source, KVBM's listener; under ``offload="trtllm"`` the first engine's metrics,
        the workers after it (each worker is then an engine target)."""
        self.offload = offload
        if offload == "trtllm":
            engines = list(dict.fromkeys([kvbm_url, *worker_urls]))
            self.engine_targets = [S.KV_SOURCE_TARGETS["trtllm"] + (f"-{i}" if i else "") for i in range(len(engines))]
            self.targets = dict(zip(self.engine_targets, engines))
            if frontend_url and frontend_url not in engines:        # trtllm-serve is its own frontend
                self.targets["frontend"] = frontend_url
        else:
            self.engine_targets = []
            # every worker behind the frontend: target "worker", then "worker-1", "worker-2", ...
            self.targets = {"kvbm": kvbm_url, **({"frontend": frontend_url} if frontend_url else {}),
                            **{"worker" + (f"-{i}" if i else ""): url for i, url in enumerate(worker_urls)}}
        self.block = block
        self.timeout_s = timeout_s
        self.get = get or requests.Session().get     # keep-alive: a new connection per 250 ms scrape costs more
        self._lock = threading.Lock()                # one scrape of the targets at a time (see collect)
        self._last: list = []
        self.overlaps = 0
        # every (target, reason) starts at 0, as Prometheus counters with known labels should
        self.errors = {(t, r): 0 for t in self.targets for r in SCRAPE_ERRORS}
        self.monotonic = Monotonic()
        self._reported: set[str] = set()

    def _once(self, key: str, message: str, *args) -> None:
        if key not in self._reported:
            self._reported.add(key)
            log.warning(message, *args)

    def _fetch(self, url: str) -> str:
        """The body, within ``timeout_s`` for the whole exchange and at most MAX_BODY_BYTES: a target that
        trickles or never ends its body costs one bounded scrape, not the exporter's memory or every
        later scrape. No read asks for more than the cap leaves, and the chunks are joined only once the
        body is complete and under the cap."""
        deadline = time.monotonic() + self.timeout_s
        with self.get(url, timeout=(self.timeout_s, self.timeout_s / 4), stream=True) as resp:
            if resp.status_code != 200:
                raise _Failure("http_status", f"HTTP {resp.status_code}")
            chunks, size = [], 0
            # what has arrived, not a full buffer; one byte past the cap is enough to know it is passed
            while chunk := resp.raw.read1(min(READ_BYTES, MAX_BODY_BYTES + 1 - size)):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise _Failure("too_large", f"body larger than {MAX_BODY_BYTES // 2**20} MiB")
                if time.monotonic() > deadline:
                    raise _Failure("timeout", f"body not complete within {self.timeout_s:g} s")
            return b"".join(chunks).decode("utf-8", errors="replace")

    def _scrape(self, target: str, url: str) -> Optional[dict]:
        try:
            return parse(self._fetch(url))
        except (requests.Timeout, urllib3.exceptions.TimeoutError):
            failure = _Failure("timeout", f"no complete answer within {self.timeout_s:g} s")
        except (requests.RequestException, urllib3.exceptions.HTTPError):
            hint = (" (is the worker started with DYN_KVBM_METRICS=true?)" if target == "kvbm" else
                    " (is the worker started with --publish-metrics and DYN_SYSTEM_PORT?)"
                    if target in self.engine_targets else "")
            failure = _Failure("connection", "cannot connect" + hint)
        except ValueError as exc:
            failure = _Failure("parse", f"not Prometheus text ({exc})")
        except _Failure as exc:
            # without its traceback: that holds _fetch's frame, the body read so far, and kept in this frame it
            # made a cycle only the cyclic GC frees — an endless target left 16 MiB behind per scrape until it ran
            failure = exc.with_traceback(None)
        self.errors[(target, failure.reason)] = self.errors.get((target, failure.reason), 0) + 1
        self._once(f"{target}:{failure.message}", "%s metrics at %s unavailable: %s (%s{target=%r} is 0)",
                   target, redact.url(url), failure.message, S.KVBM_UP.name, target)
        return None

    def _check_names(self, families: dict) -> None:
        for name in families:
            if not name.startswith(V.KVBM) or name.endswith("_created") and name[:-len("_created")] in families:
                continue                   # a counter's creation time, beside it in the standard spelling
            short = name[len(V.KVBM):]
            known = (short in V.KVBM_TRANSFERS or short in V.KVBM_MEASURED_BYTES or short in V.KVBM_HIT_RATES
                     or short in V.KVBM_REQUESTS or short in V.KVBM_FAILURES or short == V.KVBM_MATCHED_TOKENS
                     or short.startswith(V.KVBM_KNOWN_UNMAPPED))
            if not known:
                self._once("unknown:" + name, "KVBM exposes %s, which this exporter does not know; not normalised",
                           name)
        for short in V.KVBM_EXPECTED:
            if not families.get(V.KVBM + short):
                self._once("missing:" + short, "KVBM does not expose kvbm_%s; its normalised series are absent",
                           short)

    def collect(self):
        """One scrape at a time: a scrape that arrives while another is still reading its targets gets
        that scrape's predecessor's result at once (counted as an overlap), so slow targets never make
        Prometheus' 250 ms scrapes pile up behind each other."""
        if not self._lock.acquire(blocking=False):
            self.overlaps += 1
            return self._last
        try:
            self._last = self._collect()
            return self._last
        finally:
            self._lock.release()

    def _collect(self) -> list:
        up, took = S.KVBM_UP.family(), S.KVBM_SCRAPE_DURATION.family()
        scraped = {}
        for target, url in self.targets.items():
            start = time.perf_counter()
            families = self._scrape(target, url)
            took.add_metric([target], time.perf_counter() - start)
            up.add_metric([target], 0 if families is None else 1)
            if families is not None:
                scraped[target] = families
        errors = S.KVBM_SCRAPE_ERRORS.family()
        for (target, reason), n in sorted(self.errors.items()):
            errors.add_metric([target, reason], n)
        out = [up, took, errors]
        engines = {t: scraped[t] for t in self.engine_targets if t in scraped}
        source_families = next(iter(engines.values()), {}) if self.engine_targets else scraped.get("kvbm", {})
        served_tokens = _max(scraped.get("frontend", {}), V.FE_BLOCK_SIZE) or _max(source_families,
                                                                                  V.TRTLLM_KV_TOKENS_PER_BLOCK)
        block_bytes, block_tokens, source = self.block.resolve(_value(source_families, S.SIM_BLOCK_BYTES.name),
                                                               served_tokens)
        kvbm = scraped.get("kvbm")
        if kvbm is not None:
            self._check_names(kvbm)
            out += self._kv_families(kvbm, block_bytes)
        if self.engine_targets:
            for families in engines.values():
                self._check_trtllm_names(families)
            out += self._trtllm_families(engines, block_bytes, block_tokens)
        out += self._occupancy(scraped) + self._served(scraped)
        size = S.KV_BLOCK_SIZE_BYTES.family()
        size.add_metric([source], block_bytes)
        return out + [S.KVBM_SCRAPE_OVERLAPS.family(self.overlaps), S.KVBM_COUNTER_RESETS.family(self.monotonic.resets),
                      size, S.KV_BLOCK_SIZE_TOKENS.family(block_tokens)]

    def _kv_families(self, kvbm: dict, block_bytes: int):
        blocks, nbytes = S.KV_TRANSFER_BLOCKS.family(), S.KV_TRANSFER_BYTES.family()
        for short, labels in V.KVBM_TRANSFERS.items():
            raw = _value(kvbm, V.KVBM + short)
            if raw is None:
                continue
            count = self.monotonic(short, raw)
            blocks.add_metric(list(labels), count)
            if labels[1] not in ("object", "remote") and labels[2] not in ("object", "remote"):
                nbytes.add_metric(list(labels), count * block_bytes)
        for short, labels in V.KVBM_MEASURED_BYTES.items():
            raw = _value(kvbm, V.KVBM + short)
            if raw is not None:
                nbytes.add_metric(list(labels), self.monotonic(short, raw))
        hits = S.KV_HIT_RATIO.family()
        for short, tier in V.KVBM_HIT_RATES.items():
            raw = _value(kvbm, V.KVBM + short)
            if raw is not None:
                hits.add_metric([tier], raw)
        reqs = S.KV_TRANSFER_REQUESTS.family()
        for short, direction in V.KVBM_REQUESTS.items():
            raw = _value(kvbm, V.KVBM + short)
            if raw is not None:
                reqs.add_metric([direction], self.monotonic(short, raw))
        fails = S.KV_TRANSFER_FAILURES.family()
        for short, labels in V.KVBM_FAILURES.items():
            raw = _value(kvbm, V.KVBM + short)
            if raw is not None:
                fails.add_metric(list(labels), self.monotonic(short, raw))
        file_io = S.KV_TIER2_FILE_BYTES.family()
        for s in kvbm.get(S.SIM_TIER2_IO.name, []):
            if s.name == S.SIM_TIER2_IO.total and s.labels.get("direction"):
                file_io.add_metric([s.labels["direction"]], self.monotonic((S.SIM_TIER2_IO.name, s.labels["direction"]),
                                                                           s.value))
        matched = _value(kvbm, V.KVBM + V.KVBM_MATCHED_TOKENS)
        out = [blocks, nbytes, hits, reqs, fails, file_io]
        if matched is not None:
            out.append(S.KV_MATCHED_TOKENS.family(self.monotonic("matched_tokens", matched)))
        onboarding = _value(kvbm, V.KVBM + V.KVBM_SCHEDULER_ONBOARDING)
        if onboarding is not None:
            out.append(S.KV_ONBOARDING_REQUESTS.family(onboarding))
        return [f for f in out if f.samples]

    def _check_trtllm_names(self, families: dict) -> None:
        for release, names in V.TRTLLM_KV_RELEASES.items():
            missing = [n for n in names if n not in families]
            if missing and release != "disk_tier":          # the prefetch counter appears on its first use
                self._once("missing:" + release, "TensorRT-LLM exposes no %s (its %s families); their normalised "
                           "series are absent: is return_perf_metrics/enable_iter_perf_stats on (--publish-metrics "
                           "under Dynamo), and is the engine recent enough?", ", ".join(missing), release)

    def _engine_counter(self, engines: dict, key: str, read: Callable[[dict], Optional[float]]) -> Optional[float]:
        """A counter summed over the engine targets, each kept monotonic on its own; an engine that did not
        answer this scrape counts with its last value, so one worker's outage is no drop in the sum."""
        values = [self.monotonic((t, key), raw) if t in engines and (raw := read(engines[t])) is not None
                  else self.monotonic.held((t, key)) for t in self.engine_targets]
        values = [v for v in values if v is not None]
        return sum(values) if values else None

    def _trtllm_families(self, engines: dict, block_bytes: int, block_tokens: int) -> list:
        """TensorRT-LLM's KV families as the tier series. Its onboard/offload bytes count only what enters or
        leaves the GPU, colder tiers together (collector.py; _KVCache._record_migrated_slots), so the onboards
        per tier are its hit tokens by cache level (prompt_cache_hit_tokens_total{cache_tier}, blocks = tokens
        / tokens per block; a tier missing from the engine's list of levels onboarded nothing) and the offload
        goes to the next tier down. No counter moves host <-> disk, and no per-tier hit rate exists: those
        series stay absent, never a measured zero. An engine without the
        per-tier counter (before TensorRT-LLM PR #18583) leaves the onboards per tier absent too."""
        def tier_tokens(tier: str):
            def read(fams):
                got = [s.value for s in fams.get(V.TRTLLM_PROMPT_CACHE_HIT_TOKENS, ())
                       if s.name == V.TRTLLM_PROMPT_CACHE_HIT_TOKENS + "_total"
                       and V.TRTLLM_CACHE_TIERS.get(s.labels.get("cache_tier")) == tier]
                return sum(got) if got else None
            return read
        levels = {V.TRTLLM_CACHE_TIERS.get(s.labels.get("cache_tier")): int(s.labels.get("cache_level", 0))
                  for fams in engines.values() for s in fams.get(V.TRTLLM_PROMPT_CACHE_HIT_TOKENS, ())}
        below = sorted((lv, t) for t, lv in levels.items() if t in ("host", "disk"))
        blocks, nbytes = S.KV_TRANSFER_BLOCKS.family(), S.KV_TRANSFER_BYTES.family()
        offloaded = self._engine_counter(engines, V.TRTLLM_KV_OFFLOAD_BYTES,
                                         lambda f: _value(f, V.TRTLLM_KV_OFFLOAD_BYTES))
        if offloaded is not None:
            pair = ["offload", "device", below[0][1] if below else "host"]
            blocks.add_metric(pair, offloaded / block_bytes)
            nbytes.add_metric(pair, offloaded)
        matched = None
        for tier in ("host", "disk"):
            tokens = self._engine_counter(engines, f"{V.TRTLLM_PROMPT_CACHE_HIT_TOKENS}:{tier}", tier_tokens(tier))
            if tokens is None and levels:
                tokens = 0.0             # the engine lists its tiers and this is none of them: nothing came from it
            if tokens is None:
                continue
            pair = ["onboard", tier, "device"]
            blocks.add_metric(pair, tokens / block_tokens)
            nbytes.add_metric(pair, tokens / block_tokens * block_bytes)
            matched = (matched or 0.0) + tokens
        out = [blocks, nbytes]
        if matched is not None:
            out.append(S.KV_MATCHED_TOKENS.family(matched))
        file_io = S.KV_TIER2_FILE_BYTES.family()         # the simulator's cross-check, beside the engine's families
        for direction in ("read", "write"):
            moved = self._engine_counter(engines, f"{S.SIM_TIER2_IO.name}:{direction}", lambda f, d=direction: next(
                (s.value for s in f.get(S.SIM_TIER2_IO.name, ()) if s.name == S.SIM_TIER2_IO.total
                 and s.labels.get("direction") == d), None))
            if moved is not None:
                file_io.add_metric([direction], moved)
        return [f for f in out + [file_io] if f.samples]

    def _occupancy(self, scraped: dict) -> list:
        fams = {kind: series.family() for kind, series in OCCUPANCY_SERIES.items()}
        values: dict[tuple[str, str], float] = {}
        for families in scraped.values():
            for name, label, tier, kind in OCCUPANCY:
                per_name: dict[str, float] = {}      # one value per tier; per-worker samples add up
                for s in families.get(name, []):
                    t = s.labels.get(label) if label else tier
                    if t:
                        per_name[t] = per_name.get(t, 0.0) + s.value
                for t, v in per_name.items():
                    values.setdefault((kind, t), v)   # the first source in OCCUPANCY's order wins
        for (kind, t), v in sorted(values.items()):
            fams[kind].add_metric([t], v)
        return [f for f in fams.values() if f.samples]

    def _served(self, scraped: dict) -> list:
        """What the frontend and worker say about the engine's KV: usage share, prefix-cache tokens."""
        out = []
        workers = [f for t, f in scraped.items() if t.startswith("worker") or t in self.engine_targets]
        usage = next((max(vs) for name in V.WK_KV_USAGE          # the fullest worker's share
                      if (vs := [v for w in workers if (v := _max(w, name)) is not None])), None)
        if usage is not None:
            g = S.KV_TIER_USAGE.family()
            g.add_metric(["device"], usage)
            out.append(g)
        frontend = scraped.get("frontend", {})
        for family, series in TOKEN_SUMS:
            total = sum(s.value for s in frontend.get(family, []) if s.name == family + "_sum")
            if frontend.get(family):
                out.append(series.family(self.monotonic(family, total)))
        return out


def _max(families: dict, name: str) -> Optional[float]:
    samples = families.get(name)
    return max(s.value for s in samples) if samples else None


class _Failure(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message

