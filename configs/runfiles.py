"""A run's files: the on-disk contract between load generation and analysis, and what users' own
tools read. ``results/<run_id>/requests.jsonl`` holds one request record per line; ``manifest.json``
describes the run. Both the load generator (writer) and the analysis (reader) import this module and
nothing of each other.

Records are appended the moment a request ends, one ``write()`` of one line on an O_APPEND descriptor,
so records from several Locust worker processes on one machine interleave whole and a killed run keeps
every record that finished before the kill. The manifest is rewritten atomically (temporary file +
rename) at every change, so whatever kills the run leaves a valid one: ``status`` is ``running`` until
the end, then ``complete`` or ``incomplete``.

When the manifest cannot be written at the end (a full filesystem), ``STOPPED`` beside it says how the run
ended: creating a file needs no room for its data, and its name alone says the run is over.

The process writing a run or an experiment holds ``writer.lock`` in its directory (flock, for its whole
life; the kernel lets go when it dies): :func:`claim` tells a live writer's directory from an abandoned
one, so nothing moves or reuses a directory while its writer is alive.

``schema_version`` in the manifest names what a run's files hold; :func:`read_manifest` reads older
ones too, filling in what they did not have.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Optional

from .checks import LABEL_VALUE
from .paths import check_name, make_dir, open_file, write_file

# 1: the first harness; 2: schema_version itself, records of cut streams (cancelled_by_step) and
# cached_tokens, manifest's session_id_ignored and outages; 3: records' request_hash, manifest's tier_mode
# and request_manifest_hash (with request_manifest.jsonl); 4: open-loop records (intended_start_time,
# schedule_lag_s, shed_by_client); 5: manifest's rig and site (which rig of a fleet ran it)
SCHEMA_VERSION = 5
# what a manifest of an older version lacks, and the value that means "not known then"
MANIFEST_DEFAULTS = (("schema_version", 1), ("blocked", None), ("notes", ()), ("steps", ()), ("end", None),
                     ("session_id_ignored", False), ("outages", ()), ("tier_mode", None),
                     ("request_manifest_hash", None), ("rig", None), ("site", None))
REQUEST_MANIFEST = "request_manifest.jsonl"
STOPPED = "STOPPED"
WRITER_LOCK = "writer.lock"


# A request Locust cut by stopping its user (step boundary, end of run): recorded, because it was sent
# and the server counted it (Dynamo: requests_total{error_type="cancelled"}), but not a server error
# and never part of a latency percentile.
CANCELLED_BY_STEP = "cancelled_by_step"
# An open-loop arrival the client did not send because max_in_flight requests were already out: recorded
# (the schedule asked for it), never sent, so neither a server error nor a latency.
SHED_BY_CLIENT = "shed_by_client"
NOT_SERVER_OUTCOMES = (CANCELLED_BY_STEP, SHED_BY_CLIENT)
# A response with a success status and not one byte of body (no event at all): nothing was served, as a
# real Dynamo frontend answers once its worker is gone.
EMPTY_BODY = "empty_body"


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
    error_class: Optional[str] = None       # http_4xx/5xx, connection, empty_body, stream_cut, stream_error,
                                            # bad_stream, cancelled_by_step, shed_by_client
    error: Optional[str] = None             # the server's own message where it sent one
    ttfb_s: Optional[float] = None          # response headers
    ttft_s: Optional[float] = None          # first chunk with non-empty text
    e2e_s: Optional[float] = None
    itl_s: list[float] = field(default_factory=list)   # gaps between text chunks
    prompt_tokens: Optional[int] = None
    completion_tokens: Optional[int] = None
    tokens_source: Optional[str] = None     # "usage" or "counted" (chunks, when the stream sent no usage)
    prompt_tokens_target: Optional[int] = None   # the whole prompt's intended size (None for chat turns)
    turn_tokens_target: Optional[int] = None     # a chat turn's own intended size
    cached_tokens: Optional[int] = None
    request_hash: Optional[str] = None      # the prompt bytes and every generation parameter (request_hash())
    users_active: Optional[int] = None      # this Locust process's running users when the request was sent
    intended_start_time: Optional[float] = None   # open loop: when the schedule wanted the request sent
    schedule_lag_s: Optional[float] = None  # open loop: sent this much after it was due (an overloaded client)

    def to_json(self) -> str:
        d = dict(self.__dict__)             # shallow: asdict's deep copy of itl_s cost ~80 µs a record
        d["itl_s"] = [round(x, 6) for x in self.itl_s]
        return json.dumps(d, separators=(",", ":"))


class RecordWriter:
    def __init__(self, path: Path) -> None:
        make_dir(path.parent, exist_ok=True)
        self.path = path
        self._fd = open_file(path, os.O_WRONLY | os.O_APPEND)
        self._lock = threading.Lock()

    def write(self, record: RequestRecord) -> bytes:
        """Append one record (one write: several processes may share the file); returns the line."""
        line = (record.to_json() + "\n").encode()
        self.write_lines(line)
        return line

    def write_lines(self, lines: bytes) -> None:
        """Append complete lines written elsewhere (a worker's records, gathered by the master)."""
        with self._lock:
            os.write(self._fd, lines)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def request_hash(endpoint: str, body: dict) -> str:
    """A request's identity: the endpoint and the whole body (prompt bytes, model, max_tokens, sampling,
    session metadata), canonical JSON hashed. Two records with one hash asked the same thing."""
    return hashlib.blake2b(_canonical([endpoint, body]), digest_size=12).hexdigest()


def write_request_manifest(path: Path, entries: list[dict]) -> str:
    """The deterministic replay list of a run, one JSON object per line, and its semantic hash: what the
    entries say, not when or where they were written, so two runs of one workload share it."""
    lines = [_canonical(e) for e in entries]
    write_file(path, b"".join(line + b"\n" for line in lines))
    return hashlib.blake2b(b"\n".join(sorted(lines)), digest_size=12).hexdigest()


def tpot(e2e, ttft, tokens):
    """Time per output token after the first, as vLLM's benchmark and aiperf (its ITL) define it, for a request
    with two output tokens or more; numbers or columns alike."""
    return (e2e - ttft) / (tokens - 1)


def read_records(path: Path, fields: Optional[tuple] = None):
    """Complete records, as a list, or with ``fields`` as a generator of dicts holding only those keys (a
    3-hour run has hundreds of thousands of records)."""
    def lines():
        with open(path, "rb") as f:
            yield from parse_records(f, fields)
    return lines() if fields else list(lines())


def parse_records(lines: Iterable[bytes], fields: Optional[tuple] = None):
    """The records of raw JSONL lines, each a dict (with ``fields``: only those keys). A damaged line — cut
    by a crash mid-write, not UTF-8, not JSON, not an object — is skipped, never fatal: every good record
    of the run still counts."""
    for raw in lines:
        if not raw.endswith(b"\n"):
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
        except ValueError:              # UnicodeDecodeError is a ValueError too
            continue
        if isinstance(rec, dict):
            yield {k: rec.get(k) for k in fields} if fields else rec


def new_run_id(hypothesis: str, stack: str) -> str:
    """``<hypothesis>-<stack>-<UTC time>-<4 hex>``: sorts by time, unique per start, and a valid name."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{hypothesis.lower()}-{stack}-{stamp}-{random.getrandbits(16):04x}"


def utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


class Manifest:
    """The manifest as the run goes: every change is written at once, atomically."""

    def __init__(self, path: Path, doc: dict) -> None:
        self.path, self.doc = path, doc
        self.write()

    def write(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        try:
            write_file(tmp, json.dumps(self.doc, indent=1, default=str) + "\n")
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)        # the last good manifest stays, without a torn copy beside it
            raise

    def _save(self) -> None:
        """A write in the middle of the run. Where the filesystem refuses it the document stays whole in
        memory for the next write, and finish() says so if that one fails too: the bookkeeping never stops
        the run (nor the closing of it) halfway."""
        with contextlib.suppress(OSError):
            self.write()

    def update(self, **fields) -> None:
        """Set top-level fields mid-run (what the telemetry watch saw, say), saved as _save() saves."""
        self.doc.update(fields)
        self._save()

    def begin_step(self, entry: dict) -> None:
        now = time.time()
        self._end_step(now)
        self.doc["steps"].append({**entry, "start": now, "started_at": utc(now), "end": None, "ended_at": None})
        self._save()

    def mark_step(self, **fields) -> None:
        """What is learned of the running step after it began (when it reached its target load)."""
        if self.doc["steps"]:
            self.doc["steps"][-1].update(fields)
            self._save()

    def end_step(self) -> None:
        """The last step ends now, not when the run is closed after waiting for workers' last records."""
        if self._end_step(time.time()):
            self._save()

    def _end_step(self, now: float) -> bool:
        if self.doc["steps"] and self.doc["steps"][-1]["end"] is None:
            self.doc["steps"][-1].update(end=now, ended_at=utc(now))
            return True
        return False

    def note(self, text: str) -> None:
        self.doc["notes"].append({"at": utc(time.time()), "text": text})
        self._save()

    def block(self, reason: str) -> None:
        if self.doc["blocked"] is None:
            self.doc["blocked"] = {"reason": reason, "at": utc(time.time())}
            self._save()

    def finish(self, complete: bool, reason: Optional[str] = None) -> None:
        if self.doc["end"] is not None:
            return
        now = time.time()
        self._end_step(now)
        self.doc.update(status="complete" if complete else "incomplete", end=now, ended_at=utc(now))
        if reason:
            self.doc["stop_reason"] = reason
        try:
            self.write()
        except OSError as exc:
            self._mark_stopped(exc)

    def _mark_stopped(self, exc: OSError) -> None:
        """The manifest could not be written: STOPPED says how the run ended, or, where not even that can be
        written, stderr does."""
        text = (f"{self.doc['status']}: {self.doc.get('stop_reason') or 'every step ran'}; manifest.json not "
                f"written ({exc.strerror})")
        try:
            fd = open_file(self.path.parent / STOPPED)
            try:
                os.write(fd, (text + "\n").encode())
            finally:
                os.close(fd)
        except OSError as marker:
            print(f"run {self.doc['run_id']} {text}; {STOPPED} not written either ({marker.strerror})",
                  file=sys.stderr, flush=True)


def hold_writer_lock(directory: Path) -> Optional[int]:
    """Take ``directory``'s writer lock for the rest of this process's life (the descriptor is never closed:
    the kernel releases it at exit, however the process ends). None when a live process holds it."""
    fd = open_file(directory / WRITER_LOCK, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def claim(directory: Path) -> Iterator[bool]:
    """True while no live process writes ``directory`` (and none can start to, until the block ends); False
    when its writer is alive. A directory without a lock file never had a writer that takes one."""
    try:
        fd = os.open(directory / WRITER_LOCK, os.O_RDONLY)
    except FileNotFoundError:
        fd = None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        free = True
    except BlockingIOError:
        free = False
    try:
        yield free
    finally:
        if fd is not None:
            os.close(fd)


def read_manifest(path: Path) -> dict:
    """A run's manifest, of this version or an older one (missing keys get their "not known" value).
    Raises ValueError, with a one-line reason, when the file is damaged or not a manifest at all."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:                   # truncated, not JSON, not UTF-8
        raise ValueError(f"{path} is damaged: {str(exc).splitlines()[0][:120]}") from None
    if not isinstance(doc, dict) or not {"run_id", "start", "stack", "hypothesis"} <= set(doc):
        raise ValueError(f"{path} is not a run manifest (run_id, start, stack or hypothesis missing)")
    if doc.get("schema_version", 1) > SCHEMA_VERSION:
        raise ValueError(f"{path} has schema_version {doc['schema_version']}; this harness reads up to "
                         f"{SCHEMA_VERSION}")
    check_name(doc["run_id"], "manifest run_id")         # what queries and paths are built from
    for key in ("rig", "site"):
        if doc.get(key) is not None and not (isinstance(doc[key], str) and LABEL_VALUE.fullmatch(doc[key])):
            raise ValueError(f"{path}: invalid {key} {doc[key]!r} (letters, digits, '.', '_' or '-')")
    return {**{k: list(v) if isinstance(v, tuple) else v for k, v in MANIFEST_DEFAULTS}, **doc}
