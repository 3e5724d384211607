"""KVBM's CPU→disk offload filter, which spares the SSD blocks seen once.

As ai-dynamo/dynamo lib/llm/src/block_manager/offload/filter.rs (`FrequencyFilter`) has it, with the
defaults of lib/bindings/kvbm/src/block_manager.rs (`create_disk_offload_filter`: threshold 2, decay every
600 s, at most 1,000,000 entries): each time a host block is queued for disk offload its count doubles (a
new one starts at 1), and it goes to disk only at a count >= 2, so on its second sighting within a decay
period; every period subtracts 1 from every count and forgets those at 0. KVBM attaches it to the host
tier only when the disk tier has blocks, and `DYN_KVBM_DISABLE_DISK_OFFLOAD_FILTER=true` (or `1`) turns it
off; here the profile's `disk_offload_filter` says which. The decay is applied lazily (a count remembers
the period it was last changed in), which gives the same counts as KVBM's timer.
"""
from __future__ import annotations

import time
from typing import Callable

THRESHOLD = 2
DECAY_S = 600.0
MAX_ENTRIES = 1_000_000


class FrequencyFilter:
    def __init__(self, decay_s: float = DECAY_S, clock: Callable[[], float] = time.monotonic,
                 threshold: int = THRESHOLD, max_entries: int = MAX_ENTRIES) -> None:
        self.decay_s, self.clock, self.threshold, self.max_entries = decay_s, clock, threshold, max_entries
        self._start = clock()
        self._counts: dict[bytes, tuple[int, int]] = {}     # hash -> (count, decay period it was set in)
        self.filtered = 0                                    # blocks kept off the disk

    def _period(self) -> int:
        return int((self.clock() - self._start) // self.decay_s)

    def should_offload(self, h: bytes) -> bool:
        now = self._period()
        count, since = self._counts.get(h, (0, now))
        count -= now - since                                 # one decay step per period passed
        count = count * 2 if count > 0 else 1
        self._counts[h] = (count, now)
        while len(self._counts) > self.max_entries:          # KVBM decays until the map fits again
            self._counts = {k: (c - (now - s) - 1, now) for k, (c, s) in self._counts.items()
                            if c - (now - s) - 1 > 0}
        if count >= self.threshold:
            return True
        self.filtered += 1
        return False
