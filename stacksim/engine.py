"""Continuous-batching engine: a waiting queue, a bounded running batch, chunked prefill, decode.

Latency is produced, not drawn: an iteration's duration grows with the running batch and the
uncached prompt tokens it prefills, queueing appears once more streams than ``max_batch_size``
arrive, prefix hits skip prefill, and onboarding from tier1 (simulated copy) or tier2 (real
reads) plus cold LoRA loads (real reads) delay the first token.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional

from configs.model import EngineParams

from .kvcache import Admission, TieredKVCache
from .lora import LoraStore
from .tokens import generated_tokens

log = logging.getLogger("stacksim.engine")


class Rejected(Exception):
    """A request the engine will not serve; carries the HTTP status and OpenAI error fields."""

    def __init__(self, status: int, message: str, type_: str, code: str | int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code or status


@dataclass(eq=False)
class Seq:
    id: str
    prompt: list[str]
    hashes: list[bytes]
    max_tokens: int
    adapter: Optional[str]
    arrival: float
    total_blocks: int
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    state: str = "waiting"
    adm: Optional[Admission] = None
    prefill_left: int = 0
    generated: int = 0
    output: list[str] = field(default_factory=list)
    cancelled: bool = False
    admitted_at: float = 0.0
    onboard_s: float = 0.0
    cold_lora: bool = False


class Engine:
    def __init__(self, params: EngineParams, kv: TieredKVCache, block_bytes: int, seed: int,
                 io: Callable[..., asyncio.Future], lora: Optional[LoraStore] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.p = params
        self.kv = kv
        self.block_bytes = block_bytes
        self.seed = seed
        self.io = io
        self.lora = lora
        self.clock = clock
        self.waiting: deque[Seq] = deque()
        self.running: list[Seq] = []
        self.iterations: deque[dict] = deque(maxlen=128)
        self.rejected: dict[str, int] = {}
        self.accepted = 0                    # requests that reached the engine (the worker's requests_total)
        self.faults = 0                      # iterations that raised (their requests failed, the loop went on)
        self._ids = itertools.count()
        self._wake = asyncio.Event()
        self._deadline = 0.0
        self.on_fetch: Optional[Callable[[str, float], None]] = None  # (tier, seconds) per onboarding
        self._task: Optional[asyncio.Task] = None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def sleep(self, seconds: float) -> asyncio.Future:
        """Model time to wall time: every simulated delay goes through here."""
        return asyncio.sleep(seconds * self.p.time_scale)

    # ---- requests --------------------------------------------------------------------------
    def submit(self, prompt: list[str], hashes: list[bytes], max_tokens: int, adapter: Optional[str]) -> Seq:
        total = math.ceil((len(prompt) + max_tokens) / self.kv.block_tokens)
        if total > self.kv.capacity0:
            self._count_reject("kv_too_small")
            raise Rejected(503, f"request needs {total} KV blocks but the device KV pool holds "
                                f"{self.kv.capacity0}; shorten the prompt or max_tokens", "ServiceUnavailableError")
        if len(self.waiting) >= self.p.max_queue:
            self._count_reject("queue_full")
            raise Rejected(429, f"server busy: {len(self.waiting)} requests already waiting "
                                f"(max_queue={self.p.max_queue})", "RateLimitError")
        seq = Seq(id=f"cmpl-{next(self._ids)}", prompt=prompt, hashes=hashes, max_tokens=max_tokens,
                  adapter=adapter, arrival=self.clock(), total_blocks=total)
        self.waiting.append(seq)
        self.accepted += 1
        self._wake.set()
        return seq

    def cancel(self, seq: Seq) -> None:
        """The client went away: free the sequence's blocks at the next iteration boundary."""
        seq.cancelled = True
        self._wake.set()

    def _count_reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def _finish(self, seq: Seq, event: tuple) -> None:
        if seq.adm is not None:
            self.kv.release(seq.adm)
        seq.state = "done"
        if seq in self.running:
            self.running.remove(seq)
        seq.events.put_nowait(event)

    # ---- scheduling ------------------------------------------------------------------------
    def _reap(self) -> None:
        for seq in [s for s in self.waiting if s.cancelled]:
            self.waiting.remove(seq)
            seq.state = "done"
        for seq in [s for s in self.running if s.cancelled and s.state != "onboarding"]:
            self._finish(seq, ("cancelled",))

    def _admit(self) -> None:
        now = self.clock()
        while self.waiting and len(self.running) < self.p.max_batch_size:
            seq = self.waiting[0]
            adm = self.kv.admit(seq.hashes, seq.total_blocks)
            if adm is None:
                if now - seq.arrival > self.p.admission_timeout_s * self.p.time_scale:
                    self.waiting.popleft()
                    self._count_reject("kv_exhausted")
                    self._finish(seq, ("error", Rejected(
                        503, f"KV cache exhausted: no room for {seq.total_blocks} blocks after waiting "
                             f"{now - seq.arrival:.1f}s (pool {self.kv.capacity0} blocks, "
                             f"{self.kv.pinned0} pinned)", "ServiceUnavailableError")))
                    continue
                break
            self.waiting.popleft()
            seq.adm = adm
            seq.admitted_at = now
            seq.prefill_left = max(1, len(seq.prompt) - adm.cached_blocks * self.kv.block_tokens)
            self.running.append(seq)
            if adm.from_host or adm.from_disk or (seq.adapter and self.lora is not None):
                seq.state = "onboarding"
                asyncio.ensure_future(self._onboard(seq))
            else:  # nothing to fetch: prefill can start in this very iteration
                seq.state = "prefill"

    async def _onboard(self, seq: Seq) -> None:
        start = self.clock()
        adm = seq.adm
        try:
            if seq.adapter and self.lora is not None:
                seq.cold_lora = await self.lora.ensure(seq.adapter, self.sleep)
            if adm.from_host:
                t = self.clock()
                await self.sleep(len(adm.from_host) * self.block_bytes / (self.p.host_onboard_gbps * 1e9))
                self._fetched("host", t)
            if adm.from_disk:
                t = self.clock()
                if self.p.count_failed_disk_onboards:       # #15079: the transfer fails, the hit is counted
                    results = [False] * len(adm.from_disk)
                else:
                    results = await asyncio.gather(*(self._read_block(h, slot, w) for h, slot, w in adm.from_disk))
                self._fetched("disk", t)
                self.kv.disk_onboarded(adm, results, count_failed=self.p.count_failed_disk_onboards)
                seq.prefill_left += results.count(False) * self.kv.block_tokens
        except Exception as exc:  # an I/O failure fails this request, not the server
            log.warning("onboarding %s failed: %s", seq.id, exc)
            self._finish(seq, ("error", Rejected(500, f"KV onboarding failed: {exc}", "InternalServerError")))
            return
        seq.onboard_s = self.clock() - start
        if seq.state == "onboarding":
            seq.state = "prefill"
        self._wake.set()

    def _fetched(self, tier: str, since: float) -> None:
        if self.on_fetch is not None:
            self.on_fetch(tier, self.clock() - since)

    async def _read_block(self, h: bytes, slot: int, pending_write) -> bool:
        if pending_write is not None:
            try:
                await asyncio.shield(pending_write)
            except Exception:      # the block never reached the disk: nothing to read back
                return False
        return await self.io(self.kv.tier2.read, slot, h)

    @property
    def alive(self) -> bool:
        """False once the scheduling loop has ended other than by stop(): /health says so."""
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        """The scheduling loop. A fault in one iteration fails the sequences it was serving and is
        counted; it never ends the loop, or every later request would wait forever."""
        while True:
            try:
                await self._iteration()
            except Exception as exc:            # CancelledError (stop) is not an Exception: it ends the loop
                self.faults += 1
                log.exception("engine iteration failed; failing its %d running request(s)", len(self.running))
                for seq in list(self.running):
                    self._finish(seq, ("error", Rejected(500, f"engine fault: {type(exc).__name__}: {exc}"[:300],
                                                         "InternalServerError")))

    async def _iteration(self) -> None:
        """One scheduling round: admit, prefill within the token budget, one decode step for all."""
        self._reap()
        self._admit()
        prefilling = [s for s in self.running if s.state == "prefill"]
        decoding = [s for s in self.running if s.state == "decode"]
        if not prefilling and not decoding:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=0.05 if self.waiting else None)
            except asyncio.TimeoutError:
                pass
            return
        budget, prefill_tokens, first = self.p.max_num_tokens, 0, []
        for seq in prefilling:
            take = min(seq.prefill_left, budget)
            seq.prefill_left -= take
            budget -= take
            prefill_tokens += take
            if seq.prefill_left == 0:
                first.append(seq)
            if budget == 0:
                break
        ms = (self.p.iteration_base_ms + self.p.decode_ms_per_seq * len(decoding)
              + self.p.prefill_us_per_token * prefill_tokens / 1000.0)
        t0 = self.clock()
        # Sleep to a deadline rather than for a duration: timer overshoot in one iteration is
        # taken back from the next, so the simulator's own delay does not accumulate.
        step = ms / 1000.0 * self.p.time_scale
        self._deadline = (self._deadline if t0 - self._deadline < step else t0) + step
        await asyncio.sleep(max(0.0, self._deadline - self.clock()))
        late_ms = (self.clock() - self._deadline) * 1000.0
        self.iterations.append({
            "iter": len(self.iterations), "iterLatencyMS": (self.clock() - t0) * 1000.0,
            "modelLatencyMS": ms * self.p.time_scale, "schedDelayMS": late_ms,
            "numActiveRequests": len(self.running), "numQueuedRequests": len(self.waiting),
            "numContextRequests": len(prefilling), "numGenRequests": len(decoding),
            "numPrefillTokens": prefill_tokens,
            "kvCacheStats": {"maxNumBlocks": self.kv.capacity0, "usedNumBlocks": self.kv.used0,
                             "freeNumBlocks": self.kv.capacity0 - self.kv.used0,
                             "tokensPerBlock": self.kv.block_tokens},
        })
        for seq in decoding + first:
            if seq.cancelled or seq.state == "done":
                continue
            if not seq.output:
                seq.output = generated_tokens(self.seed, seq.prompt, seq.max_tokens)
            seq.state = "decode"
            seq.events.put_nowait(("token", seq.output[seq.generated]))
            seq.generated += 1
            if seq.generated >= seq.max_tokens:
                self._finish(seq, ("done", "length"))
