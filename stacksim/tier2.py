"""Tier 2: KV blocks as real block-sized ``pwrite``/``pread`` in one slot file under the tier2 directory.

O_DIRECT is used where the filesystem allows it, so reads and writes reach the device and
show up in /proc/diskstats, iostat and the NVMe exporter, and fio contention slows them.
Where O_DIRECT is refused (tmpfs, some overlay filesystems) it falls back to buffered I/O
with ``fdatasync`` + ``POSIX_FADV_DONTNEED`` so reads still miss the page cache, and logs it.
"""
from __future__ import annotations

import errno
import logging
import mmap
import os
import threading
from pathlib import Path

log = logging.getLogger("stacksim.tier2")


class Tier2Store:
    """Fixed-size slots in ``<dir>/<name>``; capacity is a slot count, never exceeded, and never more
    than the filesystem really holds: it is cut to the free space at start, and the first write the
    filesystem refuses for lack of space (ENOSPC) freezes it at the slots already handed out, less
    the slots whose writes were refused (those are never reused)."""

    def __init__(self, directory: Path, name: str, block_bytes: int, capacity_blocks: int) -> None:
        self.path = Path(directory) / name
        self.block_bytes = block_bytes
        st = os.statvfs(directory)
        fits = st.f_bavail * st.f_frsize // block_bytes
        if fits < capacity_blocks:
            log.warning("tier2 %s: capacity cut from %d to %d blocks: the filesystem has only %.1f MiB free",
                        self.path, capacity_blocks, fits, st.f_bavail * st.f_frsize / 2**20)
        self._limit = min(capacity_blocks, fits)
        self._full = False
        self._unbacked: set[int] = set()   # slots whose write the filesystem refused for lack of space
        self._recycled: list[int] = []   # released slots; never-used slots come from _next
        self._next = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self.bytes_written = 0
        self.bytes_read = 0
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
        self.direct = False
        if hasattr(os, "O_DIRECT") and block_bytes % 4096 == 0:
            try:
                self.fd = os.open(self.path, flags | os.O_DIRECT, 0o600)
                self.direct = True
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    raise
        if not self.direct:
            self.fd = os.open(self.path, flags, 0o600)
            log.warning("tier2 %s: O_DIRECT not available on this filesystem; using buffered I/O "
                        "with fdatasync + fadvise(DONTNEED)", self.path)

    def _buffer(self) -> mmap.mmap:
        # Page-aligned scratch per I/O thread: O_DIRECT needs aligned memory, mmap gives it.
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = mmap.mmap(-1, self.block_bytes)
        return buf

    def allocate(self) -> int | None:
        with self._lock:
            if self._recycled:
                return self._recycled.pop()
            if not self._full and self._next < self._limit:
                self._next += 1
                return self._next - 1
            return None

    def release(self, slot: int) -> None:
        with self._lock:
            self._recycled.append(slot)

    def failed(self, slot: int, exc: BaseException | None) -> None:
        """A write to ``slot`` failed. Out of space: the slot has no backing and the store stops
        growing; any other error: the slot is free again."""
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            with self._lock:
                if not self._full:
                    log.warning("tier2 %s: filesystem full after %d blocks; capacity frozen there",
                                self.path, self._next - len(self._unbacked) - 1)
                self._full = True
                self._unbacked.add(slot)
        else:
            self.release(slot)

    @property
    def capacity(self) -> int:
        return (self._next if self._full else self._limit) - len(self._unbacked)

    def write(self, slot: int, key: bytes) -> None:
        """Write the block's bytes (its key repeated, so a read can verify it got the right block)."""
        buf = self._buffer()
        buf.seek(0)
        buf.write((key * (self.block_bytes // len(key) + 1))[: self.block_bytes])
        off = slot * self.block_bytes
        n = os.pwrite(self.fd, buf, off)
        if n != self.block_bytes:   # a full filesystem may take part of a block before it refuses
            raise OSError(errno.ENOSPC, f"short write to tier2: {n} of {self.block_bytes} bytes")
        if not self.direct:
            os.fdatasync(self.fd)
            os.posix_fadvise(self.fd, off, self.block_bytes, os.POSIX_FADV_DONTNEED)
        with self._lock:  # several I/O threads finish at once; += is not atomic across threads
            self.bytes_written += n

    def read(self, slot: int, key: bytes) -> bool:
        """Read the block back; False if the read fails or what is on disk is not the block that was
        written. Only bytes the kernel returned are counted as read."""
        buf = self._buffer()
        off = slot * self.block_bytes
        try:
            n = os.preadv(self.fd, [buf], off)
        except OSError as exc:
            log.warning("tier2 read of slot %d failed: %s", slot, exc)
            return False
        if not self.direct:
            os.posix_fadvise(self.fd, off, self.block_bytes, os.POSIX_FADV_DONTNEED)
        with self._lock:
            self.bytes_read += n
        return n == self.block_bytes and buf[: len(key)] == key

    def close(self, remove: bool = True) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
        if remove:
            self.path.unlink(missing_ok=True)
