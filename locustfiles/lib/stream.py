"""OpenAI streaming over Locust's FastHttpUser: one request in, one RequestRecord out.

Timing is taken on the client: TTFB when the response headers arrive, TTFT at the first chunk
that carries non-empty text (role-only and empty chunks do not count), inter-token gaps between
text chunks, E2E at the end of the stream. Token counts come from the final usage chunk
(``stream_options.include_usage``), or from counting text chunks when the server sends none.
"""
from __future__ import annotations

import json
import re
import time
from typing import Optional

from configs.runfiles import EMPTY_BODY, RequestRecord

DONE = b"[DONE]"


def chunk_text(event: dict) -> str:
    choices = event.get("choices") or []
    if not choices:
        return ""
    c = choices[0]
    if "text" in c:
        return c.get("text") or ""
    return (c.get("delta") or {}).get("content") or ""


def error_message(status: int, body: bytes) -> str:
    """The server's own words: OpenAI {"error": {"message"}}, FastAPI {"detail"}, or the text."""
    try:
        doc = json.loads(body)
    except ValueError:
        text = body.decode(errors="replace").strip()
        return text[:300] or f"HTTP {status}"
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        for key in ("message", "detail", "error"):
            if doc.get(key):
                return str(doc[key])[:300]
    return json.dumps(doc)[:300]


# Where a chunk's text starts, found without parsing the chunk: chat's "delta":{"content":"…"} and
# completions' "text":"…". The group is the string's first byte ('"' when the text is empty); a null,
# "reasoning_content" or logprobs' "content":[…] never matches. Parsing every chunk cost the client's
# one core ~4 µs a chunk; this scan ~0.4 µs.
_TEXT_START = re.compile(rb'"(?:content|text)"\s*:\s*"(.)', re.S)
# The chunks that must be parsed whatever the scan says: the usage chunk and a mid-stream error.
_MUST_PARSE = re.compile(rb'"(?:usage|error)"\s*:\s*\{')


def _unparseable(record: RequestRecord, payload: bytes) -> None:
    record.error_class, record.error = "bad_stream", f"unparseable event: {payload[:80]!r}"


def read_stream(response, record: RequestRecord, started: float, text: Optional[list[str]]) -> None:
    """Consume SSE lines from a geventhttpclient response as they arrive, filling ``record``; with ``text``
    a list, the generated text is collected too (sessions send it back as the assistant's turn), which
    means parsing every text chunk. Without it only the usage and error chunks are parsed."""
    raw = response._response                     # FastResponse keeps the streaming socket response here
    last_text_at: Optional[float] = None
    counted = 0
    done = received = False
    while True:
        line = raw.readline(b"\n")
        now = time.perf_counter()                  # at receipt, before any parsing
        if not line:
            break
        received = True
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == DONE:
            done = True
            break
        if not (payload.startswith(b"{") and payload.endswith(b"}")):
            _unparseable(record, payload)
            return
        start = _TEXT_START.search(payload)
        has_text = start is not None and start.group(1) != b'"'
        if (has_text and text is not None) or _MUST_PARSE.search(payload):
            try:
                event = json.loads(payload)
            except ValueError:
                _unparseable(record, payload)
                return
            if isinstance(event.get("error"), dict):    # errors sent mid-stream (vLLM, Dynamo)
                record.error_class = "stream_error"
                record.error = str(event["error"].get("message", event["error"]))[:300]
                return
            piece = chunk_text(event)
            has_text = bool(piece)
            if piece and text is not None:
                text.append(piece)
            usage = event.get("usage")
            if isinstance(usage, dict):
                record.prompt_tokens = usage.get("prompt_tokens")
                record.completion_tokens = usage.get("completion_tokens")
                record.tokens_source = "usage"
                details = usage.get("prompt_tokens_details") or {}
                record.cached_tokens = details.get("cached_tokens")
        if has_text:
            counted += 1
            if record.ttft_s is None:
                record.ttft_s = now - started
            else:
                record.itl_s.append(now - last_text_at)
            last_text_at = now
    record.e2e_s = time.perf_counter() - started
    if record.tokens_source is None:
        record.completion_tokens, record.tokens_source = counted, "counted"
    if not received:
        record.error_class, record.error = EMPTY_BODY, f"HTTP {record.status} with an empty body"
    elif not done:
        record.error_class, record.error = "stream_cut", "stream ended without [DONE]"


def send(client, path: str, body: dict, record: RequestRecord, stats_name: str,
         text: list[str] | None = None) -> RequestRecord:
    """POST a streaming request through a FastHttpSession and fill in ``record`` (and ``text``, when given,
    with the generated text).

    Locust's own statistics get one entry per request, as Locust's OpenAIUser (locust/contrib/oai.py) reports
    it: the whole stream's time (E2E) as its response time and the output tokens as its length; failures
    carry the server's message. TTFT and ITL are the step lines' and Grafana's (a TTFT entry of its own
    was added into Locust's Aggregated row: three "requests" per request, an average of TTFT and E2E).
    """
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    record.start_time = time.time()
    started = time.perf_counter()
    with client.request("POST", path, json=body, stream=True, catch_response=True, name=stats_name) as resp:
        record.ttfb_s = time.perf_counter() - started
        error = getattr(resp, "error", None)
        record.status = resp.status_code or 0
        if record.status == 0 or (error is not None and record.status < 400):
            record.error_class, record.error = "connection", str(error or "no response")[:300]
        elif record.status >= 400:
            record.error_class = f"http_{record.status}"
            record.error = error_message(record.status, resp.content or b"")
        else:
            try:
                read_stream(resp, record, started, text)
            except Exception as exc:                    # connection dropped mid-body
                record.error_class, record.error = "stream_cut", f"{type(exc).__name__}: {exc}"[:300]
        record.e2e_s = record.e2e_s or time.perf_counter() - started
        record.ok = record.error_class is None
        resp.request_meta["response_time"] = record.e2e_s * 1000
        resp.request_meta["response_length"] = record.completion_tokens or 0
        if record.ok:
            resp.success()
        else:
            resp.failure(f"{record.error_class}: {record.error}")
    return record
