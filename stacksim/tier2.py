"""Tier 2: KV blocks as real block-sized ``pwrite``/``pread`` in one file in the tier2 directory, made the way
KVBM makes its disk cache (ai-dynamo/dynamo lib/llm/src/block_manager/storage/disk.rs and nixl.rs):
``dynamo-kvbm-disk-cache-XXXXXX`` created exclusively in the directory (mkostemp, O_CLOEXEC), O_DIRECT set
on it afterwards (KVBM's default allocator, `DefaultDirectIo`), sized to the tier at start, then unlinked
(KVBM unlinks once NIXL has registered it): ``ls`` and ``du`` show nothing while the process holds it, so
tier2 evidence comes from the disk that holds the directory and from the serving process's own reads
(/proc/<pid>/io), never from a visible file. KVBM fallocates the size; this uses KVBM's truncate fallback
(a sparse file), so a simulator on a shared machine never takes space it does not write.

O_DIRECT reads and writes reach the device and show up in /proc/diskstats, iostat and the NVMe exporter,
and fio contention slows them. Where O_DIRECT is refused (tmpfs, some overlay filesystems) it falls back
to buffered I/O with ``fdatasync`` + ``POSIX_FADV_DONTNEED`` so reads still miss the page cache, and logs it.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import random
import string
import threading
from pathlib import Path

log = logging.getLogger("stacksim.tier2")
NAME_CHARS = string.ascii_letters + string.digits      # what mkostemp fills XXXXXX with


class Tier2Store:
    """Fixed-size slots in ``<dir>/<name>``; capacity is a slot count, never exceeded, and never more
    than the filesystem really holds: it is cut to the free space at start, and the first write the
    filesystem refuses for lack of space (ENOSPC) freezes it at the slots already handed out, less
    the slots whose writes were refused (those are never reused)."""

    def __init__(self, directory: Path, block_bytes: int, capacity_blocks: int) -> None:
        self.block_bytes = block_bytes
        st = os.statvfs(directory)
        fits = st.f_bavail * st.f_frsize // block_bytes
        if fits < capacity_blocks:
            log.warning("tier2 %s: capacity cut from %d to %d blocks: the filesystem has only %.1f MiB free",
                        directory, capacity_blocks, fits, st.f_bavail * st.f_frsize / 2**20)
        self._limit = min(capacity_blocks, fits)
        self._full = False
        self._unbacked: set[int] = set()   # slots whose write the filesystem refused for lack of space
        self._recycled: list[int] = []   # released slots; never-used slots come from _next
        self._next = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self.bytes_written = 0
        self.bytes_read = 0
        self.fd, self.path = _create(Path(directory))
        self.direct = False
        if hasattr(os, "O_DIRECT") and block_bytes % 4096 == 0:
            try:
                fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) | os.O_DIRECT)
                self.direct = True
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    raise
        if not self.direct:
            log.warning("tier2 %s: O_DIRECT not available on this filesystem; using buffered I/O "
                        "with fdatasync + fadvise(DONTNEED)", self.path)
        try:
            os.ftruncate(self.fd, self._limit * block_bytes)
        except OSError as exc:          # a file-size limit: the file grows as blocks are written instead
            if exc.errno not in (errno.EFBIG, errno.ENOSPC, errno.EDQUOT):
                raise
            log.warning("tier2 %s: cannot size the file to %d blocks (%s); it grows as blocks are written",
                        self.path, self._limit, exc.strerror)
        os.unlink(self.path)

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

    def close(self) -> None:
        """The file goes with its last descriptor: it was unlinked at start."""
        try:
            os.close(self.fd)
        except OSError:
            pass


def _create(directory: Path) -> tuple[int, Path]:
    """mkostemp(``dynamo-kvbm-disk-cache-XXXXXX``, O_CLOEXEC): a new file of that name, never an existing one."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        path = directory / ("dynamo-kvbm-disk-cache-" + "".join(random.choices(NAME_CHARS, k=6)))
        try:
            return os.open(path, flags, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free dynamo-kvbm-disk-cache-XXXXXX name in {directory}")
