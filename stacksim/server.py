"""OpenAI-compatible HTTP front of one simulated stack (aiohttp), plus Stack B's KVBM metrics listener."""
from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from aiohttp import web

from configs.vocabulary import stacks as V
from configs.model import EngineParams, Profile
from configs.paths import check_name, ensure_data_dir

from .engine import Engine, Rejected, Seq
from .kvcache import TieredKVCache
from .lora import LoraStore
from .metrics import FrontendMetrics, KvbmMetrics, WorkerMetrics
from .offload_filter import DECAY_S, FrequencyFilter
from .ownership import DirLock, bind, check_free, claim_dir
from .tier2 import Tier2Store
from .tokens import MAX_TOKEN_CHARS, block_hashes, render_chat, tokenize

log = logging.getLogger("stacksim.server")

# Fields the OpenAI completions/chat APIs (and Dynamo's nvext) define. With strict_fields the
# simulator rejects anything else with 400, as the real Dynamo frontend does with `session_id`.
KNOWN_FIELDS = frozenset({
    "model", "prompt", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n",
    "stream", "stream_options", "stop", "presence_penalty", "frequency_penalty", "logit_bias", "user",
    "seed", "logprobs", "top_logprobs", "echo", "best_of", "suffix", "ignore_eos", "min_tokens",
    "response_format", "tools", "tool_choice", "parallel_tool_calls", "nvext", "top_k",
    "repetition_penalty", "min_p",
})


@dataclass(frozen=True)
class StackOptions:
    stack: str                  # "A" or "B"
    model: str                  # served model handle
    profile: Profile
    engine: EngineParams
    host: str = "127.0.0.1"
    port: int = 8355
    kvbm_port: Optional[int] = None
    worker_port: Optional[int] = None      # Stack B: the worker's system-port metrics
    seed: int = 42
    strict_fields: bool = False
    keep_tier2: bool = False
    tier_mode: str = "B2"      # Stack B: B0 no KVBM (no host or disk tier, no KVBM listener), B1 host only
    # Stack B's offload: KVBM (writes through, its own listener) or TensorRT-LLM's (copies on eviction, its
    # families on the worker's system port, no disk-offload filter)
    kv_offload: str = "kvbm"


def openai_error(status: int, message: str, type_: str, code=None) -> web.Response:
    body = {"error": {"message": message, "type": type_, "code": code if code is not None else status}}
    return web.json_response(body, status=status)


def dynamo_error(status: int, message: str) -> web.Response:
    """The Dynamo frontend's error body: top-level message/type/code, not OpenAI's ``error`` object."""
    return web.json_response({"message": message, "type": _REASONS.get(status, "Error"), "code": status},
                             status=status)


_REASONS = {400: "Bad Request", 404: "Not Found", 413: "Payload Too Large", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}
INTERNAL_ERROR = "Internal server error"      # the words the real frontend sends, nothing more
# Request bodies above this are refused (413) before they are parsed: the largest prompt an engine takes is
# max_num_tokens x MAX_TOKEN_CHARS characters, far below it, and parsing a bigger body would stall every
# live stream on the event loop.
MAX_BODY_BYTES = 4 * 2**20


class BadRequest(Exception):
    pass


def _unicode(text: str, field: str) -> str:
    """JSON may carry lone surrogates (\\ud800) that no encoder accepts: a 400 here, not a fault later."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequest(f"`{field}` is not valid Unicode: {exc.reason} at position {exc.start}") from None
    return text


def _messages(messages) -> list[dict]:
    """Chat messages with the types the OpenAI API defines: wrong types are 400s that name the field."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("`messages` must be a non-empty list of {role, content} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise BadRequest(f"`messages[{i}]` must be an object with `role` and `content`")
        if not isinstance(m.get("role", "user"), str):
            raise BadRequest(f"`messages[{i}].role` must be a string")
        content = m.get("content", "")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("text", ""), str):
                    raise BadRequest(f"`messages[{i}].content[{j}]` must be a content part object whose `text` "
                                     "is a string")
        elif not isinstance(content, str) and content is not None:
            raise BadRequest(f"`messages[{i}].content` must be a string or a list of content parts, "
                             f"got {type(content).__name__}")
    return messages


class TooLong(Exception):
    """A prompt over the engine's limit. Stack A refuses it up front (400); the real Dynamo frontend
    passes it to the engine, which fails it: a 200 stream ending in an SSE error, or a 500."""


class UnknownModel(Exception):
    pass


def sse(data: dict) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


class StackServer:
    """One simulated stack: engine + KV tiers + LoRA store + HTTP listeners."""

    def __init__(self, opts: StackOptions) -> None:
        self.o = opts
        self.dynamo = opts.stack == "B"          # Dynamo's dialect (frontend, KVBM); B0 too: tiers are the mode's
        self.data_dir: Optional[Path] = None
        self._runners: list[web.AppRunner] = []
        self._pool: Optional[ThreadPoolExecutor] = None
        self._lock: Optional[DirLock] = None
        self._socks: dict = {}                  # bound, not yet serving
        self.engine: Optional[Engine] = None
        self.kv: Optional[TieredKVCache] = None

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Lock, bind, then write: a start that cannot own its ports or directory touches no file, and
        one that fails later removes what it created."""
        o, p = self.o, self.o.profile
        root = ensure_data_dir(p.tier2_path)
        name = check_name(f"stacksim-stack{o.stack}-{o.port}")
        what = f"stack {o.stack} on port {o.port}"
        self._lock = DirLock(root / f".{name}.lock", what)
        try:
            listeners = {"API": o.port}
            if self.dynamo:
                kvbm = o.kvbm_port if o.tier_mode != "B0" and o.kv_offload == "kvbm" else None
                listeners.update(KVBM=kvbm, worker=o.worker_port)
            for role, port in listeners.items():
                if port:
                    self._socks[role] = bind(o.host, port, f"{what}: {role} listener")
            self.data_dir = claim_dir(root / name)
            await self._start()
        except BaseException:
            await self._teardown(remove=True)
            raise

    async def _start(self) -> None:
        o, p, e = self.o, self.o.profile, self.o.engine
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix=f"stack{o.stack}-io")
        loop = asyncio.get_running_loop()

        def io(fn, *args):
            return loop.run_in_executor(self._pool, fn, *args)

        check_free(self.data_dir, e.lora_count * e.lora_bytes, f"{e.lora_count} LoRA adapters of "
                                                               f"{e.lora_bytes / 2**20:.0f} MiB")
        self.lora = LoraStore(self.data_dir, e.lora_count, e.lora_bytes, e.max_loras, e.lora_load_ms / 1000.0, io)
        block = p.kv_block_size_bytes
        kvbm = o.kv_offload == "kvbm"
        tier2 = None
        if self.dynamo and o.tier_mode == "B2" and p.tier2_bytes >= block:
            tier2 = Tier2Store(self.data_dir, block, p.tier2_bytes // block)
        self.kv = TieredKVCache(
            tier0_blocks=p.tier0_bytes // block,
            tier1_blocks=p.tier1_bytes // block if self.dynamo and o.tier_mode != "B0" else 0,
            tier2=tier2, policy=p.eviction_policy, block_tokens=p.kv_block_size_tokens, io=io,
            offload_filter=FrequencyFilter(DECAY_S * e.time_scale) if p.disk_offload_filter and kvbm else None,
            write_through=kvbm)
        self.engine = Engine(e, self.kv, block, o.seed, io, self.lora)
        self.metrics = FrontendMetrics(self.engine, "dynamo" if self.dynamo else "trtllm", o.model)
        self.engine.start()

        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post("/v1/completions", lambda r: self._generate(r, chat=False))
        app.router.add_post("/v1/chat/completions", lambda r: self._generate(r, chat=True))
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        if self.dynamo:
            app.router.add_get("/metrics", self._frontend_metrics)
        else:  # trtllm-serve: JSON iteration stats on /metrics, Prometheus text on /prometheus/metrics
            app.router.add_get("/metrics", self._iteration_stats)
            app.router.add_get("/prometheus/metrics", self._frontend_metrics)
            app.router.add_get("/version", lambda r: web.json_response({"version": "stacksim"}))
        await self._listen(app, "API")
        kvbm_listener = "KVBM" in self._socks
        if kvbm_listener:
            self.kvbm = KvbmMetrics(self.engine)
            kapp = web.Application()
            kapp.router.add_get("/metrics", self._kvbm_metrics)
            await self._listen(kapp, "KVBM")
        if "worker" in self._socks:
            worker = WorkerMetrics(self.engine, o.model, f"{o.port:016x}",
                                   trtllm_kv=self.dynamo and o.kv_offload == "trtllm")
            wapp = web.Application()
            wapp.router.add_get("/metrics", lambda _r: web.Response(body=worker.exposition(),
                                                                     content_type="text/plain", charset="utf-8"))
            await self._listen(wapp, "worker")
        log.info("stack %s%s serving %s on http://%s:%d%s (profile tiers: %d/%d/%d blocks, tier2 %s)", o.stack,
                 f" ({o.tier_mode})" if self.dynamo else "", o.model, o.host, o.port,
                 f", KVBM metrics on :{o.kvbm_port}" if kvbm_listener else
                 (f", TensorRT-LLM KV offload metrics on :{o.worker_port}" if self.dynamo and o.kv_offload == "trtllm"
                  and o.worker_port else ""),
                 self.kv.capacity0, self.kv.capacity1, tier2.capacity if tier2 else 0,
                 "O_DIRECT" if tier2 and tier2.direct else ("buffered" if tier2 else "none"))

    async def _listen(self, app: web.Application, role: str) -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        await web.SockSite(runner, self._socks.pop(role)).start()

    async def stop(self) -> None:
        await self._teardown(remove=not self.o.keep_tier2)

    async def _teardown(self, remove: bool) -> None:
        """Stop whatever was started, in reverse; with ``remove``, delete the data directory this instance
        claimed (never one it did not)."""
        for runner in self._runners:
            await runner.cleanup()
        for sock in self._socks.values():
            sock.close()
        if self.engine is not None:
            await self.engine.stop()
        if self._pool:
            self._pool.shutdown(wait=True)
        if self.kv is not None and self.kv.tier2:
            self.kv.tier2.close()
        if remove and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # ---- simple endpoints ------------------------------------------------------------------
    async def _models(self, _request) -> web.Response:
        now = int(time.time())
        data = [{"id": self.o.model, "object": "model", "created": now, "owned_by": "stacksim"}]
        if self.dynamo:                           # the Dynamo frontend publishes the engine's context limit
            data[0]["context_window"] = self.o.engine.max_num_tokens
        data += [{"id": n, "object": "model", "created": now, "owned_by": "stacksim", "parent": self.o.model}
                 for n in self.lora.names]
        return web.json_response({"object": "list", "data": data})

    async def _health(self, _request) -> web.Response:
        if not self.engine.alive:
            return web.json_response({"status": "unhealthy", "stack": self.o.stack,
                                      "reason": "the engine's scheduling loop has stopped"}, status=503)
        return web.json_response({"status": "healthy", "stack": self.o.stack, "engine_faults": self.engine.faults})

    async def _frontend_metrics(self, _request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), content_type="text/plain", charset="utf-8")

    async def _kvbm_metrics(self, _request) -> web.Response:
        return web.Response(body=self.kvbm.exposition(), content_type="text/plain", charset="utf-8")

    async def _iteration_stats(self, _request) -> web.Response:
        return web.json_response(list(self.engine.iterations))

    # ---- generation ------------------------------------------------------------------------
    def _parse(self, body, chat: bool) -> tuple[list[str], int, Optional[str]]:
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        if self.o.strict_fields:
            unknown = sorted(set(body) - KNOWN_FIELDS)
            if unknown:
                raise BadRequest("Validation: Unsupported parameter(s): " + ", ".join(f"`{u}`" for u in unknown))
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("missing required field `model`")
        if "stream" in body and not isinstance(body["stream"], bool):
            raise BadRequest(f"`stream` must be true or false, got {body['stream']!r}")
        limit = self.o.engine.max_num_tokens
        if chat:
            text = _unicode(render_chat(_messages(body.get("messages"))), "messages")
        else:
            raw = body.get("prompt")
            if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], str):
                raw = raw[0]
            if isinstance(raw, list) and raw and all(isinstance(t, int) and not isinstance(t, bool) for t in raw):
                text = None
                prompt = [str(t) for t in raw]
            elif isinstance(raw, str) and raw:
                text = _unicode(raw, "prompt")
            else:
                raise BadRequest("`prompt` must be a non-empty string, a list with one string, or a list of token ids")
        if text is not None:
            if len(text) > limit * MAX_TOKEN_CHARS:     # over the limit whatever it tokenizes to: don't tokenize
                message = (f"prompt of {len(text)} characters is longer than any prompt of max_num_tokens={limit} "
                           f"tokens (at most {MAX_TOKEN_CHARS} characters per token)")
                raise TooLong(message) if self.dynamo else BadRequest(message)
            prompt = tokenize(text)
        if len(prompt) > limit:
            message = f"prompt has {len(prompt)} tokens, over this engine's max_num_tokens={limit}"
            raise TooLong(message) if self.dynamo else BadRequest(message)
        key = "max_completion_tokens" if chat and "max_completion_tokens" in body else "max_tokens"
        max_tokens = body.get(key, 256 if chat else 16)
        cap = self.o.engine.max_output_tokens
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 0 < max_tokens <= cap:
            raise BadRequest(f"`{key}` must be an integer from 1 to {cap}, got {max_tokens!r}")
        if model == self.o.model:
            adapter = None
        elif model in self.lora:
            adapter = model
        else:
            raise UnknownModel(model)
        return prompt, max_tokens, adapter

    async def _generate(self, request: web.Request, chat: bool) -> web.StreamResponse:
        endpoint = "chat_completions" if chat else "completions"
        started = time.monotonic()
        stream = False
        try:
            body = json.loads(await request.read())
            stream = isinstance(body, dict) and body.get("stream") is True
            prompt, max_tokens, adapter = self._parse(body, chat)
            salt = adapter or ""
            seq = self.engine.submit(prompt, block_hashes(prompt, self.kv.block_tokens, salt), max_tokens, adapter)
        except TooLong as exc:
            log.info("engine failed an over-length prompt: %s", exc)
            return await self._engine_failure(request, stream, endpoint, started)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, web.HTTPRequestEntityTooLarge,
                web.RequestPayloadError, BadRequest, UnknownModel, Rejected) as exc:
            if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):
                stream, status, message, type_ = False, 400, f"invalid JSON body: {exc}", "BadRequestError"
            elif isinstance(exc, RecursionError):
                stream, status, message, type_ = False, 400, "invalid JSON body: nested too deeply", "BadRequestError"
            elif isinstance(exc, web.HTTPRequestEntityTooLarge):
                stream, status, type_ = False, 413, "BadRequestError"
                message = f"request body larger than {MAX_BODY_BYTES // 2**20} MiB"
            elif isinstance(exc, web.RequestPayloadError):      # aiohttp's: not its Content-Encoding, bad chunks
                stream, status, type_ = False, 400, "BadRequestError"
                message = f"request body unreadable: {getattr(exc.__cause__, 'message', exc)}"
            elif isinstance(exc, BadRequest):
                status, message, type_ = 400, str(exc), "BadRequestError"
            elif isinstance(exc, UnknownModel):
                status, message, type_ = 404, f"The model `{exc.args[0]}` does not exist.", "NotFoundError"
            else:
                status, message, type_ = exc.status, exc.message, exc.type
            if self.dynamo:
                resp = dynamo_error(status, "Model not found" if status == 404 else message)
            else:
                resp = openai_error(status, message, type_, "model_not_found" if status == 404 else
                                    getattr(exc, "code", None))
            if isinstance(exc, web.RequestPayloadError):
                # what follows on the wire is no HTTP we can read: the connection ends with this answer, and
                # aiohttp does not read on into the broken body after it (its 'Unhandled exception' traceback)
                resp.force_close()
                request.content.feed_eof()
            self.metrics.observe(endpoint=endpoint, stream=stream, code=resp.status, ttft=None, itls=[],
                                 duration=time.monotonic() - started, prompt_tokens=0, completion_tokens=0,
                                 queue_s=0.0, finish_reason=None)
            return resp
        include_usage = stream and isinstance(body.get("stream_options"), dict) and \
            bool(body["stream_options"].get("include_usage"))
        return await self._respond(request, seq, chat, stream, include_usage, body["model"], endpoint, started)

    async def _engine_failure(self, request, stream: bool, endpoint: str, started: float) -> web.StreamResponse:
        """What the real Dynamo frontend answers when its engine fails a request it accepted."""
        if stream:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
            await resp.prepare(request)
            await resp.write(sse({"error": {"message": INTERNAL_ERROR, "type": "internal_server_error", "code": 500}}))
            await resp.write(b"data: [DONE]\n\n")
        else:
            resp = web.json_response({"message": INTERNAL_ERROR, "type": "Internal Server Error", "code": 500,
                                      "details": {"backend_status": 500}}, status=500)
        self.metrics.observe(endpoint=endpoint, stream=stream, code=resp.status, ttft=None, itls=[],
                             duration=time.monotonic() - started, prompt_tokens=0, completion_tokens=0, queue_s=0.0,
                             finish_reason=None, error_type=V.ERROR_INTERNAL)
        return resp

    async def _respond(self, request, seq: Seq, chat: bool, stream: bool, include_usage: bool, model: str,
                       endpoint: str, started: float) -> web.StreamResponse:
        created = int(time.time())
        obj = "chat.completion" if chat else "text_completion"
        chunk_obj = obj + ".chunk" if chat else obj
        texts: list[str] = []
        token_times: list[float] = []
        resp: Optional[web.StreamResponse] = None
        code, finish, cancelled = 200, None, False

        def chunk(text: Optional[str], finish_reason: Optional[str]) -> bytes:
            if chat:
                delta = {} if text is None else {"content": text}
                if len(texts) == 1 and text is not None:
                    delta["role"] = "assistant"
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            else:
                choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
            return sse({"id": seq.id, "object": chunk_obj, "created": created, "model": model, "choices": [choice]})

        try:
            while True:
                event = await seq.events.get()
                kind = event[0]
                if kind == "error":
                    err: Rejected = event[1]
                    code = err.status
                    if resp is None:
                        return openai_error(err.status, err.message, err.type, err.code)
                    await resp.write(sse({"error": {"message": err.message, "type": err.type, "code": err.code}}))
                    break
                if kind == "cancelled":
                    cancelled = True
                    break
                if kind == "done":
                    finish = event[1]
                    break
                texts.append(event[1])
                token_times.append(time.monotonic())
                if stream:
                    if resp is None:
                        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                                           "Cache-Control": "no-cache"})
                        await resp.prepare(request)
                    await resp.write(chunk(event[1], None))
            usage = {"prompt_tokens": len(seq.prompt), "completion_tokens": len(texts),
                     "total_tokens": len(seq.prompt) + len(texts)}
            if self.dynamo:              # Dynamo reports the engine's prefix-cache hits per request
                usage["prompt_tokens_details"] = {"cached_tokens": self._cached_tokens(seq)}
            if code == 200 and not cancelled:
                if stream:
                    await resp.write(chunk(None, finish))
                    if include_usage:
                        await resp.write(sse({"id": seq.id, "object": chunk_obj, "created": created,
                                              "model": model, "choices": [], "usage": usage}))
                    await resp.write(b"data: [DONE]\n\n")
                else:
                    text = "".join(texts)
                    choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                               "finish_reason": finish} if chat else
                              {"index": 0, "text": text, "logprobs": None, "finish_reason": finish})
                    resp = web.json_response({"id": seq.id, "object": obj, "created": created, "model": model,
                                              "choices": [choice], "usage": usage})
            return resp
        except ConnectionResetError:       # the client went away: a normal end of a stream, counted as cancelled
            cancelled = True
            log.debug("client disconnected from %s", seq.id)
            return resp
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            if seq.state != "done":
                cancelled = True
                self.engine.cancel(seq)
            ttft = token_times[0] - started if token_times else None
            itls = [b - a for a, b in zip(token_times, token_times[1:])]
            self.metrics.observe(endpoint=endpoint, stream=stream, code=499 if cancelled else code, ttft=ttft,
                                 itls=itls, duration=time.monotonic() - started, prompt_tokens=len(seq.prompt),
                                 completion_tokens=len(texts), queue_s=max(0.0, seq.admitted_at - seq.arrival),
                                 finish_reason=finish, cancelled=cancelled, cached_tokens=self._cached_tokens(seq))

    def _cached_tokens(self, seq: Seq) -> int:
        return min(len(seq.prompt), seq.adm.cached_blocks * self.kv.block_tokens) if seq.adm else 0
