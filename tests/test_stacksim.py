"""The simulator over real HTTP on loopback, as a client of the real stacks would see it."""
import asyncio
import json
import os
import socket
import statistics
import subprocess
import time
from pathlib import Path

import aiohttp
import openai
import pytest
import requests

from conftest import ROOT, Sim
from stacksim import eviction
from stacksim.tokens import tokenize

MODEL = "nvidia/Llama-3.3-70B-Instruct-NVFP4"
# Tiny tiers (64 KiB blocks of 32 tokens): tier0 64 blocks, tier1 32, tier2 2048, so a few
# distinct ~600-token prompts spill all the way to disk.
SMALL_TIERS = """
profiles:
  spill: {tier0_bytes: 4MiB, tier1_bytes: 2MiB, tier2_bytes: 128MiB}
"""


def words(n: int, tag: str) -> str:
    return " ".join(f"{tag}w{i}" for i in range(n))


def sse_events(resp) -> list:
    """A plain SSE parser: every event is `data: <json>` and the stream ends with `data: [DONE]`."""
    events = []
    for line in resp.iter_lines(decode_unicode=True):
        if not line:
            continue
        assert line.startswith("data: "), line
        payload = line[len("data: "):]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def stream_ttft(base: str, prompt: str, model: str = MODEL, max_tokens: int = 4) -> float:
    t0 = time.monotonic()
    with requests.post(f"{base}/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": max_tokens,
                                                       "stream": True}, stream=True, timeout=30) as r:
        assert r.status_code == 200, r.text
        for line in r.iter_lines():
            if line.startswith(b"data: {") and b'"text":"' in line and b'"text":""' not in line:
                ttft = time.monotonic() - t0
                break
        for _ in r.iter_lines():
            pass
    return ttft


@pytest.fixture(scope="module")
def sim_b(tmp_path_factory):
    with Sim(tmp_path_factory.mktemp("simb"), "B", SMALL_TIERS, time_scale=0.5) as sim:
        yield sim


@pytest.fixture(scope="module")
def sim_a(tmp_path_factory):
    overlay = ("profiles:\n  spill: {tier0_bytes: 2560KiB}\n"  # 40 blocks = 1280 tokens
               "engine: {admission_timeout_s: 1.0}\n")
    with Sim(tmp_path_factory.mktemp("sima"), "A", overlay, time_scale=0.5) as sim:
        yield sim


def test_openai_client_parses_streams_and_usage(sim_b):
    client = openai.OpenAI(base_url=sim_b.base + "/v1", api_key="unused")
    assert MODEL in [m.id for m in client.models.list().data]
    chunks = list(client.completions.create(model=MODEL, prompt="Hello, world!", max_tokens=7, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert len(tokenize(text)) == 7
    assert chunks[-1].usage.prompt_tokens == 4 and chunks[-1].usage.completion_tokens == 7
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    chat = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi there"}],
                                               max_tokens=5, stream=True, stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta for c in chat if c.choices]
    assert deltas[0].role == "assistant"
    assert len(tokenize("".join(d.content or "" for d in deltas))) == 5
    # [user] Hi there + [assistant] = 3 + 2 + 3 tokens
    assert chat[-1].usage.prompt_tokens == 8 and chat[-1].usage.completion_tokens == 5
    full = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi there"}],
                                          max_tokens=3)
    assert full.usage.completion_tokens == 3 and full.choices[0].message.role == "assistant"


def test_plain_sse_parser_and_determinism(sim_b):
    body = {"model": MODEL, "prompt": "the same prompt twice", "max_tokens": 6, "stream": True,
            "stream_options": {"include_usage": True}}
    runs = []
    for _ in range(2):
        with requests.post(f"{sim_b.base}/v1/completions", json=body, stream=True, timeout=30) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            events = sse_events(r)
        assert events[-1] == "[DONE]"
        assert events[-2]["usage"] == {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10,
                                       "prompt_tokens_details": {"cached_tokens": 0}}    # as Dynamo adds
        runs.append("".join(e["choices"][0]["text"] for e in events[:-2]))
    assert runs[0] == runs[1] and len(tokenize(runs[0])) == 6


def test_prefix_reuse_drops_ttft(sim_b):
    prompt = words(1600, "prefix")
    cold = stream_ttft(sim_b.base, prompt)
    warm = min(stream_ttft(sim_b.base, prompt) for _ in range(3))     # the best of three: one slow scheduler tick
    # 1600 uncached tokens cost 40 ms of prefill at 25 us/token (x0.5 time scale); a hit skips it.
    assert warm < cold * 0.6, (cold, warm)


def test_stack_b_spills_to_real_tier2_files(sim_b):
    io_before = sim_b.proc_io()
    prompts = [words(600, f"spill{i}") for i in range(12)]     # 18 full blocks each, 216 in all
    for p in prompts:
        requests.post(f"{sim_b.base}/v1/completions", json={"model": MODEL, "prompt": p, "max_tokens": 2},
                      timeout=30).raise_for_status()
    for p in prompts[:3]:                                         # long pushed out of tier0 and tier1
        requests.post(f"{sim_b.base}/v1/completions", json={"model": MODEL, "prompt": p, "max_tokens": 2},
                      timeout=30).raise_for_status()
    m = sim_b.metrics(port=sim_b.kvbm_port)
    val = lambda name, **lb: m[(name, frozenset(lb.items()))]
    # prometheus_client's parser names counter samples *_total; the wire format has none (checked below).
    assert val("kvbm_offload_blocks_d2h_total") > 0
    assert val("kvbm_offload_blocks_h2d_total") > 0
    assert val("kvbm_onboard_blocks_d2d_total") >= 3 * 18
    assert val("kvbm_matched_tokens_total") >= 3 * 18 * 32
    assert val("kvbm_disk_cache_hit_rate") > 0
    assert val("stacksim_kv_tier2_io_bytes_total", direction="write") >= val("kvbm_offload_blocks_h2d_total") * 65536
    assert val("stacksim_kv_tier_occupancy_blocks", tier="device") <= 64
    assert val("stacksim_kv_tier_occupancy_blocks", tier="host") <= 32
    assert val("stacksim_kv_tier_fetch_seconds_count", tier="disk") >= 3
    assert val("stacksim_kv_tier2_errors_total", op="read") == 0
    # Real file I/O, in KVBM's unlinked disk cache file: held open by the process, absent from the
    # directory; the kernel counted the process's own disk traffic.
    [held] = disk_cache_files(sim_b.proc.pid)
    assert held.startswith(str(sim_b.data_dir / "dynamo-kvbm-disk-cache-")) and held.endswith(" (deleted)")
    assert len(held.split("dynamo-kvbm-disk-cache-")[1].split(" ")[0]) == 6
    assert not list(sim_b.data_dir.glob("dynamo-kvbm-disk-cache-*"))
    io_after = sim_b.proc_io()
    assert io_after["write_bytes"] - io_before["write_bytes"] >= 65536
    assert io_after["read_bytes"] - io_before["read_bytes"] >= 3 * 18 * 65536
    # KVBM names carry no _total, exactly like the Rust prometheus crate prints them.
    raw = requests.get(f"http://127.0.0.1:{sim_b.kvbm_port}/metrics", timeout=5).text
    assert "\nkvbm_offload_blocks_d2h " in raw and "kvbm_offload_blocks_d2h_total" not in raw


def _small_filesystem(blocks: int):
    """A tier2 file that cannot grow past ``blocks`` 64 KiB blocks: the kernel refuses the writes beyond
    (EFBIG under RLIMIT_FSIZE, as a full filesystem refuses them with ENOSPC)."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (blocks * 65536, blocks * 65536))
    return limit


def _writes_settled(sim, timeout_s: float = 10.0) -> dict:
    """The KVBM metrics once the tier2 writes a request set off have all landed (written bytes and refused
    writes unchanged over two scrapes): they run off the event loop, so on a busy machine (two test workers)
    they can land after the next request, and the disk would fill in another order than the test's."""
    def key(m):
        return (m.get(("stacksim_kv_tier2_io_bytes_total", frozenset({("direction", "write")}))),
                m.get(("stacksim_kv_tier2_errors_total", frozenset({("op", "write")}))))
    deadline, last = time.monotonic() + timeout_s, None
    while True:
        time.sleep(0.1)
        m = sim.metrics(port=sim.kvbm_port)
        if key(m) == last or time.monotonic() > deadline:
            return m
        last = key(m)


async def _writes_landed(kv, timeout_s: float = 10.0) -> None:
    """Until every tier2 write the cache set off has completed (they run in the executor: a busy machine,
    two test workers, delays them past any fixed sleep)."""
    for _ in range(int(timeout_s / 0.05)):
        await asyncio.sleep(0.05)
        if not kv._writes:
            return


def test_a_full_tier2_filesystem_reports_only_real_disk_traffic(tmp_path):
    overlay = SMALL_TIERS + "engine: {lora_count: 0}\n"
    with Sim(tmp_path, "B", overlay, time_scale=0.5, preexec=_small_filesystem(100)) as sim:
        prompts = [words(600, f"full{i}") for i in range(12)]     # 216 blocks written through to a disk of 100
        for p in prompts + [prompts[7]]:      # the disk keeps the last 100 written; tier0 only prompts 8-11
            requests.post(f"{sim.base}/v1/completions", json={"model": MODEL, "prompt": p, "max_tokens": 2},
                          timeout=30).raise_for_status()
            m = _writes_settled(sim)         # each request's writes land before the next, in the order above
    val = lambda name, **lb: m[(name, frozenset(lb.items()))]
    written = val("stacksim_kv_tier2_io_bytes_total", direction="write")
    read = val("stacksim_kv_tier2_io_bytes_total", direction="read")
    offloaded_to_disk = val("kvbm_offload_blocks_h2d_total") + val("kvbm_offload_blocks_d2d_total")
    assert val("stacksim_kv_tier2_errors_total", op="write") > 0          # the disk really filled up
    assert offloaded_to_disk * 65536 == written                           # a failed write is no offload
    assert 0 < val("kvbm_onboard_blocks_d2d_total") * 65536 <= read       # every onboard was read from the file
    assert val("stacksim_kv_tier_capacity_blocks", tier="disk") <= 100
    assert val("stacksim_kv_tier_occupancy_blocks", tier="disk") <= val("stacksim_kv_tier_capacity_blocks", tier="disk")


def test_frontend_metrics_use_dynamo_names(sim_b):
    m = sim_b.metrics()
    names = {k[0] for k in m}
    for name in ("dynamo_frontend_requests_total", "dynamo_frontend_time_to_first_token_seconds_bucket",
                 "dynamo_frontend_inter_token_latency_seconds_bucket", "dynamo_frontend_request_duration_seconds_count",
                 "dynamo_frontend_inflight_requests", "dynamo_frontend_queued_requests",
                 "dynamo_frontend_output_tokens_total", "dynamo_frontend_model_total_kv_blocks"):
        assert name in names, name
    ok = sum(v for (n, lb), v in m.items() if n == "dynamo_frontend_requests_total" and ("status", "success") in lb)
    assert ok >= 3


def test_stack_a_rejects_at_kv_exhaustion(sim_a):
    # Each request needs (600 + 400) / 32 = 32 of the 40 blocks, so only one fits at a time.
    async def burst():
        async with aiohttp.ClientSession() as s:
            async def one(i):
                async with s.post(f"{sim_a.base}/v1/completions", json={
                        "model": MODEL, "prompt": words(600, f"a{i}"), "max_tokens": 400}) as r:
                    return r.status, await r.json()
            return await asyncio.gather(*(one(i) for i in range(3)))
    results = asyncio.run(burst())
    codes = sorted(code for code, _ in results)
    assert codes[0] == 200 and 503 in codes, results
    msg = next(body for code, body in results if code == 503)["error"]["message"]
    assert "KV cache exhausted" in msg
    too_big = requests.post(f"{sim_a.base}/v1/completions", json={"model": MODEL, "prompt": words(1300, "big"),
                                                                    "max_tokens": 16}, timeout=10)
    assert too_big.status_code == 503 and "device KV pool holds 40" in too_big.json()["error"]["message"]
    m = sim_a.metrics("/prometheus/metrics")
    assert m[("stacksim_rejected_requests_total", frozenset({("reason", "kv_exhausted")}))] >= 1
    assert ("trtllm_kv_cache_max_blocks", frozenset({("model_name", MODEL), ("engine_type", "trtllm")})) in m
    stats = requests.get(f"{sim_a.base}/metrics", timeout=5).json()   # trtllm-serve's JSON iteration stats
    assert stats and "kvCacheStats" in stats[-1]
    kvbm = socket.socket()
    assert kvbm.connect_ex(("127.0.0.1", sim_a.kvbm_port)) != 0      # no KVBM listener on Stack A
    kvbm.close()


def test_lora_cold_load_slower_than_warm(sim_b):
    """The cold load costs 7.5 ms (lora_load_ms 15 at time scale 0.5) plus a 1 MiB read; the warm side is the
    fastest of three, so one request a busy CI machine delayed cannot pass for the adapter's load."""
    cold = stream_ttft(sim_b.base, "adapter prompt one", model="lora-003")
    warm = min(stream_ttft(sim_b.base, f"adapter prompt {n}", model="lora-003") for n in ("two", "three", "four"))
    assert cold > warm + 0.005, (cold, warm)
    m = sim_b.metrics()
    assert m[("stacksim_lora_loads_total", frozenset({("kind", "cold")}))] >= 1
    assert (sim_b.data_dir / "lora" / "lora-003.bin").stat().st_size == 2**20


BAD_INPUTS = [
    (b"{not json", 400, "invalid JSON"),
    ({"model": MODEL}, 400, "`prompt` must be"),
    ({"model": MODEL, "prompt": "x", "max_tokens": 0}, 400, "`max_tokens` must be an integer from 1 to 4096"),
    ({"model": MODEL, "prompt": "x", "max_tokens": 10**6}, 400, "from 1 to 4096"),
    ({"prompt": "x"}, 400, "missing required field `model`"),
    ({"model": MODEL, "prompt": "x", "stream": "false"}, 400, "`stream` must be true or false"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
    ({"model": MODEL, "prompt": "a " * (5 * 2**19)}, 413, "larger than 4 MiB"),
]


@pytest.mark.parametrize("body,status,needle", BAD_INPUTS + [
    ({"model": MODEL, "prompt": words(8193, "w")}, 400, "over this engine's max_num_tokens=8192"),
    ({"model": MODEL, "prompt": "y" * (8192 * 32 + 1)}, 400, "characters is longer than any prompt"),
    ({"model": "no-such-adapter", "prompt": "x"}, 404, "does not exist"),
])
def test_stack_a_bad_inputs_get_openai_errors(sim_a, body, status, needle):
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
    r = requests.post(f"{sim_a.base}/v1/completions", timeout=10, **kwargs)
    assert r.status_code == status
    err = r.json()["error"]
    assert needle in err["message"] and err["type"] and err["code"]


@pytest.mark.parametrize("body,status,needle", BAD_INPUTS + [
    ({"model": MODEL, "prompt": "x", "session_id": "s1"}, 400, "Validation: Unsupported parameter(s): `session_id`"),
    ({"model": "no-such-adapter", "prompt": "x"}, 404, "Model not found"),
])
def test_stack_b_bad_inputs_get_dynamo_errors(sim_b, body, status, needle):
    """The Dynamo frontend's body: top-level message, type and code (Dynamo 1.6.1)."""
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
    r = requests.post(f"{sim_b.base}/v1/completions", timeout=10, **kwargs)
    assert r.status_code == status
    doc = r.json()
    assert needle in doc["message"] and doc["type"] and doc["code"] == status


def test_stack_b_over_length_prompt_fails_in_the_engine_as_dynamo_does(sim_b):
    """Dynamo 1.6.1 passes an over-length prompt on: streamed, HTTP 200 then an SSE error event; unary, 500.
    Counted as requests_total{error_type="internal"} and failures_total{class="Internal"}."""
    body = {"model": MODEL, "prompt": words(8193, "long"), "max_tokens": 4}
    with requests.post(f"{sim_b.base}/v1/completions", json={**body, "stream": True}, stream=True, timeout=30) as r:
        assert r.status_code == 200
        events = sse_events(r)
    assert events[0]["error"] == {"message": "Internal server error", "type": "internal_server_error", "code": 500}
    assert events[-1] == "[DONE]"
    r = requests.post(f"{sim_b.base}/v1/completions", json=body, timeout=30)
    assert r.status_code == 500 and r.json()["message"] == "Internal server error"
    m = sim_b.metrics()
    for rtype, reason in (("stream", "runtime.unclassified"), ("unary", "runtime.internal")):
        assert m[("dynamo_frontend_requests_total", frozenset({("model", MODEL), ("endpoint", "completions"),
                  ("request_type", rtype), ("status", "error"), ("error_type", "internal")}))] >= 1
        assert m[("dynamo_frontend_failures_total", frozenset({("class", "Internal"), ("reason", reason)}))] >= 1


@pytest.mark.parametrize("messages,needle", [
    ([], "`messages` must be a non-empty list"),
    ([{"role": "user", "content": 42}], "`messages[0].content` must be a string or a list of content parts"),
    ([{"role": "user", "content": [{"type": "text", "text": 7}]}], "`messages[0].content[0]`"),
    ([{"role": "user", "content": [3]}], "`messages[0].content[0]`"),
    ([{"role": 1, "content": "x"}], "`messages[0].role` must be a string"),
])
def test_chat_wrong_types_are_400s_naming_the_field(sim_a, sim_b, messages, needle):
    for sim in (sim_a, sim_b):
        r = requests.post(f"{sim.base}/v1/chat/completions", json={"model": MODEL, "messages": messages}, timeout=10)
        doc = r.json()
        assert r.status_code == 400 and needle in doc.get("message", doc.get("error", {}).get("message", ""))


def test_client_disconnect_frees_blocks(sim_b):
    s = socket.create_connection(("127.0.0.1", sim_b.port))
    body = json.dumps({"model": MODEL, "prompt": words(300, "gone"), "max_tokens": 1500, "stream": True})
    s.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
    got = b""
    while b"data: " not in got:
        got += s.recv(4096)
    pinned = ("stacksim_kv_pinned_blocks", frozenset())
    assert sim_b.metrics(port=sim_b.kvbm_port)[pinned] > 0
    s.close()
    deadline = time.time() + 10
    while time.time() < deadline and sim_b.metrics(port=sim_b.kvbm_port)[pinned] > 0:
        time.sleep(0.1)
    assert sim_b.metrics(port=sim_b.kvbm_port)[pinned] == 0
    m = sim_b.metrics()
    assert m[("dynamo_frontend_model_cancellation_total", frozenset({("model", MODEL), ("endpoint", "completions"),
                                                                      ("request_type", "stream")}))] >= 1
    assert m[("dynamo_frontend_inflight_requests", frozenset({("model", MODEL)}))] == 0
    assert "Error handling request" not in sim_b.log.read_text()      # a disconnect is normal: no traceback


def test_queue_knee_below_64_streams(tmp_path):
    async def ttfts(base, concurrency, duration=2.0):
        out = []
        async with aiohttp.ClientSession() as s:
            async def user(u):
                end = time.monotonic() + duration
                while time.monotonic() < end:
                    t0 = time.monotonic()
                    async with s.post(f"{base}/v1/completions", json={
                            "model": MODEL, "prompt": f"user {u} " + words(200, "q"), "max_tokens": 24,
                            "stream": True}) as r:
                        first = None
                        async for _ in r.content:
                            first = first or time.monotonic()
                    out.append(first - t0)
            await asyncio.gather(*(user(u) for u in range(concurrency)))
        return out
    with Sim(tmp_path, "A", time_scale=0.25) as sim:
        low = statistics.median(asyncio.run(ttfts(sim.base, 8)))
        high = statistics.median(asyncio.run(ttfts(sim.base, 48)))
    assert high > 3 * low, (low, high)


def disk_cache_files(pid: int) -> list[str]:
    """The KV disk cache files a process holds open, as /proc/<pid>/fd shows them."""
    fds = Path(f"/proc/{pid}/fd")
    return [t for t in (os.readlink(f) for f in fds.iterdir() if f.is_symlink()) if "dynamo-kvbm-disk-cache-" in t]


def test_shutdown_removes_tier2_unless_kept(tmp_path):
    sim = Sim(tmp_path, "B", SMALL_TIERS)
    with sim:
        assert sim.data_dir.is_dir() and len(disk_cache_files(sim.proc.pid)) == 1
    assert sim.proc.returncode == 0 and not sim.data_dir.exists()
    (tmp_path / "k").mkdir()
    kept = Sim(tmp_path / "k", "B", SMALL_TIERS, args=["--keep-tier2"])
    with kept:
        pass
    assert (kept.data_dir / "lora" / "lora-001.bin").exists()
    assert not list(kept.data_dir.glob("dynamo-kvbm-disk-cache-*"))     # KVBM's file never outlives it


def test_a_second_simulator_on_the_same_port_touches_nothing(tmp_path):
    with Sim(tmp_path, "B", SMALL_TIERS) as live:
        files = [live.data_dir / "lora" / "lora-000.bin", live.data_dir / "lora" / "lora-001.bin"]
        inodes = [f.stat().st_ino for f in files]
        second = subprocess.run(live.cmd, cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert second.returncode == 1
        assert [line for line in second.stderr.splitlines() if line.startswith("error:")] == [
            next(line for line in second.stderr.splitlines() if "already running" in line)]
        assert [f.stat().st_ino for f in files] == inodes                  # the live instance's files, untouched
        ok = requests.post(f"{live.base}/v1/completions", json={"model": MODEL, "prompt": "still", "max_tokens": 2},
                           timeout=10)
        assert ok.status_code == 200
        # the same port with another tier2 directory: it cannot listen, says so, and leaves nothing there
        other = tmp_path / "other"
        cmd = [*live.cmd[:live.cmd.index("--tier2-path") + 1], str(other), *live.cmd[live.cmd.index("--tier2-path") + 2:]]
        busy = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert busy.returncode == 1 and f"127.0.0.1:{live.port}: already in use" in busy.stderr
        assert not list(other.iterdir())


def test_a_directory_the_simulator_did_not_create_is_never_deleted(tmp_path):
    sim = Sim(tmp_path, "B", SMALL_TIERS)
    sim.data_dir.mkdir(parents=True)
    (sim.data_dir / "precious").write_text("keep me")
    with pytest.raises(RuntimeError, match="was not created by stacksim"):
        sim.__enter__()
    sim.proc.wait(timeout=10)
    assert (sim.data_dir / "precious").read_text() == "keep me"


def test_a_start_that_cannot_fit_its_adapters_writes_nothing(tmp_path):
    sim = Sim(tmp_path, "B", SMALL_TIERS + "engine: {lora_count: 500, lora_bytes: 60GiB}\n")
    with pytest.raises(RuntimeError, match="500 LoRA adapters of 61440 MiB need"):
        sim.__enter__()
    sim.proc.wait(timeout=10)
    assert not sim.data_dir.exists() and not [p for p in sim.tier2.iterdir() if p.name.startswith("stacksim")]


@pytest.mark.parametrize("mode", ["B0", "B1"])
def test_tier_modes_leave_out_the_tiers_they_name(tmp_path, mode):
    with Sim(tmp_path, "B", SMALL_TIERS, args=["--tier-mode", mode]) as sim:
        for p in [words(600, f"mode{i}") for i in range(8)]:            # enough to spill past tier0
            requests.post(f"{sim.base}/v1/completions", json={"model": MODEL, "prompt": p, "max_tokens": 2},
                          timeout=30).raise_for_status()
        assert not disk_cache_files(sim.proc.pid)                      # no disk tier in B0 or B1
        if mode == "B0":                                                # no KVBM at all: nothing listens there
            with pytest.raises(requests.ConnectionError):
                requests.get(f"http://127.0.0.1:{sim.kvbm_port}/metrics", timeout=2)
        else:
            m = sim.metrics(port=sim.kvbm_port)
            assert m[("kvbm_offload_blocks_d2h_total", frozenset())] > 0
            assert m[("kvbm_offload_blocks_h2d_total", frozenset())] == 0
            assert m[("stacksim_kv_tier_capacity_blocks", frozenset({("tier", "disk")}))] == 0


def test_eviction_policies():
    lru = eviction.make("lru")
    for k in "abc":
        lru.add(k)
    lru.touch("a")
    assert lru.victim() == "b"
    lfu = eviction.make("lfu")
    for k in "abc":
        lfu.add(k)
    lfu.touch("a"), lfu.touch("c"), lfu.touch("a")
    assert lfu.victim() == "b"
    lfu.remove("b")
    assert lfu.victim() == "c"
    slru = eviction.make("segmented")
    for k in "abc":
        slru.add(k)
    slru.touch("a")           # second sighting: protected
    assert slru.victim() == "b"
    slru.remove("b"), slru.remove("c")
    assert slru.victim() == "a"


def test_a_lone_surrogate_is_a_400_and_touches_nothing_else(sim_a, sim_b):
    """JSON can carry "\\ud800"; it once killed the engine loop (every later request hung)."""
    for sim in (sim_a, sim_b):
        bad = requests.post(f"{sim.base}/v1/completions", data=b'{"model": "%s", "prompt": "a \\ud800 b", '
                            b'"max_tokens": 3}' % MODEL.encode(), headers={"Content-Type": "application/json"},
                            timeout=10)
        assert bad.status_code == 400 and "not valid Unicode" in bad.text
        chat = requests.post(f"{sim.base}/v1/chat/completions", data=b'{"model": "%s", "messages": [{"role": '
                             b'"user", "content": "\\udfff"}], "max_tokens": 3}' % MODEL.encode(),
                             headers={"Content-Type": "application/json"}, timeout=10)
        assert chat.status_code == 400
        ok = requests.post(f"{sim.base}/v1/completions", json={"model": MODEL, "prompt": "after", "max_tokens": 2},
                           timeout=10)
        assert ok.status_code == 200
        assert requests.get(f"{sim.base}/health", timeout=5).json()["status"] == "healthy"


def test_a_fault_inside_the_engine_fails_its_requests_and_the_loop_goes_on(monkeypatch):
    import asyncio
    import dataclasses

    from configs import load
    from stacksim import engine as E
    from stacksim.kvcache import TieredKVCache

    real = E.generated_tokens

    def faulty(seed, prompt, n):
        if "boom" in prompt:
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        return real(seed, prompt, n)
    monkeypatch.setattr(E, "generated_tokens", faulty)

    async def scenario():
        params = dataclasses.replace(load().engine, time_scale=0.01)
        kv = TieredKVCache(tier0_blocks=64, tier1_blocks=0, tier2=None, policy="lru", block_tokens=32)
        eng = E.Engine(params, kv, 65536, 1, io=None)
        eng.start()
        bad = eng.submit(["boom"], [], 3, None)
        first = await asyncio.wait_for(bad.events.get(), 5)
        later = eng.submit(["fine"], [], 3, None)
        events = [await asyncio.wait_for(later.events.get(), 5) for _ in range(4)]
        alive = eng.alive
        await eng.stop()
        return first, events, alive, eng.faults
    first, events, alive, faults = asyncio.run(scenario())
    assert first[0] == "error" and first[1].status == 500 and "engine fault" in first[1].message
    assert [e[0] for e in events] == ["token", "token", "token", "done"] and alive and faults == 1


def test_the_disk_offload_filter_counts_as_kvbm_does():
    """filter.rs: a count starts at 1 and doubles per sighting; a block goes to disk at 2 or more; each decay
    period takes 1 from every count and forgets those at 0."""
    from stacksim.offload_filter import FrequencyFilter
    now = [0.0]
    f = FrequencyFilter(decay_s=10, clock=lambda: now[0])
    assert [f.should_offload(b"a") for _ in range(3)] == [False, True, True]      # 1, 2, 4
    assert f.should_offload(b"b") is False and f.filtered == 2
    now[0] = 25.0                                       # two periods: a 8 -> 6, b 1 -> gone
    assert f.should_offload(b"b") is False               # a first sighting again
    assert f.should_offload(b"a") is True
    now[0] = 1000.0                                      # every count decayed away
    assert f.should_offload(b"a") is False


def test_with_the_filter_on_single_use_blocks_never_reach_the_disk(tmp_path):
    """Prompts seen once, through a small device and host tier: with KVBM's filter on (its default) none of
    their blocks is written to disk, offloaded once each; off, they spill as the profiles intend; a
    prompt seen again is written on its second offload."""
    from stacksim.kvcache import TieredKVCache
    from stacksim.offload_filter import FrequencyFilter
    from stacksim.tier2 import Tier2Store

    def run(prompts, filtered):
        async def go():
            loop = asyncio.get_running_loop()
            d = tmp_path / f"t2-{filtered}-{len(prompts)}"
            d.mkdir()
            store = Tier2Store(d, 4096, 256)
            kv = TieredKVCache(4, 4, store, "lru", 32, io=lambda fn, *a: loop.run_in_executor(None, fn, *a),
                               offload_filter=FrequencyFilter() if filtered else None)
            for hashes in prompts:
                adm = kv.admit(hashes, len(hashes))
                kv.release(adm)
            await _writes_landed(kv)
            return kv.counters.offload_blocks_h2d
        return asyncio.run(go())
    once = [[bytes([i, j]) for j in range(4)] for i in range(12)]
    assert run(once, filtered=True) == 0
    assert run(once, filtered=False) > 0
    assert run(once + once, filtered=True) > 0          # the second pass offloads them again: now they go


def test_stack_b_writes_through_device_host_disk_as_kvbm_does(tmp_path):
    """offload.rs: a block registered on the device is copied to the host, and one registered on the host is
    queued for the disk, at once, not when it is evicted; an eviction only drops a copy, so the tiers above
    the disk hold the larger of tier0 and tier1, not their sum."""
    from stacksim.kvcache import TieredKVCache
    from stacksim.tier2 import Tier2Store

    async def go():
        loop = asyncio.get_running_loop()
        kv = TieredKVCache(4, 8, Tier2Store(tmp_path, 4096, 64), "lru", 32,
                           io=lambda fn, *a: loop.run_in_executor(None, fn, *a))
        first = [bytes([1, j]) for j in range(4)]
        kv.release(kv.admit(first, 4))
        await _writes_landed(kv)
        copied = (kv.counters.offload_blocks_d2h, kv.counters.offload_blocks_h2d, kv.used0, kv.used1, kv.used2)
        for i in (2, 3):                                         # 8 more blocks: tier0 drops the first 4,
            kv.release(kv.admit([bytes([i, j]) for j in range(4)], 4))   # tier1 (8 blocks) drops them too
        again = kv.admit(first, 4)
        return copied, len(again.from_host), len(again.from_disk), kv.counters.offload_blocks_d2h
    copied, from_host, from_disk, d2h = asyncio.run(go())
    assert copied == (4, 4, 4, 4, 4)            # no eviction yet, and every block is on all three tiers
    assert (from_host, from_disk) == (0, 4)     # 4 + 8 blocks passed through tiers of 4 and 8: only the disk kept them
    assert d2h == 16                            # a block read back from the disk is registered on the device again


def test_trtllm_native_offload_copies_on_eviction(tmp_path):
    """TensorRT-LLM (docs/source/features/kvcache.md): a block is copied to secondary memory when it is evicted
    from primary, the host's victim to the disk: nothing moves before an eviction, and the tiers hold their sum."""
    from stacksim.kvcache import TieredKVCache
    from stacksim.tier2 import Tier2Store

    async def go():
        loop = asyncio.get_running_loop()
        kv = TieredKVCache(4, 8, Tier2Store(tmp_path, 4096, 64), "lru", 32,
                           io=lambda fn, *a: loop.run_in_executor(None, fn, *a), write_through=False)
        first = [bytes([1, j]) for j in range(4)]
        kv.release(kv.admit(first, 4))
        before = (kv.counters.offload_blocks_d2h, kv.used1, kv.used2)
        for i in (2, 3):
            kv.release(kv.admit([bytes([i, j]) for j in range(4)], 4))
        again = kv.admit(first, 4)
        await _writes_landed(kv)
        return before, len(again.from_host), kv.counters.offload_blocks_d2h, kv.counters.offload_blocks_h2d
    before, from_host, d2h, h2d = asyncio.run(go())
    assert before == (0, 0, 0)
    assert from_host == 4 and d2h == 12 and h2d == 4    # 12 blocks fit 4 + 8; the host's overflow went to disk
