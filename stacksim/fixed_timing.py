"""An OpenAI-compatible target with fixed timing: every stream's first token is sent --ttft-ms after
the request arrived and the next ones every --itl-ms, whatever the load, so a client's own timing
error can be measured (tests, and the client benchmark against guidellm).

With --stamp-log, each stream's chunk send times (time.time(), taken as each chunk is handed to the
socket) are appended to that JSONL file under the request's identity (configs.runfiles.request_hash of
its body without the streaming options): a client's receive time of each chunk minus these stamps is
the client's own lag, apart from whatever lag the target itself had.

With --workers N, N processes share the port (SO_REUSEPORT), so the target keeps its timing at a
thousand streams on a machine with the cores; each says "ready" on stdout as it starts.

    python -m stacksim.fixed_timing --port 8999 --model m --ttft-ms 50 --itl-ms 20 --tokens 64
"""
import argparse
import asyncio
import json
import os
import signal
import time

from aiohttp import web

from configs.runfiles import request_hash


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--ttft-ms", type=float, default=100)
    ap.add_argument("--itl-ms", type=float, default=10)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--stamp-log", help="append each stream's chunk send times here (JSONL)")
    ap.add_argument("--workers", type=int, default=1, help="processes sharing the port (default 1)")
    args = ap.parse_args()
    if args.workers < 1:
        ap.error("--workers must be at least 1")
    children = []
    for _ in range(args.workers - 1):
        pid = os.fork()
        if pid == 0:
            children = None                   # a child serves as the parent does, and has no children
            break
        children.append(pid)
    stamps = open(args.stamp_log, "a", buffering=1) if args.stamp_log else None

    async def models(_request):
        return web.json_response({"object": "list", "data": [{"id": args.model, "object": "model"}]})

    async def completions(request):
        try:
            return await stream(request)
        except ConnectionResetError:      # the client went away (end of a benchmark run): nothing to answer
            return web.Response(status=499)

    async def stream(request):
        t0, wall0 = time.monotonic(), time.time()
        body = await request.json()
        chat = request.path.endswith("/chat/completions")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        n = min(int(body.get("max_tokens") or body.get("max_completion_tokens") or args.tokens), args.tokens)
        sent = []
        for i in range(n):
            due = t0 + (args.ttft_ms + i * args.itl_ms) / 1000
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            choice = {"index": 0, "delta": {"content": f" t{i}"}} if chat else {"index": 0, "text": f" t{i}"}
            chunk = {"object": "chat.completion.chunk" if chat else "text_completion", "choices": [choice]}
            data = f"data: {json.dumps(chunk)}\n\n".encode()
            sent.append(time.time())          # before the write: a client cannot receive a chunk earlier
            await resp.write(data)
        if stamps is not None:
            plain = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
            endpoint = "chat/completions" if chat else "completions"
            stamps.write(json.dumps({"request_hash": request_hash(endpoint, plain), "sent": sent,
                                     "first_due": wall0 + args.ttft_ms / 1000}) + "\n")
        prompt = body.get("messages") if chat else body.get("prompt", "")
        usage = {"prompt_tokens": len(json.dumps(prompt).split()), "completion_tokens": n}
        await resp.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n".encode())
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", lambda _r: web.json_response({"status": "healthy"}))
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", completions)

    async def ready(_app):
        os.write(1, b"ready\n")              # one write: N processes share the pipe
    app.on_startup.append(ready)
    try:
        web.run_app(app, host="127.0.0.1", port=args.port, print=None, reuse_port=args.workers > 1)
    finally:
        for pid in children or ():            # the parent's stop (SIGTERM, Ctrl-C) stops its children
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
