"""The client's stream reader against a loopback server sending crafted SSE streams: the fast scan (only
usage and error chunks parsed) must reach the same record as parsing every chunk, on the shapes real
servers send (role-only and empty deltas, null content at the finish, reasoning_content, logprobs'
"content" lists, escaped quotes, usage with or without text, mid-stream errors, damaged and cut streams)."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def chat(content) -> str:
    return json.dumps({"id": "c1", "object": "chat.completion.chunk", "model": "m",
                       "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]})


USAGE = json.dumps({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3,
                                             "prompt_tokens_details": {"cached_tokens": 2}}})
STREAMS = {
    "chat": [json.dumps({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
             chat('"hi'), chat(" \u00e9t\u00e9"), chat(""), chat('say "content":"" ok'),
             json.dumps({"choices": [{"index": 0, "delta": {"content": None}, "finish_reason": "stop"}]}),
             USAGE, "[DONE]"],
    "completions": ['{"choices": [{"text" : "a"}]}', '{"choices":[{"delta":{"reasoning_content":"think"}}]}',
                    '{"choices":[{"text":"","logprobs":{"content":[{"token":"x"}]}}]}', '{"choices":[{"text":"b"}]}',
                    "[DONE]"],
    "usage_with_text": [chat("a"), json.dumps({"choices": [{"index": 0, "delta": {"content": "z"}}],
                                               "usage": {"prompt_tokens": 1, "completion_tokens": 2}}), "[DONE]"],
    "error": [chat("a"), '{"error": {"message": "Internal server error", "code": 500}}', "[DONE]"],
    "damaged": [chat("a"), '{"choices":[{"delta":{"content":"x"', "[DONE]"],
    "not_json": [chat("a"), "garbage", "[DONE]"],
    "cut": [chat("a"), chat("b")],
}
EXPECTED = {   # (error_class, text chunks counted, completion_tokens, tokens_source, cached_tokens)
    "chat": (None, 3, 3, "usage", 2),
    "completions": (None, 2, 2, "counted", None),
    "usage_with_text": (None, 2, 2, "usage", None),
    "error": ("stream_error", 1, None, None, None),
    "damaged": ("bad_stream", 1, None, None, None),
    "not_json": ("bad_stream", 1, None, None, None),
    "cut": ("stream_cut", 2, 2, "counted", None),
}


class SSE(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        body = "".join(f"data: {event}\n\n" for event in STREAMS[self.path.rsplit("/", 1)[1]]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


CLIENT = """
import json, sys
from locust.contrib.fasthttp import FastHttpSession
from locust.event import EventHook
from configs.runfiles import RequestRecord
from locustfiles.lib.stream import send
session = FastHttpSession(sys.argv[1], request_event=EventHook(), user=None)
out = {}
for name in sys.argv[2:]:
    for collect in (False, True):
        rec = RequestRecord("r", "H0", "A", "fixed_context", 0, 0, "run", 1, 1, 0, "w", "chat/completions", "m")
        text = [] if collect else None
        send(session, "/" + name, {"model": "m", "messages": []}, rec, name, text)
        out[f"{name}:{collect}"] = {**json.loads(rec.to_json()), "text": text}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def sse_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), SSE)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_the_fast_scan_reads_every_stream_as_parsing_it_whole_does(sse_server):
    proc = subprocess.run([sys.executable, "-c", CLIENT, sse_server, *STREAMS], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (error_class, chunks, tokens, source, cached) in EXPECTED.items():
        fast, whole = out[f"{name}:False"], out[f"{name}:True"]
        got = (fast["error_class"], 1 + len(fast["itl_s"]) if fast["ttft_s"] is not None else 0,
               fast["completion_tokens"], fast["tokens_source"], fast["cached_tokens"])
        assert got == (error_class, chunks, tokens, source, cached), name
        for key in ("ok", "error_class", "error", "completion_tokens", "prompt_tokens", "tokens_source",
                    "cached_tokens"):
            assert fast[key] == whole[key], (name, key)
        assert len(fast["itl_s"]) == len(whole["itl_s"]) and fast["text"] is None
    assert "".join(out["chat:True"]["text"]) == '"hi \u00e9t\u00e9say "content":"" ok'
    assert out["error:False"]["error"] == "Internal server error"


def test_the_batch_histogram_exposes_what_prometheus_clients_histogram_does():
    """Same buckets, same values (bounds themselves included: le is inclusive) -> the same _bucket, _sum
    and _count samples as prometheus_client's own Histogram, for two label sets."""
    from prometheus_client import CollectorRegistry, Histogram
    from prometheus_client.exposition import generate_latest

    from locustfiles.lib.histogram import BatchHistogram
    from configs.vocabulary.series import GAP_BUCKETS as ITL_BUCKETS
    values = {("a", "1"): [0.0005, 0.0004, 0.02, ITL_BUCKETS[10], 9.9, 10.0, 11.0],
              ("b", "2"): [0.25, 0.25 * 1.2, 0.001]}
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("x_seconds", "h", ("run_id", "step"), buckets=ITL_BUCKETS, registry=theirs)
    batch = BatchHistogram("x_seconds", "h", ("run_id", "step"), ITL_BUCKETS)
    ours.register(batch)
    for key, vs in values.items():
        for v in vs:
            reference.labels(*key).observe(v)
        batch.observe(key, vs)

    def samples(registry):
        return sorted(line for line in generate_latest(registry).decode().splitlines()
                      if line.startswith("x_seconds_") and "_created" not in line)
    assert samples(ours) == samples(theirs) and len(samples(ours)) == 2 * (len(ITL_BUCKETS) + 3)
