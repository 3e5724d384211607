"""Request traces in the Mooncake format (JSONL: ``timestamp`` ms, ``input_length``, ``output_length``,
``hash_ids`` = ids of 512-token blocks; equal ids share a prefix), read and validated, and their arrival
schedule: the trace's own gaps, times a scale, never faster than a rate cap. Whether each entry fits the
served context is known only at preflight, which checks it with ``too_long``."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from configs import ConfigError


@dataclass(frozen=True)
class TraceEntry:
    timestamp_ms: float
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]
    line: int                    # its line in the file, for messages (entries are kept in timestamp order)


def load(path: Path) -> list[TraceEntry]:
    """Every line, in timestamp order; a bad line is a ConfigError naming the file and the line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"trace {path}: cannot read it ({exc})") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            entry = TraceEntry(float(doc["timestamp"]), int(doc["input_length"]), int(doc["output_length"]),
                               tuple(int(h) for h in doc["hash_ids"]), n)
        except (ValueError, KeyError, TypeError, OverflowError) as exc:     # OverflowError: int(Infinity)
            raise ConfigError(f"trace {path}:{n}: expected timestamp, input_length, output_length and hash_ids "
                              f"({type(exc).__name__}: {exc})") from None
        if not math.isfinite(entry.timestamp_ms) or entry.timestamp_ms < 0:     # JSON's Infinity and NaN parse
            raise ConfigError(f"trace {path}:{n}: timestamp must be a finite number of milliseconds, not negative, "
                              f"got {doc['timestamp']!r}")
        if entry.input_length <= 0 or entry.output_length <= 0:
            raise ConfigError(f"trace {path}:{n}: input_length and output_length must be positive")
        out.append(entry)
    if not out:
        raise ConfigError(f"trace {path}: no requests in it")
    return sorted(out, key=lambda e: e.timestamp_ms)


def too_long(entries: list[TraceEntry], limit: int, max_tokens: int) -> TraceEntry | None:
    """The entry of the lowest line whose prompt and answer (its output_length, at most ``max_tokens``) cannot
    fit ``limit`` tokens: sent, it would only build a prompt the stack refuses."""
    return min((e for e in entries if e.input_length + min(e.output_length, max_tokens) > limit),
               key=lambda e: e.line, default=None)


def arrivals(entries: list[TraceEntry], time_scale: float, max_rps: float) -> Iterator[tuple[float, TraceEntry]]:
    """(seconds since the previous arrival, entry): the trace's gaps x ``time_scale``, at least 1/max_rps."""
    previous = entries[0].timestamp_ms
    floor = 1.0 / max_rps if max_rps > 0 else 0.0
    for e in entries:
        yield max((e.timestamp_ms - previous) / 1000 * time_scale, floor), e
        previous = e.timestamp_ms
