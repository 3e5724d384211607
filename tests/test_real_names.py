"""The simulator follows the real Dynamo 1.6.1: every family it serves under a real name exists in the
real exposition with the same type, the same label names and (histograms) the same buckets."""
import socket
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from configs.vocabulary import stacks as V
from conftest import ROOT, Sim

REAL = ROOT / "tests" / "fixtures" / "dynamo-1.6.1"
MODEL = "nvidia/Llama-3.3-70B-Instruct-NVFP4"
REAL_PREFIXES = ("dynamo_", "vllm:", "kvbm_")


def families(text: str) -> dict:
    """{family: (type, label names, histogram buckets)} for the real systems' names."""
    out = {}
    for fam in text_string_to_metric_families(text):
        if not fam.name.startswith(REAL_PREFIXES):
            continue
        labels = set()
        buckets = set()
        for s in fam.samples:
            labels |= set(s.labels) - {"le"}
            if s.name.endswith("_bucket"):
                buckets.add(float(s.labels["le"]))
        known = out.get(fam.name, (fam.type, set(), set()))
        out[fam.name] = (fam.type, known[1] | labels, known[2] | buckets)
    return out


def real(*names: str) -> dict:
    merged = {}
    for n in names:
        for name, (kind, labels, buckets) in families((REAL / n).read_text()).items():
            _, known_labels, known_buckets = merged.get(name, (kind, set(), set()))
            merged[name] = (kind, known_labels | labels, known_buckets | buckets)
    return merged


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """Simulated Stack B after the kinds of requests the real one counted: ok, streamed and unary,
    a refused field, an unknown model, an over-length prompt and a cancelled stream."""
    with Sim(tmp_path_factory.mktemp("names"), "B", time_scale=0.25) as sim:
        url = f"{sim.base}/v1/completions"
        for stream in (True, False):
            requests.post(url, json={"model": MODEL, "prompt": "hello there", "max_tokens": 3, "stream": stream},
                          timeout=30).raise_for_status()
        requests.post(url, json={"model": MODEL, "prompt": "x", "session_id": "s"}, timeout=10)
        requests.post(url, json={"model": "nope", "prompt": "x"}, timeout=10)
        requests.post(url, json={"model": MODEL, "prompt": " ".join(["w"] * 9000), "stream": True}, timeout=30)
        s = socket.create_connection(("127.0.0.1", sim.port))
        body = f'{{"model": "{MODEL}", "prompt": "gone", "max_tokens": 2000, "stream": true}}'
        s.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
        s.recv(100)
        s.close()
        time.sleep(1)
        yield {target: families(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
               for target, port in (("frontend", sim.port), ("worker", sim.worker_port), ("kvbm", sim.kvbm_port))}


@pytest.mark.parametrize("target,fixtures", [
    ("frontend", ("dynamo_frontend_metrics.txt", "dynamo_frontend_metrics_kvrouter.txt")),
    ("worker", ("dynamo_worker_metrics.txt",)),
    ("kvbm", ("dynamo_kvbm_metrics.txt",)),
])
def test_simulator_families_match_the_real_ones(simulated, target, fixtures):
    ours, theirs = simulated[target], real(*fixtures)
    assert ours, f"the simulator serves no real-named family on its {target} listener"
    drift = []
    for name, (kind, labels, buckets) in sorted(ours.items()):
        if name not in theirs:
            drift.append(f"{name}: not served by Dynamo {V.DYNAMO_RELEASE}")
            continue
        rkind, rlabels, rbuckets = theirs[name]
        if kind != rkind:
            drift.append(f"{name}: type {kind}, real {rkind}")
        if labels != rlabels:
            drift.append(f"{name}: labels {sorted(labels)}, real {sorted(rlabels)}")
        if buckets and rbuckets and buckets != rbuckets:
            drift.append(f"{name}: buckets differ from the real ones")
    assert not drift, "\n".join(drift)


def test_simulator_serves_what_the_harness_reads(simulated):
    """The names the exporters, rules and dashboards read from Stack B are all there."""
    frontend, worker = simulated["frontend"], simulated["worker"]
    for name in (V.FE_REQUESTS, V.FE_FAILURES, V.FE_CANCELLATIONS, V.FE_TTFT, V.FE_ITL, V.FE_DURATION,
                 V.FE_INPUT_TOKENS, V.FE_CACHED_TOKENS, V.FE_TOTAL_KV_BLOCKS, V.FE_BLOCK_SIZE, V.FE_CONTEXT_LENGTH):
        assert name in frontend, name
    for name in (V.WK_REQUESTS, V.WK_INFLIGHT, V.WK_KV_USAGE[0], V.WK_RUNNING, V.WK_WAITING):
        assert name in worker, name
    for short in V.KVBM_EXPECTED:
        assert V.KVBM + short in simulated["kvbm"], short


TRTLLM_REAL = ROOT / "tests" / "fixtures" / "trtllm" / "prometheus_metrics.txt"


def trtllm_families(text: str) -> dict:
    """{family: (type, label names, buckets)} for TensorRT-LLM's names; the labels Dynamo's worker injects
    when it passes them through, and the pid of trtllm-serve's multiprocess gauges, are not the engine's."""
    out = {}
    for fam in text_string_to_metric_families(text):
        if fam.name.startswith("trtllm_"):
            labels = {k for s in fam.samples for k in s.labels} - {"le", "pid", *V.TRTLLM_DYNAMO_LABELS}
            buckets = {float(s.labels["le"]) for s in fam.samples if s.name.endswith("_bucket")}
            out[fam.name] = (fam.type, labels, buckets)
    return out


def test_trtllm_offload_families_match_tensorrt_llm(tmp_path):
    """Stack B under TensorRT-LLM's native offload: the KV families the simulated worker passes through
    are TensorRT-LLM's (tests/fixtures/trtllm/, built from its collector.py), with their types and labels,
    plus Dynamo's injected labels; and a spilling workload moves their counters as the engine's would."""
    small = "profiles: {spill: {tier0_bytes: 8MiB, tier1_bytes: 8MiB}}\n"      # 128 + 128 blocks
    with Sim(tmp_path, "B", small, args=("--kv-offload", "trtllm"), time_scale=0.05) as sim:
        url = f"{sim.base}/v1/completions"
        prompts = [f"{i} " + " ".join(["doc"] * 3000) for i in range(8)]
        for p in prompts + prompts:          # 8 documents past tier0 + tier1, then read back
            requests.post(url, json={"model": MODEL, "prompt": p, "max_tokens": 2}, timeout=60).raise_for_status()
        text = requests.get(f"http://127.0.0.1:{sim.worker_port}/metrics", timeout=5).text
        with pytest.raises(requests.ConnectionError):          # no KVBM listener under TensorRT-LLM's offload
            requests.get(f"http://127.0.0.1:{sim.kvbm_port}/metrics", timeout=5)
    ours, theirs = trtllm_families(text), trtllm_families(TRTLLM_REAL.read_text())
    assert {V.TRTLLM_KV_ONBOARD_BYTES, V.TRTLLM_KV_OFFLOAD_BYTES, V.TRTLLM_PROMPT_CACHE_HIT_TOKENS} <= set(ours)
    drift = [f"{name}: {ours[name]} vs TensorRT-LLM's {theirs.get(name)}" for name in sorted(ours)
             if theirs.get(name, (None,))[:2] != ours[name][:2]]
    assert not drift, "\n".join(drift)
    injected = {s.labels.get(k) for fam in text_string_to_metric_families(text) if fam.name.startswith("trtllm_")
                for s in fam.samples for k in V.TRTLLM_DYNAMO_LABELS}
    assert None not in injected, "every passed-through family carries Dynamo's labels"
    values = {(s.name, s.labels.get("cache_tier")): s.value for fam in text_string_to_metric_families(text)
              for s in fam.samples}
    assert values[(V.TRTLLM_KV_OFFLOAD_BYTES + "_total", None)] > 0
    assert values[(V.TRTLLM_PROMPT_CACHE_HIT_TOKENS + "_total", "disk")] > 0
    assert values[(V.TRTLLM_KV_ONBOARD_BYTES + "_total", None)] > 0
