"""LoRA adapter proxy (successor of the seeds' scripts/adapter_proxy.py), default port 9100.

Accepts OpenAI requests carrying ``adapter_id``, removes the field, forwards the request to the
backend (streams included, chunk by chunk) and, per request, writes and reads back 1 MiB under
``<tier2>/lora/<adapter_id>/`` so adapter churn costs real tier2 I/O even where the worker does
not load adapters itself. Adapter ids are one safe path component (letters, digits, '.', '_',
':', '-', at most 128, no '..'): nothing outside that directory is ever touched.

    python -m locustfiles.adapter_proxy --backend http://127.0.0.1:9000/v1 --tier2-path /nvme/kvbm/l70b
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
from collections import OrderedDict
from pathlib import Path

import aiohttp
from aiohttp import web

from configs import ConfigError, load
from configs.errors import cli_main
from configs.paths import ensure_data_dir, resolve, safe_join

ADAPTER_BYTES = 1 << 20
MAX_ADAPTERS = 256          # adapter files kept at once; the least recently used idle one goes first
HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}


def proxy_command(backend: str, listen: str, port: int, tier2: Path) -> list[str]:
    return [sys.executable, "-m", "locustfiles.adapter_proxy", "--backend", backend, "--listen", listen,
            "--port", str(port), "--tier2-path", str(tier2)]


def adapter_io(lora_dir: Path, adapter_id: str) -> int:
    """Write then read back 1 MiB for this adapter, from the device: fsync, drop the pages, read. The write
    goes to a file of its own, renamed into place, so concurrent requests for one adapter never read a
    half-written file."""
    directory = safe_join(lora_dir, adapter_id)
    directory.mkdir(exist_ok=True)
    path = directory / "adapter.bin"
    scratch = directory / f".adapter.{os.getpid()}.{threading.get_ident()}.tmp"
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, os.urandom(ADAPTER_BYTES))
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    os.replace(scratch, path)
    with open(path, "rb") as f:
        return len(f.read())


def remove_adapter(lora_dir: Path, adapter_id: str) -> None:
    directory = safe_join(lora_dir, adapter_id)
    (directory / "adapter.bin").unlink(missing_ok=True)
    try:
        directory.rmdir()
    except OSError:
        pass


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error", "code": status}},
                             status=status)


class AdapterProxy:
    def __init__(self, backend: str, tier2: Path, max_adapters: int = MAX_ADAPTERS) -> None:
        self.backend = backend.rstrip("/")
        self.max_adapters = max_adapters
        self.lora_dir = ensure_data_dir(tier2 / "lora")
        self.session: aiohttp.ClientSession | None = None
        self.adapter_bytes = 0
        self.adapter_ios = 0
        # adapter id -> requests using its file now; bounded by MAX_ADAPTERS, emptied on exit, so a run
        # with thousands of distinct ids neither fills the tier2 disk nor leaves files behind
        self.adapters: OrderedDict[str, int] = OrderedDict()

    async def startup(self, _app) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))

    async def cleanup(self, _app) -> None:
        await self.session.close()
        for adapter in list(self.adapters):
            await asyncio.to_thread(remove_adapter, self.lora_dir, adapter)
        self.adapters.clear()
        print(f"{self.adapter_ios} adapter writes read back from {self.lora_dir} "
              f"({self.adapter_bytes / 2**20:.0f} MiB); adapter files removed", flush=True)

    async def touch_adapter(self, adapter: str) -> None:
        safe_join(self.lora_dir, adapter)             # a bad id is refused before it is tracked
        self.adapters[adapter] = self.adapters.get(adapter, 0) + 1
        self.adapters.move_to_end(adapter)
        try:
            moved = await asyncio.to_thread(adapter_io, self.lora_dir, adapter)
            self.adapter_bytes += moved          # after the await: concurrent requests never lose an update
            self.adapter_ios += 1
        finally:
            self.adapters[adapter] -= 1
        while len(self.adapters) > self.max_adapters:
            idle = next((a for a, users in self.adapters.items() if users == 0), None)
            if idle is None:
                break
            del self.adapters[idle]
            await asyncio.to_thread(remove_adapter, self.lora_dir, idle)

    def app(self) -> web.Application:
        app = web.Application()
        app.on_startup.append(self.startup)
        app.on_cleanup.append(self.cleanup)
        app.router.add_post("/v1/completions", self.generate)
        app.router.add_post("/v1/chat/completions", self.generate)
        app.router.add_get("/v1/models", self.passthrough)
        app.router.add_get("/health", self.passthrough)
        return app

    async def generate(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error(400, "request body is not JSON")
        if not isinstance(body, dict):
            return error(400, "request body must be a JSON object")
        adapter = body.pop("adapter_id", None)
        if adapter is not None:
            if not isinstance(adapter, str):
                return error(400, "adapter_id must be a string")
            try:
                await self.touch_adapter(adapter)
            except ConfigError as exc:
                return error(400, f"invalid adapter_id: {exc}")
            except OSError as exc:
                return error(500, f"adapter tier2 I/O failed: {exc.strerror}")
        return await self.forward(request, "POST", json.dumps(body).encode())

    async def passthrough(self, request: web.Request) -> web.StreamResponse:
        return await self.forward(request, "GET", None)

    async def forward(self, request: web.Request, method: str, data: bytes | None) -> web.StreamResponse:
        path = request.path[len("/v1"):] if request.path.startswith("/v1/") else request.path
        url = self.backend + path if request.path.startswith("/v1/") else self.backend.rsplit("/v1", 1)[0] + path
        try:
            async with self.session.request(method, url, data=data,
                                            headers={"Content-Type": "application/json"}) as upstream:
                out = web.StreamResponse(status=upstream.status, headers={
                    k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS})
                await out.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await out.write(chunk)
                await out.write_eof()
                return out
        except aiohttp.ClientError as exc:
            return error(502, f"backend {url} unreachable: {type(exc).__name__}")


@cli_main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m locustfiles.adapter_proxy", description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default=os.environ.get("BACKEND_URL"),
                    help="OpenAI base of the stack (default $BACKEND_URL, else the first tiered stack's)")
    ap.add_argument("--listen", help="address (default loadgen.listen: 127.0.0.1)")
    ap.add_argument("--port", type=int, help="port (default loadgen.adapter_proxy_port: 9100)")
    ap.add_argument("--tier2-path", default=os.environ.get("DYN_KVBM_TIER2_PATH"),
                    help="tier2 directory; adapters go under <it>/lora (default $DYN_KVBM_TIER2_PATH, "
                         "else the spill profile's tier2_path)")
    ap.add_argument("--max-adapters", type=int, default=MAX_ADAPTERS,
                    help=f"adapter files kept at once, least recently used removed first (default {MAX_ADAPTERS})")
    ap.add_argument("--config", help="overlay YAML (default: $HARNESS_CONFIG)")
    args = ap.parse_args(argv)
    if args.max_adapters < 1:
        raise ConfigError(f"--max-adapters must be at least 1, got {args.max_adapters}")
    cfg = load(args.config)
    backend = args.backend
    if not backend:
        tiered = next((s for s in cfg.stacks.values() if s.kv_tiering), next(iter(cfg.stacks.values())))
        backend = tiered.openai_base
    from configs.plan import normalise_endpoint
    backend = normalise_endpoint(backend)
    tier2 = resolve(args.tier2_path or cfg.profiles["spill"].tier2_path)
    listen, port = args.listen or cfg.loadgen.listen, args.port or cfg.loadgen.adapter_proxy_port
    proxy = AdapterProxy(backend, tier2, args.max_adapters)

    def ready(_aiohttp_banner):
        # run_app calls its print once every site listens (on_startup runs before the bind: a client that
        # took the line as "ready" was refused)
        print(f"serving adapter proxy on http://{listen}:{port} -> {backend}; adapters under {proxy.lora_dir}",
              flush=True)
    try:
        web.run_app(proxy.app(), host=listen, port=port, print=ready, handle_signals=True)
    except OSError as exc:
        print(f"error: cannot listen on {listen}:{port}: {exc.strerror}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
