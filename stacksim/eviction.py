"""Victim selection for one KV tier: LRU, LFU or segmented LRU, each O(1) per operation.

Only evictable blocks are tracked here (tier0 blocks pinned by a running sequence are not).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Hashable, Optional


class LRU:
    def __init__(self) -> None:
        self._order: OrderedDict = OrderedDict()

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._order

    def add(self, key: Hashable) -> None:
        self._order[key] = None
        self._order.move_to_end(key)

    touch = add

    def remove(self, key: Hashable) -> None:
        self._order.pop(key, None)

    forget = remove

    def victim(self) -> Optional[Hashable]:
        return next(iter(self._order), None)


class LFU:
    """Least frequently used, ties broken by least recently used; frequency survives re-adds."""

    def __init__(self) -> None:
        self._freq: dict = {}
        self._buckets: dict[int, OrderedDict] = {}
        self._members: set = set()

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._members

    def _unlink(self, key: Hashable) -> None:
        f = self._freq[key]
        bucket = self._buckets[f]
        bucket.pop(key, None)
        if not bucket:
            del self._buckets[f]

    def add(self, key: Hashable) -> None:
        if key in self._members:
            self._unlink(key)
        f = self._freq.get(key, 0) + 1
        self._freq[key] = f
        self._members.add(key)
        self._buckets.setdefault(f, OrderedDict())[key] = None

    touch = add

    def remove(self, key: Hashable) -> None:
        if key in self._members:
            self._unlink(key)
            self._members.discard(key)

    def forget(self, key: Hashable) -> None:
        self.remove(key)
        self._freq.pop(key, None)

    def victim(self) -> Optional[Hashable]:
        if not self._buckets:
            return None
        return next(iter(self._buckets[min(self._buckets)]))


class Segmented:
    """Segmented LRU: blocks seen twice move to a protected segment evicted only after probation."""

    def __init__(self) -> None:
        self._probation: OrderedDict = OrderedDict()
        self._protected: OrderedDict = OrderedDict()
        self._seen: set = set()

    def __len__(self) -> int:
        return len(self._probation) + len(self._protected)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._probation or key in self._protected

    def add(self, key: Hashable) -> None:
        if key in self._seen:
            self._probation.pop(key, None)
            self._protected[key] = None
            self._protected.move_to_end(key)
        else:
            self._seen.add(key)
            self._probation[key] = None

    touch = add

    def remove(self, key: Hashable) -> None:
        self._probation.pop(key, None)
        self._protected.pop(key, None)

    def forget(self, key: Hashable) -> None:
        self.remove(key)
        self._seen.discard(key)

    def victim(self) -> Optional[Hashable]:
        return next(iter(self._probation), None) or next(iter(self._protected), None)


def make(policy: str):
    return {"lru": LRU, "lfu": LFU, "segmented": Segmented}[policy]()
