"""The harness against the real NVIDIA Dynamo 1.6.1 (frontend + mocker engine, `python -m rig dynamo up`):
H0, H2B and H9 through Locust, a real Prometheus scraping the frontend, the worker's system port and our
exporters, `analysis report` on those runs, and every dashboard query against that Prometheus."""
import collections
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import requests
import yaml

from configs import load
from conftest import ROOT, free_port, free_port_below, run_module
from configs.runfiles import read_records
from faultcase import fault
from test_grafana import dashboards, label_values_query, query, substitute

MODEL = "nvidia/Llama-3.3-70B-Instruct-NVFP4"


@pytest.fixture(scope="module")
def dynamo(tmp_path_factory):
    if not shutil.which("prometheus") or not shutil.which("nats-server"):
        pytest.skip("prometheus and nats-server come with `make tools`")
    tmp = tmp_path_factory.mktemp("dynamo")
    overlay = tmp / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({
        "results_dir": str(tmp / "results"), "run_dir": str(tmp / "run"),
        "dynamo": {"home": str(tmp / "dynamo"), "http_port": free_port(), "system_port": free_port_below(32768),
                   "rpc_port": free_port(), "response_port": free_port(), "nats_port": free_port()},
        "stacks": {"stackB": {"kvbm_metrics_url": f"http://127.0.0.1:{free_port()}/metrics"}},
        "profiles": {"spill": {"tier2_path": str(tmp / "t2")}},
        "exporters": {"ports": {k: free_port() for k in ("nvme", "uma", "gpu", "kvbm")}},
        "prometheus": {"port": free_port()},
        "loadgen": {"metrics_port": free_port(), "ready_timeout_s": 30},
        "hypotheses": {h: {"repetitions": 1} for h in ("H0", "H2B", "H9")},
    }))
    install = run_module("rig", "--config", str(overlay), "dynamo", "install", timeout=900)
    if install.returncode != 0:
        pytest.skip("the real Dynamo could not be installed here: " + (install.stderr.strip().splitlines() or ["?"])[-1])
    # the operator's overlay through HARNESS_CONFIG, as the README's flow gives it: kept in the written one
    up = run_module("rig", "dynamo", "up", env={**os.environ, "HARNESS_CONFIG": str(overlay)}, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    full = tmp / "dynamo" / "overlay.yaml"                  # the operator's overlay + Stack B on the real Dynamo
    assert load(full).prometheus.port == load(overlay).prometheus.port
    try:
        started = run_module("rig", "--config", str(full), "up", timeout=120)
        assert started.returncode == 0, started.stdout + started.stderr
        cfg = load(full)
        yield {"tmp": tmp, "overlay": full, "cfg": cfg, "prom": f"http://127.0.0.1:{cfg.prometheus.port}"}
    finally:
        run_module("rig", "--config", str(full), "down")
        run_module("rig", "--config", str(overlay), "dynamo", "down")


def locust(dynamo, name, **env):
    full_env = {**os.environ, "HARNESS_CONFIG": str(dynamo["overlay"]), **env}
    full_env.pop("MODEL", None)                  # the rig's own model (stacks.stackB.model) is served
    proc = subprocess.run([sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / f"{name}.py"),
                           "--headless", "--only-summary"], cwd=dynamo["tmp"], env=full_env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    [run] = sorted((dynamo["tmp"] / "results").glob(f"{name}-*"), key=lambda p: p.stat().st_mtime)[-1:]
    return run, json.loads((run / "manifest.json").read_text()), read_records(run / "requests.jsonl")


@pytest.fixture(scope="module")
def runs(dynamo):
    return {"H2B": locust(dynamo, "h2b", CONTEXT_TOKENS="512,2048", CONCURRENCY="4", DURATION_S="6"),
            "H0": locust(dynamo, "h0", STACK="B", CONCURRENCY="1,4,8", CONTEXT_TOKENS="256", DURATION_S="4"),
            "H9": locust(dynamo, "h9", CONTEXT_TOKENS="1024,2048", CONCURRENCY="2", DURATION_S="3")}


def test_h2b_prompts_have_the_target_size_and_each_users_document_is_reused(runs):
    """Sized with the model's tokenizer before load: every prompt exactly its target as the server counts it
    (each was one token short: the nonce's trailing space counted twice, #24.4), and a user's document
    never changes, so every request after a user's first at a size hits the prefix cache."""
    run, manifest, records = runs["H2B"]
    assert manifest["status"] == "complete" and any("prompt sizing: tokenizer" in n["text"] for n in manifest["notes"])
    ok = [r for r in records if r["ok"]]
    served = [r for r in records if r["error_class"] != "cancelled_by_step"]    # the run's end cuts a few
    assert len(ok) > 20 and len(ok) == len(served), collections.Counter(r["error"] for r in records)
    assert all(r["prompt_tokens"] == r["prompt_tokens_target"] == r["target_context_tokens"] for r in ok), \
        sorted({(r["target_context_tokens"], r["prompt_tokens"]) for r in ok})
    seen = set()
    for r in sorted(ok, key=lambda r: r["start_time"]):
        key = (r["user"], r["target_context_tokens"])
        if key in seen:
            assert r["cached_tokens"] and r["cached_tokens"] > 0, r
        seen.add(key)


def test_h0_runs_on_the_rigs_model_and_finds_levels(runs):
    run, manifest, records = runs["H0"]
    assert manifest["model"] == MODEL and manifest["status"] == "complete"
    assert {r["target_concurrency"] for r in records if r["ok"]} == {1, 4, 8}
    # ITL and TPOT from the real frontend's stream (#27.1): every step has them
    from analysis.steps import load_run, step_table
    table = step_table(*load_run(run))
    assert (table["itl_p50_s"] > 0).all() and (table["tpot_p50_s"] > 0).all(), table[["itl_p50_s", "tpot_p50_s"]]
    assert table["output_tokens_per_s_per_user"].gt(0).all()


def test_h9_is_blocked_by_the_real_frontend_and_keeps_running(runs):
    run, manifest, records = runs["H9"]
    assert "Unsupported parameter(s): `session_id`" in manifest["blocked"]["reason"]
    refused = [r for r in records if r["status"] == 400]
    assert refused and all(r["error_class"] == "http_400" for r in refused)
    assert any(r["ok"] and r["phase"] == "replay" for r in records)
    assert all(r["prompt_tokens"] == r["target_context_tokens"] for r in records if r["ok"])   # every phase


def series(dynamo, expr):
    r = requests.get(f"{dynamo['prom']}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert r["status"] == "success", r
    return {json.dumps(s["metric"], sort_keys=True): float(s["value"][1]) for s in r["data"]["result"]}


def test_prometheus_scrapes_the_real_names(dynamo, runs):
    """The frontend and the worker's system port under their own names, and the exporter reading them:
    the served 64-token block size, bytes per block from the model's shape, the worker's KV usage."""
    assert sum(series(dynamo, 'dynamo_frontend_requests_total{status="success"}').values()) > 20
    assert sum(series(dynamo, 'dynamo_frontend_failures_total{class="InvalidRequest"}').values()) >= 1  # H9
    assert series(dynamo, "vllm:kv_cache_usage_perc")
    up = {json.loads(k)["target"]: v for k, v in series(dynamo, "sparkrig_kvbm_up").items()}
    assert up == {"kvbm": 0, "frontend": 1, "worker": 1}     # no KVBM on the mocker: said, not faked
    assert list(series(dynamo, "sparkrig_kv_block_size_tokens").values()) == [64]
    size = series(dynamo, 'sparkrig_kv_block_size_bytes{source="model_shape"}')
    assert list(size.values()) == [80 * 8 * 128 * 2 * 1 * 64]
    assert list(series(dynamo, 'sparkrig_kv_tier_capacity_blocks{tier="device"}').values()) == [16384]
    assert list(series(dynamo, "sparkrig_kv_prefix_cached_tokens_total").values())[0] > 0


def test_analysis_report_on_the_real_runs(dynamo, runs, tmp_path):
    proc = run_module("analysis", "--config", str(dynamo["overlay"]), "report", "--all", "--out", str(tmp_path),
                      timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    verdicts = json.loads((tmp_path / "verdict.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    by_hyp = {v["hypothesis"]: v for v in verdicts.values()}
    assert set(by_hyp) == {"H0", "H2B", "H9"}
    h2b = {g["name"]: g for g in by_hyp["H2B"]["gates"]}
    assert h2b["ssd_mechanism"]["reason"] == "TELEMETRY_MISSING"           # no KVBM here: never a pass
    assert {"kv_offload_disk_bytes", "kv_onboard_disk_bytes"} <= set(by_hyp["H2B"]["telemetry_missing"])
    h9 = {g["name"]: g for g in by_hyp["H9"]["gates"]}
    assert h9["blocked"]["status"] == "blocked" and h9["errors"]["status"] in ("pass", "fail")
    report = (tmp_path / "report.md").read_text()
    assert "H9 — Session rehydration from the SSD tier" in report
    # no KVBM on the mocker: the disk figures are the host's disk, and its correlations are no evidence (#24.5)
    h2b_line = next(line for line in report.splitlines() if line.startswith("- H2B ") and "(stackB): at " in line)
    assert "host disk, no KV tier observed" in h2b_line and "tier2 onboard" not in h2b_line
    assert "not evidence of a storage effect" in report
    assert "up to 2.20x apart" in report          # the frontend's own TTFT buckets, and what they cost a p99


def test_every_dashboard_query_runs_against_the_real_stack(dynamo, runs):
    values = {"run_id": "|".join(p[0].name for p in runs.values()), "stack": ".*", "instance": ".*", "device": ".*",
              "rig": ".*", "site": ".*"}
    with_data = set()
    for board in dashboards().values():
        for v in board["templating"]["list"]:
            if v["type"] == "query":
                query(dynamo["prom"], substitute(label_values_query(v["definition"]), values), None)
        for panel in board["panels"]:
            for target in panel["targets"]:
                if query(dynamo["prom"], substitute(target["expr"], values), None):
                    with_data.add(panel["title"])
    assert {"TTFT p50 / p95 / p99 by stack", "Dynamo frontend outcomes (its own counters)",
            "Stack-side TTFT p99 (frontend's own histograms)", "Engine KV usage and prefix-cache hit share",
            "Requests per second by HTTP status and error class", "TTFT p99", "TTFT p99 over kv_tier2 r_await"} \
        <= with_data, sorted(with_data)


CLIENT_CHECK = """
import dataclasses, json, sys
from locust.contrib.fasthttp import FastHttpSession
from locust.event import EventHook
from configs.runfiles import RequestRecord
from locustfiles.lib.stream import send
base, model = sys.argv[1], sys.argv[2]
session = FastHttpSession(base, request_event=EventHook(), user=None)
out = []
for extra in ({"prompt": "hello " * 9000}, {"prompt": "hello", "session_id": "s1"}):
    rec = RequestRecord("r", "H9", "stackB", "fixed_context", 0, 0, "run", 1, 1, 0, "w", "completions", model)
    send(session, "/completions", {"model": model, "max_tokens": 4, **extra}, rec, "completions")
    out.append(dataclasses.asdict(rec))
print(json.dumps(out))
"""


def test_client_classifies_the_real_frontends_rejections(dynamo, runs):
    """Our client (in a process of its own: Locust patches the standard library) against the real
    frontend: an over-length prompt streams HTTP 200 then an SSE error (stream_error with the server's
    words); an unknown field is a 400 with Dynamo's top-level message."""
    proc = subprocess.run([sys.executable, "-c", CLIENT_CHECK, dynamo["cfg"].stacks["stackB"].openai_base, MODEL],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    too_long, refused = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (too_long["status"], too_long["error_class"], too_long["error"]) == (200, "stream_error",
                                                                                 "Internal server error")
    assert (refused["status"], refused["error_class"]) == (400, "http_400")
    assert refused["error"] == "Validation: Unsupported parameter(s): `session_id`"


def test_a_frontend_told_to_drop_unknown_fields_is_caught(dynamo, runs):
    """DYN_IGNORE_OPENAI_FE_UNSUPPORTED_FIELDS=true: the real frontend answers 200 to session_id and drops
    it. A second real frontend started that way beside the first (same worker, same discovery): H9 is not
    blocked, and the run says session_id_ignored instead of passing silently."""
    from rig import dynamo as rd
    from rig.procs import Supervisor
    cfg = dynamo["cfg"]
    port = free_port()
    cmd = rd.commands(cfg, rd.venv_python(cfg), rd.home(cfg) / "model")["frontend"]
    cmd[cmd.index("--http-port") + 1] = str(port)
    env = {**rd.environment(cfg), "DYN_IGNORE_OPENAI_FE_UNSUPPORTED_FIELDS": "true",
           "DYN_TCP_RESPONSE_STREAM_PORT": str(free_port())}
    sup = Supervisor(dynamo["tmp"] / "lax")
    sup.start("frontend-lax", cmd, env=env, cwd=rd.home(cfg), ready_url=f"http://127.0.0.1:{port}/metrics", timeout_s=60)
    try:
        from configs.probe import wait_for_model
        assert wait_for_model(f"http://127.0.0.1:{port}/v1", MODEL, 60) is None
        run, manifest, records = locust(dynamo, "h9", ENDPOINT=f"http://127.0.0.1:{port}/v1", CONTEXT_TOKENS="512",
                                        CONCURRENCY="2", DURATION_S="2")
    finally:
        sup.stop("frontend-lax")
    assert manifest["blocked"] is None and manifest["session_id_ignored"] is True
    assert not [r for r in records if r["status"] == 400]          # session_id went through, and nowhere


def test_open_loop_and_trace_replay_against_the_real_frontend(dynamo, tmp_path):
    """Rate mode and trace replay, on the real Dynamo 1.6.1 frontend: the schedule holds, nothing is shed
    at these rates, and the trace's shared prefixes show up in the frontend's own cached_tokens."""
    import yaml
    run, manifest, records = locust(dynamo, "h0", STACK="B", RATE_RPS="4,12", CONTEXT_TOKENS="256", DURATION_S="3")
    assert [s["swept"] for s in manifest["steps"]][:2] == [{"arrival_rate_rps": 4.0}, {"arrival_rate_rps": 12.0}]
    ok = [r for r in records if r["ok"]]
    assert ok and all(r["intended_start_time"] for r in ok)
    assert not [r for r in records if r["error_class"] == "shed_by_client"]
    assert sorted(r["schedule_lag_s"] for r in ok)[len(ok) // 2] < 0.05
    doc = yaml.safe_load(dynamo["overlay"].read_text())
    doc.setdefault("hypotheses", {})["TR"] = {"params": {"trace_time_scale": 0.05}, "stacks": ["stackB"]}
    overlay = tmp_path / "trace.yaml"
    overlay.write_text(yaml.safe_dump(doc))
    run, manifest, records = locust(dynamo, "tr", HARNESS_CONFIG=str(overlay), DURATION_S="5")
    ok = [r for r in records if r["ok"]]
    assert len(ok) > 20 and all(abs(r["prompt_tokens"] - r["prompt_tokens_target"]) <= 2 for r in ok)
    assert sum(r["cached_tokens"] or 0 for r in ok) > 0.2 * sum(r["prompt_tokens"] for r in ok)


def test_probe_sizing_brings_every_size_within_one_percent(dynamo, tmp_path):
    """No tokenizer configured: the run sizes prompts from the server's own counts. One correction left
    4096-token prompts at 3,886 (5 % short) on this frontend; now each size is probed again after its
    correction, and every prompt of the run lands within 1 % of its target (#24.4)."""
    doc = yaml.safe_load(dynamo["overlay"].read_text())
    doc["models"] = {k: {kk: vv for kk, vv in v.items() if kk != "tokenizer"} for k, v in doc["models"].items()}
    overlay = tmp_path / "probe.yaml"
    overlay.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "HARNESS_CONFIG": str(overlay), "CONTEXT_TOKENS": "256,4096", "CONCURRENCY": "2",
           "DURATION_S": "3", "RUN_ID": "probe-sized"}
    env.pop("MODEL", None)
    proc = subprocess.run([sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "h2b.py"), "--headless",
                           "--only-summary"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    run = dynamo["tmp"] / "results" / "probe-sized"
    manifest = json.loads((run / "manifest.json").read_text())
    assert any("prompt sizing: probe" in n["text"] for n in manifest["notes"]), manifest["notes"]
    ok = [r for r in read_records(run / "requests.jsonl") if r["ok"]]
    assert {r["target_context_tokens"] for r in ok} == {256, 4096}
    assert all(abs(r["prompt_tokens"] - r["prompt_tokens_target"]) <= 0.01 * r["prompt_tokens_target"] for r in ok), \
        sorted({(r["prompt_tokens_target"], r["prompt_tokens"]) for r in ok})


@fault("24.2", "a sweep steps down from 8 users to 1 on the real frontend", "the surplus users stop within a second; "
       "the step is measured from at_target; each record carries users_active; requests before it are off target",
       ("loadgen:step measured at its target load",))
def test_stepping_down_stops_the_surplus_users_at_once(dynamo, tmp_path):
    """From 8 users to 1 (the second repetition's first step): Locust ramped down at the spawn rate, which
    was the new count, so 7 users ran on for 7 s of a 5 s step; now the surplus stops within a second, the
    step is measured from when it ran at its target, and every record says how many users were running."""
    from analysis.steps import load_run, step_table
    doc = yaml.safe_load(dynamo["overlay"].read_text())
    doc["hypotheses"]["H0"] = {**doc["hypotheses"].get("H0", {}), "repetitions": 2}
    overlay = tmp_path / "down.yaml"
    overlay.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "HARNESS_CONFIG": str(overlay), "STACK": "B", "CONCURRENCY": "1,8", "CONTEXT_TOKENS": "256",
           "DURATION_S": "5", "RUN_ID": "step-down"}
    env.pop("MODEL", None)
    proc = subprocess.run([sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "h0.py"), "--headless",
                           "--only-summary"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    manifest, records = load_run(dynamo["tmp"] / "results" / "step-down")
    steps = manifest["steps"]
    assert [s["target_concurrency"] for s in steps] == [1, 8, 1, 8]
    down = steps[2]
    assert down["at_target"] is not None and down["at_target"] - down["start"] < 2.0, down
    after = records[(records["step"] == 2) & (records["start_time"] >= down["at_target"])]
    assert len(after) and set(after["users_active"]) == {1}
    table = step_table(manifest, records)
    first, again = table.iloc[0], table.iloc[2]
    assert 0.5 < again["requests"] / first["requests"] < 2.0, (first["requests"], again["requests"])


@fault("24.1", "the worker behind a real Dynamo frontend dies mid-step (404, empty body; /health stays 200)",
       "users back off; the outage is in the manifest and ends when the worker is back; errors fails STACK_OUTAGE; "
       "no knee from the touched step", ("gate:errors=STACK_OUTAGE", "manifest:outages", "analysis:no knee from an outage"))
def test_a_dead_worker_is_an_outage_and_the_run_goes_on_when_it_returns(dynamo, tmp_path):
    """The mocker killed mid-step: the real frontend answers 404 with an empty body while /health stays 200.
    The load backs off instead of sending 130,000 requests, the outage is in the manifest with its end once
    the worker is back, requests succeed again, and the report derives no knee from the touched step."""
    from rig import dynamo as D
    cfg = dynamo["cfg"]
    sup = D.supervisor(cfg)
    env = {**os.environ, "HARNESS_CONFIG": str(dynamo["overlay"]), "STACK": "B", "CONCURRENCY": "4",
           "CONTEXT_TOKENS": "256", "DURATION_S": "24", "RUN_ID": "dead-worker"}
    env.pop("MODEL", None)
    log = tmp_path / "locust.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "h0.py"),
                                 "--headless", "--only-summary"], cwd=tmp_path, env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 90
        while "step 1/1" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)
        sup.stop("mocker")
        base = D.urls(cfg)["openai_base"].rsplit("/v1", 1)[0]
        dead = requests.post(f"{base}/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 1},
                             timeout=10)
        assert (dead.status_code, dead.content) == (404, b"") and requests.get(f"{base}/health").status_code == 200
        time.sleep(6)
        sup.start("mocker", D.commands(cfg, D.venv_python(cfg), D.model_dir(cfg))["mocker"], env=D.environment(cfg),
                  cwd=D.home(cfg))
        proc.wait(timeout=120)
        err = log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    run = dynamo["tmp"] / "results" / "dead-worker"
    manifest = json.loads((run / "manifest.json").read_text())
    records = read_records(run / "requests.jsonl")
    [outage] = manifest["outages"]
    assert outage["kind"] == "http_404" and outage["end"] is not None, (outage, err[-2000:])
    failed = [r for r in records if r["status"] == 404]
    assert 20 <= len(failed) < 2000                              # backed off: hundreds, not 130,000
    assert any(r["ok"] and r["start_time"] > outage["end"] for r in records)      # going on once it is back
    out = tmp_path / "report"
    report = run_module("analysis", "--config", str(dynamo["overlay"]), "report", "--run", "dead-worker", "--out",
                        str(out), timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    verdict = json.loads((out / "verdict.json").read_text())["dead-worker"]
    assert verdict["knee"]["reason"] == "outage" and verdict["knee"]["u_work"] is None
    assert {g["name"]: g["reason"] for g in verdict["gates"]}["errors"] == "STACK_OUTAGE"


def test_two_workers_behind_the_kv_router_are_each_scraped_and_h5_states_its_routing(dynamo, tmp_path):
    """`dynamo.workers: 2` with the KV router: two mocker processes, each on its own system and request-plane
    ports, both scraped (a Prometheus job target each, and the exporter's two worker targets), both serving
    an H5 run, whose manifest records the router mode and the workers, and whose reuse by turn is there to
    read per routing (#24.8)."""
    from configs.vocabulary import stacks as V
    from prometheus_client.parser import text_string_to_metric_families
    from rig.promconfig import jobs
    doc = yaml.safe_load((dynamo["tmp"] / "overlay.yaml").read_text())         # the operator's own overlay
    doc["dynamo"] = {"home": str(tmp_path / "dynamo"), "http_port": free_port(), "response_port": free_port(),
                     "system_port": free_port_below(32768, every=2), "rpc_port": free_port_below(32768, every=2),
                     "nats_port": free_port(), "workers": 2, "router_mode": "kv"}
    doc["results_dir"] = str(tmp_path / "results")
    doc["hypotheses"] = {"H5": {"params": {"concurrency": 4, "context_tokens": 256, "session_turns": 4,
                                           "think_time_s": 0.1}, "sweep": {"reuse_ratio": [0.75]},
                                "step_duration_s": 8, "repetitions": 1}}
    overlay = tmp_path / "two.yaml"
    overlay.write_text(yaml.safe_dump(doc))
    up = run_module("rig", "--config", str(overlay), "dynamo", "up", timeout=300)
    full = tmp_path / "dynamo" / "overlay.yaml"
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "router kv" in up.stdout
        stack = load(full).stacks["stackB"]
        assert len(stack.worker_urls) == 2 and stack.router_mode == "kv"
        [job] = [j for j in jobs(load(full)) if j.name == "worker-stackB"]
        assert sorted(t for g in job.targets for t in g["targets"]) == sorted(
            u.split("//")[1].split("/")[0] for u in stack.worker_urls)
        env = {**os.environ, "HARNESS_CONFIG": str(full), "RUN_ID": "two-workers"}
        env.pop("MODEL", None)
        proc = subprocess.run([sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "h5.py"), "--headless",
                               "--only-summary"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode in (0, 1), proc.stderr[-3000:]
        served = []
        for url in stack.worker_urls:
            families = text_string_to_metric_families(requests.get(url, timeout=10).text)
            served.append(sum(s.value for f in families if f.name == V.WK_REQUESTS for s in f.samples
                              if s.name == V.WK_REQUESTS + "_total"))
        assert all(n > 0 for n in served), served                                # the router used both
    finally:
        down = run_module("rig", "--config", str(overlay), "dynamo", "down")
    assert down.stdout.count("mocker") == 2, down.stdout
    manifest = json.loads((tmp_path / "results" / "two-workers" / "manifest.json").read_text())
    assert manifest["config"]["stacks"]["stackB"]["router_mode"] == "kv"
    from analysis.steps import by_turn, load_run
    turns = by_turn(load_run(tmp_path / "results" / "two-workers")[1])
    assert turns["turn"].tolist()[:2] == [0, 1] and turns["cached_share"].iloc[-1] > turns["cached_share"].iloc[0]
