"""Cold passes (H1): make the next reads come from the device, or say plainly that they will not.

Dropping the whole page cache needs root (/proc/sys/vm/drop_caches); without it the files the
pass will read (adapter files under the tier2 directory) are evicted one by one with
posix_fadvise(DONTNEED), which any owner may do. What was done is recorded in the step's entry.
"""
from __future__ import annotations

import os
from pathlib import Path


def make_cold(directory: Path) -> str:
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return "drop_caches: page cache dropped"
    except OSError as exc:
        reason = exc.strerror
    evicted = 0
    if directory.is_dir():
        for path in directory.rglob("*"):
            if path.is_file():
                try:
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                        evicted += 1
                    finally:
                        os.close(fd)
                except OSError:
                    continue
    if evicted:
        return f"fadvise_dontneed: {evicted} files under {directory} evicted (drop_caches refused: {reason})"
    return f"not cold: drop_caches refused ({reason}) and no files under {directory} to evict yet"
