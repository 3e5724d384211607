"""Per-request records, appended to results/<run_id>/requests.jsonl the moment a request ends.

Each record is one ``write()`` of one line on an O_APPEND descriptor, so records from several
Locust worker processes on one machine interleave whole and a killed run keeps every record that
finished before the kill.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional


# A request Locust cut by stopping its user (step boundary, end of run): recorded, because it was sent
# and the server counted it (Dynamo: requests_total{error_type="cancelled"}), but not a server error
# and never part of a latency percentile.
CANCELLED_BY_STEP = "cancelled_by_step"


@dataclass
class RequestRecord:
    run_id: str
    hypothesis: str
    stack: str
    workload: str
    step: int
    repetition: int
    phase: str
    target_concurrency: int
    target_context_tokens: int
    user: int
    worker: str
    endpoint: str
    model: str
    start_time: float = 0.0                 # epoch seconds, when the request was sent
    adapter: Optional[str] = None
    session_id: Optional[str] = None
    turn: Optional[int] = None
    prefix_hash: Optional[str] = None
    status: int = 0                         # HTTP status; 0 when no response arrived
    ok: bool = False
    error_class: Optional[str] = None       # http_4xx/5xx, connection, stream_cut, stream_error, bad_stream,
                                            # cancelled_by_step
    error: Optional[str] = None             # the server's own message where it sent one
    ttfb_s: Optional[float] = None          # response headers
    ttft_s: Optional[float] = None          # first chunk with non-empty text
    e2e_s: Optional[float] = None
    itl_s: list[float] = field(default_factory=list)   # gaps between text chunks
    prompt_tokens: Optional[int] = None
    completion_tokens: Optional[int] = None
    tokens_source: Optional[str] = None     # "usage" or "counted" (chunks, when the stream sent no usage)
    prompt_tokens_target: Optional[int] = None
    cached_tokens: Optional[int] = None

    def to_json(self) -> str:
        d = asdict(self)
        d["itl_s"] = [round(x, 6) for x in self.itl_s]
        return json.dumps(d, separators=(",", ":"))


class RecordWriter:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def write(self, record: RequestRecord) -> None:
        line = (record.to_json() + "\n").encode()
        with self._lock:
            os.write(self._fd, line)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def read_records(path: Path, fields: Optional[tuple] = None):
    """Complete records (a line cut by a crash mid-write is skipped), as a list, or with ``fields`` as a
    generator of dicts holding only those keys (a 3-hour run has hundreds of thousands of records)."""
    def lines():
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.endswith("\n"):
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    yield {k: rec.get(k) for k in fields} if fields else rec
    return lines() if fields else list(lines())
