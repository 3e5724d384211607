"""Real Locust runs of the hypothesis locustfiles against the simulator and a server with known timing."""
import csv
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from faultcase import fault
from conftest import ROOT, Sim, free_port, free_port_below, run_module, sims_overlay
from analysis import gates as G
from analysis.steps import load_run, step_table
from locustfiles.lib.console import ms
from configs import load
from configs.runfiles import read_records

ONE_REPETITION = ", ".join(f"{h}: {{repetitions: 1}}" for h in load().hypotheses)
LOCUSTFILES = sorted(p.stem for p in (ROOT / "locustfiles").glob("*.py") if p.stem not in ("adapter_proxy", "__init__"))
MODEL = "nvidia/Llama-3.3-70B-Instruct-NVFP4"


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    """Simulated Stack A and B plus an overlay pointing the harness at them, with everything it
    writes under a temporary directory, small fio files, and one repetition of every hypothesis (what these
    tests check holds for one; three tripled the module's time)."""
    tmp = tmp_path_factory.mktemp("locust")
    with Sim(tmp, "A", time_scale=0.25) as a, Sim(tmp, "B", time_scale=0.25) as b:
        # the adapter proxy's port lies below Linux's ephemeral range (32768-60999): a metrics server that falls
        # back to a free port (bind to 0) can be handed a port free_port() picked and released, and once took it;
        # the load generator's too, with the two after it (its workers' metrics_port + 1 + N), which a test in
        # the other xdist worker once held
        overlay = sims_overlay(tmp, a, b, f"""profiles:
  comfy: {{tier2_path: {tmp / 't2'}}}
  spill: {{tier2_path: {tmp / 't2'}}}
  stress: {{tier2_path: {tmp / 't2'}}}
fio_profiles:
  moderate: {{size: 16MiB}}
  heavy: {{size: 16MiB}}
loadgen: {{metrics_port: {free_port_below(32768, every=3, stride=1)}, adapter_proxy_port: {free_port_below(32768)},
          ready_timeout_s: 10}}
hypotheses: {{{ONE_REPETITION}}}
""")
        yield {"tmp": tmp, "overlay": overlay, "a": a, "b": b}


def locust(rig, name, *args, env=None, timeout=120, wait=True, quiet=True):
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / f"{name}.py"), "--headless",
           *(["--only-summary"] if quiet else []), *args]
    # the simulators serve l70b; H0's own model (l8b) is not loaded there
    full_env = {**os.environ, "HARNESS_CONFIG": str(rig["overlay"]), "MODEL": "l70b", **(env or {})}
    if not wait:         # Ctrl-C as a terminal's foreground job gets it: a background job inherits SIGINT ignored
        return subprocess.Popen(cmd, cwd=rig["tmp"], env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True, preexec_fn=_default_sigint)
    return subprocess.run(cmd, cwd=rig["tmp"], env=full_env, capture_output=True, text=True, timeout=timeout)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def runs(rig, hypothesis):
    base = rig["tmp"] / "results"
    return sorted(base.glob(f"{hypothesis.lower()}-*"), key=lambda p: p.stat().st_mtime) if base.exists() else []


def manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


@pytest.mark.parametrize("name", LOCUSTFILES)
def test_every_locustfile_runs_headless_and_leaves_a_manifest(rig, name):
    before = set(runs(rig, name))
    proc = locust(rig, name, "-t", "3s", env={"DURATION_S": "1"})
    # Locust exits 1 when some requests failed: H9's refused session_id, Stack A's rejections at KV exhaustion
    assert proc.returncode in (0, 1), proc.stdout[-2000:] + proc.stderr[-3000:]
    [run] = set(runs(rig, name)) - before
    m = manifest(run)
    assert m["hypothesis"] == name.upper() and m["run_id"] == run.name
    assert m["status"] in ("complete", "incomplete") and m["end"] >= m["start"]
    assert m["steps"] and all(s["end"] is not None for s in m["steps"])
    records = read_records(run / "requests.jsonl")
    assert records and all(r["run_id"] == run.name for r in records)
    assert any(r["ok"] for r in records), {r["error"] for r in records}
    if name == "h9":            # the simulated Dynamo frontend rejects session_id, as the real one does
        assert "session_id" in m["blocked"]["reason"]
    if name == "h1":            # adapter churn went through the proxy and its tier2 files, removed at its exit
        import re
        done = [n["text"] for n in m["notes"] if "adapter writes read back" in n["text"]]
        writes, mib = map(int, re.search(r"(\d+) adapter writes .* \((\d+) MiB\)", done[0]).groups())
        assert writes > 0 and mib == writes                              # 1 MiB written and read back each
        assert not list((rig["tmp"] / "t2" / "lora").glob("lora-*/adapter.bin"))
        assert any(s.get("cold") for s in m["steps"])
    if name == "h4b":           # the fio job ran during the moderate step and left its summary, or the step says
        fio = [s for s in m["steps"] if s["fio_profile"]]   # why not (a 1 s step on a busy machine can end first)
        assert fio and all(s.get("fio_error") or json.loads((run / s["fio_output"]).read_text())
                           ["jobs"][0]["read"]["io_bytes"] > 0 for s in fio), fio


def test_ttft_matches_a_server_with_known_timing(rig, tmp_path):
    port = free_port()
    stamps = tmp_path / "stamps.jsonl"
    server = subprocess.Popen([sys.executable, "-m", "stacksim.fixed_timing", "--port", str(port),
                               "--model", "known", "--ttft-ms", "100", "--itl-ms", "10", "--tokens", "8",
                               "--stamp-log", str(stamps)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        before = set(runs(rig, "h0"))
        proc = locust(rig, "h0", env={"ENDPOINT": f"http://127.0.0.1:{port}/v1", "MODEL": "known",
                                      "CONCURRENCY": "2", "DURATION_S": "3"}, timeout=180)
        assert proc.returncode == 0, proc.stderr[-2000:]
    finally:
        server.terminate()
        server.wait()
    [run] = set(runs(rig, "h0")) - before
    records = [r for r in read_records(run / "requests.jsonl") if r["ok"]]
    assert len(records) > 20
    ttft = statistics.median(r["ttft_s"] for r in records)
    itl = statistics.median(g for r in records for g in r["itl_s"])
    assert abs(ttft - 0.100) < 0.015, ttft
    assert abs(itl - 0.010) < 0.005, itl
    assert all(r["completion_tokens"] == 8 and r["tokens_source"] == "usage" for r in records)
    assert manifest(run)["status"] == "complete"
    # the target's send stamps join every record by its request identity; the client's own receive lag
    # (receive time minus send time of the same chunk) is what is left of its timing error
    import importlib.util
    spec = importlib.util.spec_from_file_location("client_bench", ROOT / "bench" / "client_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    first, every, target = bench.receive_lags(records, stamps)
    assert len(first) == len(records) and len(every) == 8 * len(records)
    assert statistics.median(first) < 5 and min(every) > -1          # ms; never received before it was sent


def test_records_survive_a_killed_run(rig):
    before = set(runs(rig, "h2b"))
    proc = locust(rig, "h2b", env={"DURATION_S": "60"}, wait=False)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            new = set(runs(rig, "h2b")) - before
            if new and (next(iter(new)) / "requests.jsonl").exists() and \
                    len(read_records(next(iter(new)) / "requests.jsonl")) >= 20:
                break
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    [run] = set(runs(rig, "h2b")) - before
    lines = (run / "requests.jsonl").read_text().splitlines()
    assert len(lines) >= 20 and all(json.loads(line)["run_id"] == run.name for line in lines)
    m = manifest(run)
    assert m["status"] == "running" and m["steps"][0]["end"] is None     # valid JSON, visibly unfinished


@fault("run.signal", "Ctrl-C or SIGTERM to a Locust run mid-step", "manifest incomplete with its stop_reason; run_complete fails RUN_INCOMPLETE", ("gate:run_complete=RUN_INCOMPLETE",))
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_marks_the_run_incomplete(rig, sig):
    before = set(runs(rig, "h2a"))
    proc = locust(rig, "h2a", env={"DURATION_S": "60"}, wait=False)
    deadline = time.time() + 60
    while time.time() < deadline and not (set(runs(rig, "h2a")) - before):
        time.sleep(0.5)
    time.sleep(3)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)          # Ctrl-C reaches the terminal's whole process group
    else:
        os.kill(proc.pid, sig)            # docker stop, systemd, kill: the process alone
    proc.wait(timeout=60)
    [run] = set(runs(rig, "h2a")) - before
    m = manifest(run)
    assert m["status"] == "incomplete" and m["stop_reason"] and m["end"] is not None, m["status"]
    assert G.run_state(m, 0.0)[0].reason == "RUN_INCOMPLETE"
    assert read_records(run / "requests.jsonl")


def test_the_console_says_what_runs_each_steps_numbers_and_the_next_command(rig):
    """#26.1: the plan and its expected time first, one line per step as it ends (the analysis' own numbers;
    n/a where Prometheus cannot say), a table and the next command at the end; Locust's periodic tables are
    off by default in a headless run."""
    proc = locust(rig, "h2b", env={"DURATION_S": "4", "CONTEXT_TOKENS": "256,512", "CONCURRENCY": "4"},
                  quiet=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run] = runs(rig, "h2b")[-1:]
    out = proc.stderr
    assert f"[H2B] run {run.name}: stackB at http://127.0.0.1:{rig['b'].port}/v1" in out
    assert "configuration: configs/harness.yaml + configs/hypotheses.yaml + " in out and str(rig["overlay"]) in out
    assert "2 steps x 4 s = 0m08s expected" in out
    assert "[H2B] spill: no step can reach the disk tier" in out                 # 4 users: nothing spills
    _, records = load_run(run)
    table = step_table(manifest(run), records)
    assert manifest(run)["disk_offload_filter"] is False        # the spill profile turns KVBM's filter off
    lines = [line for line in out.splitlines() if line.startswith("[H2B] step ") and " done, " in line]
    assert len(lines) == 2 and "[H2B] step 2/2 begins: context_tokens=512 (rep 1)" in out
    for line, (_, row) in zip(lines, table.iterrows()):
        assert f"ttft p50/p99 ms {ms(row.ttft_p50_s)}/{ms(row.ttft_p99_s)}" in line, line
        assert f"itl p50/p99 ms {ms(row.itl_p50_s)}/{ms(row.itl_p99_s)}" in line and row.itl_p50_s > 0
        assert f"tpot p50/p99 ms {ms(row.tpot_p50_s)}/{ms(row.tpot_p99_s)}" in line and row.tpot_p50_s > 0
        assert f"good {row.good_share:.0%} {'ok' if row.meets_slo else 'MISS'}" in line, line
        assert f"errors {row.errors}" in line and "kv_tier2 r/s n/a" in line and "disk onboard n/a" in line
    assert f"complete: 2 of 2 steps in {run}; next: sparkrig report --config {rig['overlay']} --run " \
           f"{run.name}" in out
    assert "Aggregated" in out and out.count("Aggregated") <= 3        # Locust's summary at the end, no tables before
    assert len(out.splitlines()) < 80, out


def test_distributed_run_is_one_consistent_run(rig):
    before = set(runs(rig, "h2b"))
    prefix = rig["tmp"] / "dist"
    proc = locust(rig, "h2b", "--processes", "2", "--csv", str(prefix), env={"DURATION_S": "2", "CONTEXT_TOKENS": "256"},
                  timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run] = set(runs(rig, "h2b")) - before
    records = read_records(run / "requests.jsonl")
    assert len({r["worker"] for r in records}) == 2
    keys = [(r["worker"], r["user"], r["start_time"]) for r in records]
    assert len(keys) == len(set(keys))                           # nothing written twice
    with open(f"{prefix}_stats.csv") as f:
        stats = {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}
    # one Locust entry per request (#26.1): the Aggregated row counts requests, not TTFT + E2E + POST entries
    sent = [r for r in records if r["error_class"] not in ("cancelled_by_step", "shed_by_client")]
    assert int(stats[("POST", "completions")]["Request Count"]) == len(sent)
    assert int(stats[("", "Aggregated")]["Request Count"]) == len(sent)
    copies = [r for f in (run / "workers").glob("*.jsonl") for r in read_records(f)]     # each worker's own
    assert sorted(map(json.dumps, copies)) == sorted(map(json.dumps, records))
    assert manifest(run)["status"] == "complete" and manifest(run)["locust"]["mode"] == "master"


def test_a_worker_on_another_host_sends_its_records_and_metrics_to_the_master(rig, tmp_path):
    """Master and worker as separate processes with their own working directory, config and results
    directory (what two hosts have; not --processes): the worker's records reach the master's
    requests.jsonl through Locust's messages, its own copy stays on its side, and the master announces the
    worker's metrics to its Prometheus."""
    import yaml
    doc = yaml.safe_load(rig["overlay"].read_text())
    home = tmp_path / "worker-host"
    home.mkdir()
    worker_port = free_port()
    doc.update(results_dir=str(home / "results"), run_dir=str(home / "run"))
    doc["loadgen"] = {**doc["loadgen"], "metrics_port": worker_port - 1}     # worker 0 serves on metrics_port + 1
    (home / "overlay.yaml").write_text(yaml.safe_dump(doc))
    master_port = free_port()
    before = set(runs(rig, "h2b"))
    master = locust(rig, "h2b", "--master", "--expect-workers", "1", "--master-bind-port", str(master_port),
                    env={"DURATION_S": "3", "CONTEXT_TOKENS": "256"}, wait=False)
    worker = subprocess.Popen([sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "h2b.py"), "--worker",
                               "--master-host", "127.0.0.1", "--master-port", str(master_port)], cwd=home,
                              env={**os.environ, "HARNESS_CONFIG": str(home / "overlay.yaml"), "MODEL": "l70b"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    targets = rig["tmp"] / "run" / "prometheus" / "targets"
    announced = []
    try:
        while master.poll() is None:
            announced += [json.loads(f.read_text()) for f in targets.glob("loadgen-*.json")
                          if f.name.endswith(f"_{worker_port}.json")]
            time.sleep(0.2)
        out = master.stdout.read()
        assert master.returncode == 0, out[-3000:]
        assert worker.wait(timeout=60) == 0
    finally:
        for p in (master, worker):
            if p.poll() is None:
                p.kill()
    [run] = set(runs(rig, "h2b")) - before
    records = read_records(run / "requests.jsonl")
    assert records and len({r["worker"] for r in records}) == 1
    assert any(r["error_class"] == "cancelled_by_step" for r in records)   # cut at the end, and still sent
    [copy] = (home / "results" / run.name / "workers").glob("*.jsonl")
    assert sorted(map(json.dumps, read_records(copy))) == sorted(map(json.dumps, records))
    assert not (home / "results" / run.name / "requests.jsonl").exists()
    assert manifest(run)["status"] == "complete" and manifest(run)["locust"]["mode"] == "master"
    assert not [n for n in manifest(run)["notes"] if "did not all reach the master" in n["text"]]
    assert announced and announced[0][0]["targets"] == [f"127.0.0.1:{worker_port}"]
    assert announced[0][0]["labels"]["worker"] == records[0]["worker"]
    assert not list(targets.glob(f"loadgen-*_{worker_port}.json"))      # withdrawn when the run ended


def listening_addresses(port: int) -> list[str]:
    """IPv4 addresses with a listening TCP socket on ``port``, from the kernel's own table."""
    import ipaddress
    out = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, p = local.split(":")
        if state == "0A" and int(p, 16) == port:
            out.append(str(ipaddress.IPv4Address(bytes.fromhex(address)[::-1])))
    return out


def test_loadgen_metrics_are_served_and_workers_announced(rig):
    import yaml
    port = yaml.safe_load(rig["overlay"].read_text())["loadgen"]["metrics_port"]
    proc = locust(rig, "h2b", "--processes", "2", env={"DURATION_S": "8", "CONTEXT_TOKENS": "256"}, wait=False)
    targets = rig["tmp"] / "run" / "prometheus" / "targets"
    try:
        deadline, master, workers = time.time() + 60, "", []
        while time.time() < deadline and not (workers and "sparkrig_request_ttft_seconds_bucket" in
                                              "".join(workers) and "sparkrig_loadgen_target_concurrency" in master):
            try:                  # the master on the configured port (a static Prometheus target)
                master = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except requests.RequestException:
                pass
            files = list(targets.glob("loadgen-*.json")) if targets.exists() else []
            workers, ports = [], set()    # the workers on metrics_port + 1 + N, announced through file_sd
            for f in files:
                try:
                    address = json.loads(f.read_text())[0]["targets"][0]
                    workers.append(requests.get(f"http://{address}/metrics", timeout=2).text)
                    ports.add(int(address.rsplit(":", 1)[1]))
                except (requests.RequestException, ValueError, OSError):
                    pass
            time.sleep(0.5)
        assert 'sparkrig_loadgen_target_concurrency{hypothesis="H2B"' in master
        assert len(workers) == 2 and all('stack="stackB"' in w and 'workload="fixed_context"' in w for w in workers)
        assert listening_addresses(5557) == ["127.0.0.1"]      # the master's worker port: loopback, not *
        assert ports == {port + 1, port + 2}
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:       # never leave a worker behind to join later tests' masters
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    assert not list(targets.glob("loadgen-*.json"))                 # unannounced at exit


def test_adapter_proxy_refuses_bad_ids_and_does_tier2_io(rig, tmp_path):
    port = free_port()
    proxy = subprocess.Popen([sys.executable, "-m", "locustfiles.adapter_proxy", "--backend", f"{rig['b'].base}/v1",
                              "--port", str(port), "--tier2-path", str(tmp_path / "t2"), "--max-adapters", "3"],
                             cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert "serving adapter proxy" in proxy.stdout.readline()
        url = f"http://127.0.0.1:{port}/v1/completions"
        body = {"model": MODEL, "prompt": "hello there", "max_tokens": 3, "stream": True}
        for bad in ("../escape", "a/b", "x" * 200, "..", ""):
            r = requests.post(url, json={**body, "adapter_id": bad}, timeout=10)
            assert r.status_code == 400 and "invalid adapter_id" in r.json()["error"]["message"], bad
        r = requests.post(url, json={**body, "adapter_id": "lora-007"}, timeout=30)
        assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
        assert (tmp_path / "t2" / "lora" / "lora-007" / "adapter.bin").stat().st_size == 1 << 20
        assert sorted(p.name for p in (tmp_path / "t2").iterdir()) == ["lora"]
        assert not (tmp_path / "escape").exists()
        assert requests.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()["data"][0]["id"] == MODEL
        for i in range(6):                       # more distinct adapters than it keeps: the oldest go
            requests.post(url, json={**body, "adapter_id": f"churn-{i}"}, timeout=30).raise_for_status()
        assert sorted(p.name for p in (tmp_path / "t2" / "lora").iterdir()) == ["churn-3", "churn-4", "churn-5"]
    finally:
        proxy.terminate()
        proxy.wait()
    assert not list((tmp_path / "t2" / "lora").iterdir())      # its adapter files go with it


def test_endpoint_not_ready_is_one_line_and_exit_2_and_leaves_no_run(rig, tmp_path):
    import yaml
    doc = yaml.safe_load(rig["overlay"].read_text())
    doc["loadgen"]["ready_timeout_s"] = 1                # the wait's length is not what this checks
    overlay = tmp_path / "impatient.yaml"
    overlay.write_text(yaml.safe_dump(doc))
    before = set(runs(rig, "h2b"))
    proc = locust(rig, "h2b", env={"HARNESS_CONFIG": str(overlay), "ENDPOINT": f"http://127.0.0.1:{free_port()}/v1",
                                   "DURATION_S": "2"})
    assert proc.returncode == 2
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot reach" in errors[0]
    assert set(runs(rig, "h2b")) == before               # nothing half-made for `report --all` to fail on


def test_a_plan_that_needs_fio_where_there_is_none_stops_before_the_run(rig, tmp_path):
    """H4B's contention steps run fio: without it the run is refused in one line before its directory exists
    (it used to start, then leave an `incomplete` run at the first fio step)."""
    before = set(runs(rig, "h4b"))
    bare = tmp_path / "bin"                   # a PATH with git but no fio
    bare.mkdir()
    (bare / "git").symlink_to(shutil.which("git"))
    proc = locust(rig, "h4b", env={"STACK": "B", "DURATION_S": "2", "PATH": str(bare)}, timeout=60)
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
    assert errors[0].startswith("error: fio is not installed") and "fio profile(s) heavy, moderate" in errors[0]
    assert set(runs(rig, "h4b")) == before


def test_a_context_beyond_the_served_limit_stops_before_the_run(rig):
    before = set(runs(rig, "h2b"))
    proc = locust(rig, "h2b", env={"STACK": "B", "CONTEXT_TOKENS": "99999999", "DURATION_S": "2"}, timeout=60)
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "exceed the context length 8192" in errors[0]
    assert set(runs(rig, "h2b")) == before
    # Stack A publishes no context length: the model's own (131072) bounds it, before any prompt is built
    started = time.time()
    proc = locust(rig, "h2a", env={"STACK": "A", "CONTEXT_TOKENS": "99999999", "DURATION_S": "2"}, timeout=60)
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and "exceed the context length 131072" in errors[0] and time.time() - started < 30


def test_streams_cut_at_a_step_boundary_are_recorded_not_counted(rig, tmp_path):
    """Going from 6 users to 1 cuts 5 streams in flight: each is a record (cancelled_by_step), none is
    an error or a latency sample."""
    overlay = tmp_path / "long.yaml"
    import yaml
    doc = yaml.safe_load(rig["overlay"].read_text())
    # each stream outlasts the 3 s step (~4.8 s: 2000 tokens x 2.4 ms at 6 sequences, time scale 0.25), so all
    # six are in flight at the boundary; 400-token streams ended every ~0.97 s and a slow CI machine put the
    # boundary between two of a user's requests, where there is nothing to cut
    doc["hypotheses"]["H0"]["params"] = {"context_tokens": 64, "max_tokens": 2000}
    overlay.write_text(yaml.safe_dump(doc))
    before = set(runs(rig, "h0"))
    proc = locust(rig, "h0", env={"HARNESS_CONFIG": str(overlay), "STACK": "B", "CONCURRENCY": "6,1",
                                  "DURATION_S": "3"}, timeout=120)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    [run] = set(runs(rig, "h0")) - before
    cut = [r for r in read_records(run / "requests.jsonl") if r["error_class"] == "cancelled_by_step"]
    assert len(cut) >= 5 and all(not r["ok"] and r["e2e_s"] is not None for r in cut)
    manifest, records = load_run(run)
    table = step_table(manifest, records)
    assert table["cancelled_by_step"].sum() >= 1 and (table["errors"] == 0).all()


def test_bad_environment_is_one_line(rig):
    proc = locust(rig, "h2b", env={"STACK": "stackQ"})
    assert proc.returncode != 0 and "error: environment STACK='stackQ'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_step_boundaries_become_grafana_annotations(rig, tmp_path):
    import http.server
    import threading

    import yaml
    posted = []

    class Grafana(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            posted.append((self.path, self.headers.get("Authorization"),
                           json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Grafana)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    doc = yaml.safe_load(rig["overlay"].read_text())
    doc["loadgen"]["grafana_url"] = f"http://127.0.0.1:{httpd.server_address[1]}"
    overlay = tmp_path / "grafana.yaml"
    overlay.write_text(yaml.safe_dump(doc))
    try:
        proc = locust(rig, "h2b", env={"HARNESS_CONFIG": str(overlay), "GRAFANA_TOKEN": "tok", "DURATION_S": "1",
                                       "CONTEXT_TOKENS": "256,512"})
    finally:
        httpd.shutdown()
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    assert len(posted) == 2                                # 2 steps x 1 repetition
    path, auth, body = posted[1]
    assert path == "/api/annotations" and auth == "Bearer tok"
    assert "context_tokens=512" in body["text"] and {"sparkrig", "H2B", "stackB"} <= set(body["tags"])


def test_credentials_never_reach_the_run_files(rig, tmp_path):
    import http.server
    import threading

    import yaml

    class Refusing(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    doc = yaml.safe_load(rig["overlay"].read_text())
    doc["loadgen"]["grafana_url"] = f"http://admin:s3cret@127.0.0.1:{httpd.server_address[1]}"
    overlay = tmp_path / "secret.yaml"
    overlay.write_text(yaml.safe_dump(doc))
    before = set(runs(rig, "h2b"))
    try:
        proc = locust(rig, "h2b", env={"HARNESS_CONFIG": str(overlay), "DURATION_S": "1", "CONTEXT_TOKENS": "256"})
    finally:
        httpd.shutdown()
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    [run] = set(runs(rig, "h2b")) - before
    note = next(n["text"] for n in manifest(run)["notes"] if "Grafana" in n["text"])
    assert f"HTTP 401 from http://***@127.0.0.1:{httpd.server_address[1]}/api/annotations" in note
    for f in run.iterdir():
        assert "s3cret" not in f.read_text(errors="replace"), f.name
    plan = manifest(run)["plan"]                     # a count that mentions tokens is no secret: kept
    assert plan["steps"][0]["params"]["context_tokens"] == 256 and plan["steps"][0]["params"]["max_tokens"] > 0
    assert "s3cret" not in proc.stdout + proc.stderr


def test_a_bad_run_id_is_one_line(rig):
    before = set(runs(rig, "h2b"))
    proc = locust(rig, "h2b", env={"RUN_ID": "../../escape", "DURATION_S": "1"})
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "invalid environment RUN_ID '../../escape'" in errors[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert set(runs(rig, "h2b")) == before


@fault("run.session_id", "an H9 run against a frontend that accepts session_id and drops it", "session_id fails SESSION_ID_IGNORED", ("gate:session_id=SESSION_ID_IGNORED",))
def test_a_frontend_that_drops_unknown_fields_is_flagged_for_h9(rig, tmp_path):
    """Dynamo with DYN_IGNORE_OPENAI_FE_UNSUPPORTED_FIELDS=true answers 200 to session_id and drops it:
    not blocked, yet nothing reaches KVBM. A made-up field answered 200 too gives it away."""

    with Sim(tmp_path, "B", args=("--no-strict-fields",)) as lax:
        before = set(runs(rig, "h9"))
        proc = locust(rig, "h9", env={"ENDPOINT": f"{lax.base}/v1", "DURATION_S": "1", "CONTEXT_TOKENS": "256"})
        assert proc.returncode in (0, 1), proc.stderr[-2000:]
    [run] = set(runs(rig, "h9")) - before
    m = manifest(run)
    assert m["blocked"] is None and m["session_id_ignored"] is True
    assert any("session_id_ignored" in n["text"] for n in m["notes"])
    assert {g.reason for g in G.run_state(m, 0.0)} >= {"SESSION_ID_IGNORED"}
    assert G.verdict(G.run_state(m, 0.0)) == "fail"


@fault("run.stackdied", "the stack dies mid-run (connection refused)", "users back off; the outage is in the manifest; errors fails STACK_OUTAGE", ("gate:errors=STACK_OUTAGE",))
def test_a_stack_that_dies_mid_run_is_an_outage_not_a_flood(rig, tmp_path):
    """Connection refusals in a row make users back off; the manifest holds the outage and the errors
    gate names it (the issue saw ~77k records in 48 s without any pause)."""
    with Sim(tmp_path, "B") as dying:
        before = set(runs(rig, "h2b"))
        proc = locust(rig, "h2b", env={"ENDPOINT": f"{dying.base}/v1", "DURATION_S": "5", "CONTEXT_TOKENS": "256,512"},
                      wait=False)
        time.sleep(6)                # into the second of two 5 s steps, however long the start took
        dying.stop(signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
    [run] = set(runs(rig, "h2b")) - before
    manifest, records = load_run(run)
    refused = records[records["error_class"] == "connection"]
    assert len(refused) >= 20 and len(refused) < 1500, len(refused)
    outages = manifest["outages"]
    assert outages and all(o["kind"] == "connection" and o["end"] >= o["start"] for o in outages)
    assert sum(o["failures"] for o in outages) >= 20
    errors = next(g for g in G.run_state(manifest, float((~records["ok"]).mean())) if g.name == "errors")
    assert errors.reason == "STACK_OUTAGE" and "outage" in errors.detail


def test_open_loop_arrivals_keep_their_schedule_and_shed_over_the_cap(rig, tmp_path):
    """RATE_RPS: requests start on a Poisson schedule whatever the completions do; each record says when it
    was due and how late it left; arrivals over max_in_flight are recorded as shed, never sent."""
    import yaml
    before = set(runs(rig, "h0"))
    proc = locust(rig, "h0", env={"STACK": "A", "RATE_RPS": "8,24", "DURATION_S": "5", "CONTEXT_TOKENS": "64"})
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    [run] = set(runs(rig, "h0")) - before
    m = manifest(run)
    rates = [8.0, 24.0] * m["repetitions"]                              # 2 steps x the hypothesis' repetitions
    assert [s["swept"] for s in m["steps"]] == [{"arrival_rate_rps": r} for r in rates]
    records = read_records(run / "requests.jsonl")
    sent = [r for r in records if r["error_class"] != "shed_by_client"]
    assert all(r["intended_start_time"] is not None and r["schedule_lag_s"] is not None for r in sent if r["ok"])
    assert statistics.median(r["schedule_lag_s"] for r in sent if r["ok"]) < 0.05
    for slot, rate in enumerate(rates):      # Poisson arrivals: the count is within a few sigma of rate x 5 s
        n = sum(1 for r in records if r["step"] == slot)
        assert abs(n - rate * 5) < 4 * (rate * 5) ** 0.5 + 3, (slot, n)
    table = step_table(*load_run(run))
    assert list(table["arrival_rate_rps"]) == rates and table["schedule_lag_p99_s"].notna().all()
    # a cap of 2 requests in flight against a 24/s schedule of slow requests: the rest is shed, and recorded
    doc = yaml.safe_load(rig["overlay"].read_text())
    doc.setdefault("hypotheses", {}).setdefault("H0", {}).setdefault("params", {}).update(max_in_flight=2)
    overlay = tmp_path / "cap.yaml"
    overlay.write_text(yaml.safe_dump(doc))
    before = set(runs(rig, "h0"))
    proc = locust(rig, "h0", env={"HARNESS_CONFIG": str(overlay), "STACK": "A", "RATE_RPS": "24", "DURATION_S": "4",
                                  "CONTEXT_TOKENS": "64"})
    [run] = set(runs(rig, "h0")) - before
    records = read_records(run / "requests.jsonl")
    shed = [r for r in records if r["error_class"] == "shed_by_client"]
    assert shed and all(r["status"] == 0 and r["intended_start_time"] for r in shed)
    table = step_table(*load_run(run))                 # steady state only: the warm-up's records are left out
    assert 0 < table["shed_by_client"].sum() <= len(shed) and (table["errors"] == 0).all()   # not server errors


def test_open_loop_refuses_stateful_workloads_and_distributed_runs(rig):
    proc = locust(rig, "h5", env={"RATE_RPS": "5", "DURATION_S": "1"})
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and "open-loop arrivals" in errors[0] and "waits for each answer" in errors[0]
    proc = locust(rig, "h0", "--processes", "2", env={"STACK": "A", "RATE_RPS": "5", "DURATION_S": "1"})
    assert proc.returncode == 2 and "open-loop arrivals (RATE_RPS) run in one Locust process" in proc.stderr


def test_trace_replay_follows_the_trace_schedule_lengths_and_prefix_sharing(rig, tmp_path):
    import yaml
    from locustfiles.lib import trace
    doc = yaml.safe_load(rig["overlay"].read_text())
    doc.setdefault("hypotheses", {})["TR"] = {"params": {"trace_time_scale": 0.1}}      # 10 x faster than the trace
    overlay = tmp_path / "trace.yaml"
    overlay.write_text(yaml.safe_dump(doc))
    before = set(runs(rig, "tr"))
    proc = locust(rig, "tr", env={"HARNESS_CONFIG": str(overlay), "DURATION_S": "6"})
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    [run] = set(runs(rig, "tr")) - before
    records = sorted(read_records(run / "requests.jsonl"), key=lambda r: r["intended_start_time"])
    entries = trace.load(ROOT / "locustfiles" / "traces" / "synthetic.jsonl")
    sent = [r for r in records if r["ok"]]
    served = [r for r in records if r["error_class"] != "cancelled_by_step"]    # the run's end cuts what is in flight
    assert len(records) > 30 and len(sent) > 0.9 * len(served)
    # the schedule is the trace's, scaled: the first arrivals keep its gaps
    t0, e0 = records[0]["intended_start_time"], entries[0].timestamp_ms
    for r, e in zip(records[:10], entries[:10]):
        assert abs((r["intended_start_time"] - t0) - (e.timestamp_ms - e0) / 1000 * 0.1) < 0.01
    # prompt lengths are the trace's input lengths (the simulator's tokenizer counts words)
    for r, e in zip(records[:10], entries[:10]):
        assert r["prompt_tokens_target"] == e.input_length
        if r["ok"]:
            assert abs(r["prompt_tokens"] - e.input_length) <= 0.05 * e.input_length
    # a shared system prompt and returning conversations: the stack's prefix cache serves a good share
    table = step_table(*load_run(run))
    assert table["prefix_cached_share"].iloc[0] > 0.2


def test_a_rate_sweep_places_rates_between_the_measured_synchronous_and_maximum_rates(rig):
    from rig.ratesweep import rates_between
    assert rates_between(2.0, 10.0, 5) == [2.0, 4.0, 6.0, 8.0, 10.0] and rates_between(3.0, 3.0, 4) == [3.0]
    before = set(runs(rig, "h0"))
    proc = run_module("rig", "--config", str(rig["overlay"]), "ratesweep", "H0", "--stack", "stackA", "--points", "3",
                      "--calibrate-s", "2", "--duration-s", "2", "--max-concurrency", "8", timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    new = sorted(set(runs(rig, "h0")) - before, key=lambda p: p.stat().st_mtime)
    assert len(new) == 3                                       # two calibrations, then the sweep
    sync, most = (float(line.split()[0]) for line in proc.stdout.splitlines() if line.endswith(" requests/s")
                  and line.startswith("    "))
    assert 0 < sync < most
    swept = [s["swept"]["arrival_rate_rps"] for s in manifest(new[-1])["steps"]]
    assert min(swept) == pytest.approx(round(sync, 2)) and max(swept) == pytest.approx(round(most, 2))
    assert len(set(swept)) == 3
