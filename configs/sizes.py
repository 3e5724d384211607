"""Byte sizes as operators write them: ``8GiB``, ``512MiB``, ``64KiB``, ``1.5GB`` or plain bytes.

Binary (KiB/MiB/GiB/TiB) and decimal (KB/MB/GB/TB) units are both accepted because
the test plan speaks GiB while Dynamo's own knobs (``DYN_KVBM_*_CACHE_GB``) are
decimal gigabytes.
"""
from __future__ import annotations

import re

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(?P<num>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[a-zA-Z]*)\s*$")


def parse_size(value: object) -> int:
    """Return a non-negative byte count, or raise ValueError saying what is wrong."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 8GiB, 512MiB or plain bytes, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative, got {value}")
        return value
    if isinstance(value, float):
        if value < 0 or value != int(value):
            raise ValueError(f"size must be a whole, non-negative number of bytes, got {value}")
        return int(value)
    if isinstance(value, str):
        if value.strip().startswith("-"):
            raise ValueError(f"size must not be negative, got {value!r}")
        m = _SIZE_RE.match(value)
        unit = m.group("unit").lower() if m else None
        if m and unit in _UNITS:
            n = float(m.group("num")) * _UNITS[unit]
            if n != int(n):
                raise ValueError(f"size {value!r} is not a whole number of bytes")
            return int(n)
    raise ValueError(f"expected a size such as 8GiB, 512MiB or plain bytes, got {value!r}")


def format_size(n: int) -> str:
    """Shortest exact binary-unit spelling, so configs round-trip through show/validate."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


def format_duration(seconds: float) -> str:
    """``4m05s``, ``2h15m00s``: a run's length as the console and the hypothesis table print it."""
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}h{m % 60:02d}m{s:02d}s" if m >= 60 else f"{m}m{s:02d}s"
