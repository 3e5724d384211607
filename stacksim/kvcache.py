"""Tiered KV cache: tier0 (device/UMA) -> tier1 (host RAM, bounded) -> tier2 (real files).

Blocks are identified by chained prefix hashes, so shared prefixes and returning sessions
hit. Stack A has tier0 only: when its pinned blocks fill the pool, admission fails and the
engine queues or rejects. Stack B moves blocks down its tiers in one of the two ways its offload does:

* KVBM writes through (ai-dynamo/dynamo lib/llm/src/block_manager/offload.rs: a block registered in a
  pool is sent to the offload manager, which copies it to the next tier unless it is there already):
  every block registered on the device is copied to the host (offload_blocks_d2h), every block
  registered on the host is queued for the disk (offload_blocks_h2d, through KVBM's disk-offload filter
  when it is on), and an eviction only drops a copy. What stays above the disk is the larger of tier0
  and tier1, not their sum.
* TensorRT-LLM's native offload copies on eviction (docs/source/features/kvcache.md: "When a block is
  evicted from primary memory, its KV state is copied to a block in secondary memory"): a block leaves
  the device for the host, and the host's victim for the disk, so the tiers hold their sum.

Prefix hits onboard from tier1/tier2 back to tier0 (onboard counters, in KVBM's names whichever offload
runs; the metrics layer serves them in the offload's own). This class does bookkeeping only; the
engine performs the onboarding I/O it returns.
"""
from __future__ import annotations

import logging
from collections import deque
from asyncio import Future
from dataclasses import dataclass, field
from typing import Callable, Optional

from . import eviction
from .offload_filter import FrequencyFilter
from .tier2 import Tier2Store

log = logging.getLogger("stacksim.kv")

# KVBM's counter names (lib/llm/src/block_manager/metrics_kvbm.rs), values kept here.
KVBM_COUNTERS = ("offload_blocks_d2h", "offload_blocks_h2d", "offload_blocks_d2d",
                 "onboard_blocks_h2d", "onboard_blocks_d2d", "matched_tokens")


@dataclass
class Counters:
    offload_blocks_d2h: int = 0
    offload_blocks_h2d: int = 0
    offload_blocks_d2d: int = 0
    onboard_blocks_h2d: int = 0
    onboard_blocks_d2d: int = 0
    matched_tokens: int = 0
    device_reused_blocks: int = 0
    device_missed_blocks: int = 0
    tier2_evicted_blocks: int = 0
    tier2_write_errors: int = 0
    tier2_read_errors: int = 0


@dataclass
class Admission:
    """What admitting one sequence pinned, and the onboarding it still needs."""
    pinned: list[bytes]
    anon_blocks: int
    cached_blocks: int
    from_host: list[bytes] = field(default_factory=list)
    from_disk: list[tuple[bytes, int, Optional[Future]]] = field(default_factory=list)
    looked: int = 0          # prompt blocks looked up below the device tier


class TieredKVCache:
    def __init__(self, tier0_blocks: int, tier1_blocks: int, tier2: Optional[Tier2Store], policy: str,
                 block_tokens: int, io: Optional[Callable[..., Future]] = None, hit_window: int = 64,
                 offload_filter: Optional[FrequencyFilter] = None, write_through: bool = True) -> None:
        # io(fn, *args) runs blocking tier2 I/O off the event loop and returns an asyncio Future,
        # so completion callbacks run on the loop thread with the rest of the bookkeeping.
        self.capacity0 = tier0_blocks
        self.capacity1 = tier1_blocks
        self.tier2 = tier2
        # KVBM attaches its disk-offload filter to the host tier, and only with a disk tier
        self.offload_filter = offload_filter if tier2 is not None and tier1_blocks else None
        self.block_tokens = block_tokens
        self.write_through = write_through
        self.io = io
        self.counters = Counters()
        self._t0: dict[bytes, int] = {}          # hash -> pin count
        self._t0_free = eviction.make(policy)    # unpinned tier0 blocks
        self._anon = 0                           # pinned blocks with no reusable hash
        self._t1 = eviction.make(policy)
        self._t2: dict[bytes, int] = {}          # hash -> slot
        self._t2_index = eviction.make(policy)
        self._writes: dict[bytes, Future] = {}
        self._held1 = 0                          # tier1 blocks an admission is onboarding (see admit)
        self._lookups: deque = deque(maxlen=hit_window)

    # ---- occupancy -------------------------------------------------------------------------
    @property
    def used0(self) -> int:
        return len(self._t0) + self._anon

    @property
    def pinned0(self) -> int:
        return self.used0 - len(self._t0_free)

    @property
    def used1(self) -> int:
        return len(self._t1)

    @property
    def used2(self) -> int:
        return len(self._t2)

    def hit_rates(self) -> tuple[float, float]:
        looked = sum(x[0] for x in self._lookups)
        if not looked:
            return 0.0, 0.0
        return sum(x[1] for x in self._lookups) / looked, sum(x[2] for x in self._lookups) / looked

    # ---- admission -------------------------------------------------------------------------
    def admit(self, hashes: list[bytes], total_blocks: int) -> Optional[Admission]:
        """Pin ``total_blocks`` tier0 blocks for a sequence whose full prompt blocks are ``hashes``.

        Returns None (and changes nothing) when tier0 cannot make room even after evicting
        every unpinned block.
        """
        in_t0, host, disk = [], [], []
        for h in hashes:
            if h in self._t0:
                in_t0.append(h)
            elif h in self._t1:
                host.append(h)
            elif h in self._t2:
                disk.append(h)
            else:
                break
        matched = len(in_t0) + len(host) + len(disk)
        new_hashed = hashes[matched:]
        need = total_blocks - len(in_t0)
        unpinned_reusable = sum(1 for h in in_t0 if self._t0[h] == 0)
        if self.capacity0 - self.used0 + len(self._t0_free) - unpinned_reusable < need:
            return None

        for h in in_t0:
            if self._t0[h] == 0:
                self._t0_free.remove(h)
            self._t0[h] += 1
        # The blocks this sequence onboards must survive the evictions that make room for it (copied down
        # on eviction, they could push them out): they leave the lower tiers' victim lists meanwhile (host
        # ones still take their room in tier1) and come back as the most recently used there, so the
        # copies written through for this very sequence do not push them out either.
        for h in host:
            self._t1.forget(h)
        for h in disk:
            self._t2_index.forget(h)
        self._held1 = len(host)
        try:
            while self.capacity0 - self.used0 < need:
                self._evict_t0(self._t0_free.victim())
        finally:
            self._held1 = 0
            for h in host:
                self._t1.add(h)
            for h in disk:
                self._t2_index.add(h)
        for h in host + disk + new_hashed:
            self._t0[h] = 1
        anon = total_blocks - len(hashes)   # partial last prompt block and the output's blocks
        self._anon += anon

        c = self.counters
        c.device_reused_blocks += len(in_t0)
        c.device_missed_blocks += len(hashes) - len(in_t0)
        looked = len(hashes) - len(in_t0)
        c.onboard_blocks_h2d += len(host)
        c.matched_tokens += len(host) * self.block_tokens
        adm = Admission(pinned=in_t0 + host + disk + list(new_hashed), anon_blocks=anon,
                        cached_blocks=matched, from_host=host, looked=looked)
        for h in disk:
            adm.from_disk.append((h, self._t2[h], self._writes.get(h)))
        # Written through once registered on the device (a host hit is on the host already). Should a disk
        # smaller than one sequence drop a block read here meanwhile, its read finds another block's bytes
        # and fails.
        for h in disk + new_hashed if self.write_through else ():
            self._register_on_device(h)
        if not disk:
            self._count_lookup(adm, 0)
        return adm

    def disk_onboarded(self, adm: Admission, ok: list[bool], count_failed: bool = False) -> None:
        """The engine read ``adm.from_disk`` back; ``ok`` says which reads returned the block. Only
        those are onboards, matched tokens and disk hits; an unreadable block leaves tier2 and its
        tokens are prefilled again. ``count_failed``: KVBM 1.4.2's bug (ai-dynamo/dynamo #15079), every
        block counted as onboarded and matched whether or not its transfer succeeded."""
        good = sum(ok)
        counted = len(ok) if count_failed else good
        c = self.counters
        c.onboard_blocks_d2d += counted
        c.matched_tokens += counted * self.block_tokens
        adm.cached_blocks -= len(ok) - good
        if count_failed:                 # nothing says the transfer failed: the block stays, to fail again
            self._count_lookup(adm, counted)
            return
        c.tier2_read_errors += len(ok) - good
        for (h, slot, _w), fine in zip(adm.from_disk, ok):
            if not fine and self._t2.get(h) == slot:
                self._drop_t2(h, evicted=False)
        self._count_lookup(adm, counted)

    def _count_lookup(self, adm: Admission, disk_hits: int) -> None:
        if adm.looked and (self.capacity1 or self.tier2):
            self._lookups.append((adm.looked, len(adm.from_host), disk_hits))

    def release(self, adm: Admission) -> None:
        for h in adm.pinned:
            n = self._t0.get(h)
            if n is None:
                continue
            self._t0[h] = n - 1
            if n == 1:
                self._t0_free.add(h)
        self._anon -= adm.anon_blocks
        adm.pinned, adm.anon_blocks = [], 0

    # ---- down the tiers ------------------------------------------------------------------------
    def _evict_t0(self, h: bytes) -> None:
        self._t0_free.forget(h)
        del self._t0[h]
        if self.write_through or h in self._t1 or h in self._t2:
            return                           # only the device copy goes
        if self.capacity1 > self._held1:
            self.counters.offload_blocks_d2h += 1
            if len(self._t1) + self._held1 >= self.capacity1:
                victim = self._t1.victim()
                self._t1.forget(victim)
                self._to_disk(victim, "offload_blocks_h2d")
            self._t1.add(h)
        elif self.tier2 is not None:
            self._to_disk(h, "offload_blocks_d2d")

    def _register_on_device(self, h: bytes) -> None:
        if self.capacity1:
            if h in self._t1:
                return
            if len(self._t1) >= self.capacity1:
                self._t1.forget(self._t1.victim())     # its disk copy, if the filter let one be made, stays
            self._t1.add(h)
            self.counters.offload_blocks_d2h += 1
            if self.offload_filter is None or self.offload_filter.should_offload(h):
                self._to_disk(h, "offload_blocks_h2d")
        elif self.tier2 is not None:
            self._to_disk(h, "offload_blocks_d2d")

    def _to_disk(self, h: bytes, counter: str) -> None:
        if self.tier2 is None or h in self._t2:
            return
        slot = self.tier2.allocate()
        if slot is None:
            victim = self._t2_index.victim()
            if victim is None:
                return
            self._drop_t2(victim)
            slot = self.tier2.allocate()
            if slot is None:  # every slot still has a write in flight
                return
        self._t2[h] = slot
        self._t2_index.add(h)
        fut = self.io(self.tier2.write, slot, h)
        self._writes[h] = fut
        fut.add_done_callback(lambda f, h=h, slot=slot: self._write_done(h, slot, counter, f))

    def _write_done(self, h: bytes, slot: int, counter: str, fut: Future) -> None:
        """A block is offloaded once its bytes are on disk. A failed write is no offload and leaves
        no block behind. Until this runs the slot belongs to the write, so no other block holds it."""
        if self._writes.get(h) is fut:
            del self._writes[h]
        held = self._t2.get(h) == slot
        exc = None if fut.cancelled() else fut.exception()
        if fut.cancelled() or exc is not None:
            self.counters.tier2_write_errors += 1
            log.warning("tier2 write failed: %s", exc or "cancelled")
            if held:
                del self._t2[h]
                self._t2_index.forget(h)
            self.tier2.failed(slot, exc)
            return
        setattr(self.counters, counter, getattr(self.counters, counter) + 1)
        if not held:   # dropped while its write was in flight
            self.tier2.release(slot)

    def _drop_t2(self, h: bytes, evicted: bool = True) -> None:
        slot = self._t2.pop(h)
        self._t2_index.forget(h)
        if evicted:
            self.counters.tier2_evicted_blocks += 1
        if h not in self._writes:
            self.tier2.release(slot)
        # else the write's completion callback frees the slot (or, if the write failed, decides its fate)
