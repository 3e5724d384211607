"""The KVBM collector over real HTTP: Dynamo's exposition text served on loopback, and the live simulator."""
import http.server
import threading

import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT, Sim, free_port
from configs import load
from exporters.collectors.kvbm import BlockSize, KvbmCollector

DYNAMO = ROOT / "tests" / "fixtures" / "dynamo"
REAL = ROOT / "tests" / "fixtures" / "dynamo-1.6.1"
BLOCK = 65536
PROFILE = BlockSize(BLOCK, 32)          # no model shape: the profile's bytes per block


class TextServer:
    """A loopback HTTP server whose /metrics body and status the test can change between scrapes."""

    def __init__(self, text: str, status: int = 200) -> None:
        self.text, self.status = text, status
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = outer.text.encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/metrics"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def serve():
    servers = []

    def start(text, status=200):
        servers.append(TextServer(text, status))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


def scrape(collector) -> dict:
    reg = CollectorRegistry()
    reg.register(collector)
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(generate_latest(reg).decode()) for s in fam.samples}


def lb(**labels):
    return frozenset(labels.items())


def transfer(direction, src, dst):
    return lb(direction=direction, from_tier=src, to_tier=dst)


def test_object_tier_release_is_normalised(serve, caplog):
    server = serve((DYNAMO / "kvbm-object-tier.txt").read_text())
    m = scrape(KvbmCollector(server.url, None, PROFILE))
    assert m[("sparkrig_kvbm_up", lb(target="kvbm"))] == 1
    assert m[("sparkrig_kv_transfer_blocks_total", transfer("offload", "device", "host"))] == 12500
    assert m[("sparkrig_kv_transfer_bytes_total", transfer("offload", "device", "host"))] == 12500 * BLOCK
    assert m[("sparkrig_kv_transfer_bytes_total", transfer("offload", "host", "disk"))] == 4200 * BLOCK
    assert m[("sparkrig_kv_transfer_bytes_total", transfer("onboard", "disk", "device"))] == 640 * BLOCK
    assert m[("sparkrig_kv_transfer_bytes_total", transfer("onboard", "object", "device"))] == 0
    assert m[("sparkrig_kv_hit_ratio", lb(tier="host"))] == 0.5
    assert m[("sparkrig_kv_hit_ratio", lb(tier="disk"))] == 0.25
    assert m[("sparkrig_kv_matched_tokens_total", lb())] == 40960
    assert m[("sparkrig_kv_transfer_requests_total", lb(direction="onboard"))] == 96
    assert m[("sparkrig_kv_block_size_bytes", lb(source="profile"))] == BLOCK
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_the_standard_total_and_created_spelling_is_read_too(serve, caplog):
    """A KVBM built with another Prometheus library may print counters as prometheus_client does:
    `_total` samples and a `_created` timestamp beside each."""
    import re
    text = (DYNAMO / "kvbm-object-tier.txt").read_text()
    counters = set(re.findall(r"^# TYPE (kvbm_\w+) counter$", text, re.M))
    lines = []
    for line in text.splitlines():
        name = line.split()[2] if line.startswith("# ") else line.split(" ")[0].split("{")[0]
        if name in counters:
            if line.startswith("# "):
                line = line.replace(name, name + "_total", 1)
            else:
                lines.append(line.replace(name, name + "_total", 1))
                line = line.replace(name, name + "_created", 1).rsplit(" ", 1)[0] + " 1.7e9"
        lines.append(line)
    server = serve("\n".join(lines) + "\n")
    m = scrape(KvbmCollector(server.url, None, PROFILE))
    assert m[("sparkrig_kv_transfer_blocks_total", transfer("offload", "device", "host"))] == 12500
    assert m[("sparkrig_kv_transfer_bytes_total", transfer("onboard", "disk", "device"))] == 640 * BLOCK
    assert m[("sparkrig_kv_matched_tokens_total", lb())] == 40960
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_remote_tier_release_is_normalised(serve, caplog):
    server = serve((DYNAMO / "kvbm-remote-tier.txt").read_text())
    m = scrape(KvbmCollector(server.url, None, PROFILE))
    assert m[("sparkrig_kv_transfer_blocks_total", transfer("offload", "device", "remote"))] == 10
    # remote bytes are KVBM's own measurement, not blocks x block size
    assert m[("sparkrig_kv_transfer_bytes_total", transfer("offload", "device", "remote"))] == 655360
    assert m[("sparkrig_kv_transfer_bytes_total", transfer("offload", "device", "disk"))] == 16 * BLOCK
    assert m[("sparkrig_kv_hit_ratio", lb(tier="remote"))] == 0.5
    assert m[("sparkrig_kv_transfer_failures_total", lb(tier="remote", op="read"))] == 1
    assert m[("sparkrig_kv_onboarding_requests", lb())] == 2       # the onboarding queue, as KVBM counts it
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_restart_keeps_counters_monotonic(serve):
    text = (DYNAMO / "kvbm-object-tier.txt").read_text()
    server = serve(text)
    c = KvbmCollector(server.url, None, PROFILE)
    scrape(c)
    server.text = text.replace("kvbm_offload_blocks_d2h 12500", "kvbm_offload_blocks_d2h 100")
    m = scrape(c)
    assert m[("sparkrig_kv_transfer_blocks_total", transfer("offload", "device", "host"))] == 12600
    assert m[("sparkrig_kv_transfer_bytes_total", transfer("offload", "device", "host"))] == 12600 * BLOCK
    assert m[("sparkrig_kvbm_counter_resets_total", lb())] == 1
    server.text = text.replace("kvbm_offload_blocks_d2h 12500", "kvbm_offload_blocks_d2h 150")
    assert scrape(c)[("sparkrig_kv_transfer_blocks_total", transfer("offload", "device", "host"))] == 12650


def test_unknown_and_missing_names_are_reported_once(serve, caplog):
    text = (DYNAMO / "kvbm-object-tier.txt").read_text()
    text = text.replace("kvbm_matched_tokens 40960", "") + "# TYPE kvbm_shiny_new gauge\nkvbm_shiny_new 3\n"
    c = KvbmCollector(serve(text).url, None, PROFILE)
    for _ in range(3):
        m = scrape(c)
    assert ("sparkrig_kv_matched_tokens_total", lb()) not in m
    warnings = [r.message for r in caplog.records if r.levelname == "WARNING"]
    assert sum("kvbm_shiny_new" in w for w in warnings) == 1
    assert sum("kvbm_matched_tokens" in w for w in warnings) == 1


def test_unreachable_and_failing_targets_count_errors(serve, caplog):
    broken = serve("oops", status=500)
    c = KvbmCollector(f"http://127.0.0.1:{free_port()}/metrics", broken.url, PROFILE, timeout_s=1)
    for _ in range(2):
        m = scrape(c)
    assert m[("sparkrig_kvbm_up", lb(target="kvbm"))] == 0
    assert m[("sparkrig_kvbm_up", lb(target="frontend"))] == 0
    assert m[("sparkrig_kvbm_scrape_errors_total", lb(target="kvbm", reason="connection"))] == 2
    assert m[("sparkrig_kvbm_scrape_errors_total", lb(target="frontend", reason="http_status"))] == 2
    assert m[("sparkrig_kvbm_scrape_errors_total", lb(target="kvbm", reason="timeout"))] == 0
    assert not any(n.startswith("sparkrig_kv_transfer") for n, _ in m)
    assert len([r for r in caplog.records if "unavailable" in r.message]) == 2


def test_live_simulator_stack_b(tmp_path, caplog):
    overlay = "profiles:\n  spill: {tier0_bytes: 4MiB, tier1_bytes: 2MiB, tier2_bytes: 128MiB}\n"
    with Sim(tmp_path, "B", overlay, time_scale=0.5) as sim:
        prompts = [" ".join(f"p{i}w{j}" for j in range(600)) for i in range(10)]
        for p in prompts + prompts[:2]:
            requests.post(f"{sim.base}/v1/completions", json={"model": "nvidia/Llama-3.3-70B-Instruct-NVFP4",
                          "prompt": p, "max_tokens": 2}, timeout=30).raise_for_status()
        c = KvbmCollector(f"http://127.0.0.1:{sim.kvbm_port}/metrics", f"{sim.base}/metrics", PROFILE)
        m = scrape(c)
        raw = sim.metrics(port=sim.kvbm_port)
    assert m[("sparkrig_kvbm_up", lb(target="kvbm"))] == 1 and m[("sparkrig_kvbm_up", lb(target="frontend"))] == 1
    d2d = raw[("kvbm_onboard_blocks_d2d_total", lb())]
    assert d2d > 0
    assert m[("sparkrig_kv_transfer_bytes_total", transfer("onboard", "disk", "device"))] == d2d * BLOCK
    assert m[("sparkrig_kv_tier_capacity_blocks", lb(tier="device"))] == 64
    assert m[("sparkrig_kv_tier_occupancy_blocks", lb(tier="disk"))] > 0
    # the bytes the simulator really read from its tier2 file, beside KVBM's claim
    assert m[("sparkrig_kv_tier2_file_bytes_total", lb(direction="read"))] == \
        raw[("stacksim_kv_tier2_io_bytes_total", lb(direction="read"))] >= d2d * BLOCK
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_dynamo_161_kvbm_names_are_all_known(serve, caplog):
    """The real 1.6.1 KVBM exposition: every name mapped (object tier and its failures included)."""
    m = scrape(KvbmCollector(serve((REAL / "dynamo_kvbm_metrics.txt").read_text()).url, None, PROFILE))
    assert m[("sparkrig_kv_transfer_blocks_total", transfer("offload", "device", "object"))] == 0
    assert m[("sparkrig_kv_transfer_blocks_total", transfer("onboard", "object", "device"))] == 0
    assert m[("sparkrig_kv_transfer_failures_total", lb(tier="object", op="write"))] == 0
    assert m[("sparkrig_kv_hit_ratio", lb(tier="object"))] == 0
    assert not [r for r in caplog.records if r.levelname == "WARNING"], [r.message for r in caplog.records]


def test_dynamo_161_frontend_and_worker(serve):
    """Block size, capacity, occupancy, prefix-cache tokens and KV usage from the names 1.6.1 serves;
    bytes per block from the model's shape x the served 64 tokens, not the profile's constant."""
    shape = load().models["l70b"].shape
    kvbm = serve((REAL / "dynamo_kvbm_metrics.txt").read_text())
    frontend = serve((REAL / "dynamo_frontend_metrics.txt").read_text())
    worker = serve((REAL / "dynamo_worker_metrics.txt").read_text().replace(
        'vllm:kv_cache_usage_perc{engine="0",model_name="nvidia/Llama-3.3-70B-Instruct-NVFP4"} 0',
        'vllm:kv_cache_usage_perc{engine="0",model_name="nvidia/Llama-3.3-70B-Instruct-NVFP4"} 0.25'))
    m = scrape(KvbmCollector(kvbm.url, frontend.url, BlockSize(BLOCK, 32, shape), worker_urls=[worker.url]))
    assert m[("sparkrig_kvbm_up", lb(target="worker"))] == 1
    assert m[("sparkrig_kv_block_size_tokens", lb())] == 64
    assert m[("sparkrig_kv_block_size_bytes", lb(source="model_shape"))] == 80 * 8 * 128 * 2 * 1 * 64
    assert m[("sparkrig_kv_tier_capacity_blocks", lb(tier="device"))] == 16384
    assert m[("sparkrig_kv_tier_usage_ratio", lb(tier="device"))] == 0.25
    assert m[("sparkrig_kv_prefix_cached_tokens_total", lb())] == 2657216
    assert m[("sparkrig_kv_prompt_tokens_total", lb())] == 3544959


def test_dynamo_161_kv_router_publishes_occupancy(serve):
    kvbm = serve((REAL / "dynamo_kvbm_metrics.txt").read_text())
    text = (REAL / "dynamo_frontend_metrics_kvrouter.txt").read_text().replace(
        'dynamo_frontend_worker_active_decode_blocks{dp_rank="0",worker_id="6270785432421949181",worker_type="decode"} 0',
        'dynamo_frontend_worker_active_decode_blocks{dp_rank="0",worker_id="6270785432421949181",worker_type="decode"} 12')
    m = scrape(KvbmCollector(kvbm.url, serve(text).url, PROFILE))
    assert m[("sparkrig_kv_tier_occupancy_blocks", lb(tier="device"))] == 12


class HostileServer:
    """Headers, then a body that never ends (fast) or trickles a byte a second."""

    def __init__(self, mode: str) -> None:
        import socket
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/metrics"
        self.mode, self.stop = mode, threading.Event()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        import time as _time
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.answer, args=(conn, _time), daemon=True).start()

    def answer(self, conn, _time):
        try:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
            line = b"kvbm_matched_tokens 1\n" * 4096
            while not self.stop.is_set():
                if self.mode == "endless":
                    conn.sendall(line)
                else:
                    conn.sendall(b"#")
                    _time.sleep(1)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stop.set()
        self.sock.close()


@pytest.mark.parametrize("mode,reason", [("endless", "too_large"), ("trickle", "timeout")])
def test_a_hostile_target_costs_one_bounded_scrape(mode, reason):
    import resource
    import time as _time
    server = HostileServer(mode)
    try:
        c = KvbmCollector(server.url, None, PROFILE, timeout_s=2)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = _time.monotonic()
        m = scrape(c)
        took = _time.monotonic() - started
    finally:
        server.close()
    assert took < 4, took                                    # the whole scrape is bounded, not each read
    assert m[("sparkrig_kvbm_up", lb(target="kvbm"))] == 0
    assert m[("sparkrig_kvbm_scrape_errors_total", lb(target="kvbm", reason=reason))] == 1
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 200 * 1024   # KiB: no 7 GB growth


def test_scrapes_never_pile_up_behind_a_slow_one():
    import time as _time
    server = HostileServer("trickle")
    try:
        c = KvbmCollector(server.url, None, PROFILE, timeout_s=2)
        slow = threading.Thread(target=scrape, args=(c,))
        slow.start()
        _time.sleep(0.3)
        started = _time.monotonic()
        scrape(c)                                            # while the first is still reading
        quick = _time.monotonic() - started
        slow.join()
    finally:
        server.close()
    assert quick < 0.5 and c.overlaps == 1


TRTLLM = (ROOT / "tests" / "fixtures" / "trtllm" / "prometheus_metrics.txt").read_text()
REAL_BLOCK = 5242880                  # the fixture's scenario: one 70B fp8 block of 32 tokens


def test_tensorrt_llm_offload_families_become_the_same_tier_series(serve, caplog):
    """TensorRT-LLM's native offload: onboards per tier from its hit tokens by cache level (tokens / tokens per
    block), the offload out of the GPU to the next level, matched tokens = host + disk hits, the device pool
    from its block gauges; nothing it does not count (host -> disk, per-tier hit rates) appears."""
    server = serve(TRTLLM)
    m = scrape(KvbmCollector(server.url, None, BlockSize(REAL_BLOCK, 32), offload="trtllm"))
    assert m[("sparkrig_kvbm_up", lb(target="engine"))] == 1 and ("sparkrig_kvbm_up", lb(target="kvbm")) not in m
    assert m[("sparkrig_kv_transfer_blocks_total", transfer("onboard", "host", "device"))] == 294912 / 32
    assert m[("sparkrig_kv_transfer_blocks_total", transfer("onboard", "disk", "device"))] == 73728 / 32
    assert m[("sparkrig_kv_transfer_bytes_total", transfer("onboard", "disk", "device"))] == 73728 / 32 * REAL_BLOCK
    # together they are what the engine's own byte counter says entered the GPU from colder tiers
    onboard = sum(v for (name, labels), v in m.items() if name == "sparkrig_kv_transfer_bytes_total"
                  and dict(labels)["direction"] == "onboard")
    assert onboard == 6.03979776e+10
    assert m[("sparkrig_kv_transfer_bytes_total", transfer("offload", "device", "host"))] == 2.097152e+11
    assert m[("sparkrig_kv_transfer_blocks_total", transfer("offload", "device", "host"))] == 2.097152e+11 / REAL_BLOCK
    assert m[("sparkrig_kv_matched_tokens_total", lb())] == 294912 + 73728
    assert m[("sparkrig_kv_tier_occupancy_blocks", lb(tier="device"))] == 3584
    assert m[("sparkrig_kv_tier_capacity_blocks", lb(tier="device"))] == 8192
    assert m[("sparkrig_kv_tier_usage_ratio", lb(tier="device"))] == 0.4375
    assert m[("sparkrig_kv_block_size_tokens", lb())] == 32
    assert not [k for k in m if k[0] == "sparkrig_kv_hit_ratio" or "disk" == dict(k[1]).get("to_tier")]
    assert not [r for r in caplog.records if "exposes no" in r.getMessage()]


def test_tensorrt_llm_without_a_disk_level_onboarded_nothing_from_disk_and_an_old_engine_says_nothing(serve, caplog):
    """The engine lists its cache levels: one without a disk level (B1) moved nothing from a disk, a measured 0;
    an engine without the per-tier counter (before TensorRT-LLM PR #18583) leaves the onboards absent and says
    so once."""
    no_disk = "\n".join(line for line in TRTLLM.splitlines() if 'cache_tier="disk"' not in line) + "\n"
    m = scrape(KvbmCollector(serve(no_disk).url, None, BlockSize(REAL_BLOCK, 32), offload="trtllm"))
    assert m[("sparkrig_kv_transfer_blocks_total", transfer("onboard", "disk", "device"))] == 0
    old = "\n".join(line for line in TRTLLM.splitlines() if "prompt_cache_hit_tokens" not in line) + "\n"
    collector = KvbmCollector(serve(old).url, None, BlockSize(REAL_BLOCK, 32), offload="trtllm")
    m = scrape(collector)
    scrape(collector)
    assert not [k for k in m if k[0] == "sparkrig_kv_transfer_blocks_total" and dict(k[1])["direction"] == "onboard"]
    assert ("sparkrig_kv_matched_tokens_total", lb()) not in m
    said = [r.getMessage() for r in caplog.records if "trtllm_prompt_cache_hit_tokens" in r.getMessage()]
    assert len(said) == 1 and "per_tier_hits" in said[0]


def test_tensorrt_llm_engines_add_up_and_one_that_stops_answering_holds_its_count(serve):
    """Each worker's engine is a target of its own; their counters add up, and a worker that does not answer
    one scrape counts with its last value, so the sum never drops (a drop would read as a restart)."""
    one, two = serve(TRTLLM), serve(TRTLLM)
    collector = KvbmCollector(one.url, None, BlockSize(REAL_BLOCK, 32), worker_urls=[one.url, two.url],
                              offload="trtllm")
    disk = ("sparkrig_kv_transfer_blocks_total", transfer("onboard", "disk", "device"))
    assert scrape(collector)[disk] == 2 * 73728 / 32
    two.status = 503
    m = scrape(collector)
    assert m[("sparkrig_kvbm_up", lb(target="engine-1"))] == 0 and m[disk] == 2 * 73728 / 32
    assert m[("sparkrig_kvbm_counter_resets_total", lb())] == 0
