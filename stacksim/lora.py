"""LoRA adapters as real files: a cold load reads the adapter from disk, a warm one costs nothing.

Adapter files live in ``<tier2 dir>/lora/``; names are validated by ``configs.paths.safe_join``
so a request can never make the simulator touch anything outside that directory.
"""
from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from configs.paths import safe_join


def adapter_names(count: int) -> list[str]:
    return [f"lora-{i:03d}" for i in range(count)]


class LoraStore:
    def __init__(self, directory: Path, count: int, size: int, max_resident: int, load_s: float,
                 io: Callable[..., asyncio.Future]) -> None:
        self.dir = Path(directory) / "lora"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.size = size
        self.max_resident = max_resident
        self.load_s = load_s
        self.io = io
        self.names = adapter_names(count)
        self._known = set(self.names)
        self._resident: OrderedDict[str, None] = OrderedDict()
        self._loading: dict[str, asyncio.Future] = {}
        self.cold_loads = 0
        self.warm_hits = 0
        block = os.urandom(min(size, 1 << 20))
        for name in self.names:
            with open(safe_join(self.dir, name + ".bin"), "wb") as f:
                for _ in range(max(1, size // len(block))):
                    f.write(block)

    def __contains__(self, name: str) -> bool:
        return name in self._known

    def _read(self, name: str) -> int:
        path = safe_join(self.dir, name + ".bin")
        fd = os.open(path, os.O_RDONLY)
        try:
            # Drop the page cache first so a cold load really reads the device.
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            n = 0
            while chunk := os.read(fd, 1 << 20):
                n += len(chunk)
            return n
        finally:
            os.close(fd)

    async def ensure(self, name: str, sleep: Callable[[float], asyncio.Future]) -> bool:
        """Make ``name`` resident; returns True when this call had to load it (cold)."""
        if name in self._resident:
            self._resident.move_to_end(name)
            self.warm_hits += 1
            return False
        pending = self._loading.get(name)
        if pending is None:
            pending = self._loading[name] = asyncio.ensure_future(self._load(name, sleep))
        await asyncio.shield(pending)
        return True

    async def _load(self, name: str, sleep) -> None:
        try:
            await self.io(self._read, name)
            await sleep(self.load_s)
            self.cold_loads += 1
            self._resident[name] = None
            while len(self._resident) > self.max_resident:
                self._resident.popitem(last=False)
        finally:
            self._loading.pop(name, None)
