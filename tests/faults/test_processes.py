"""Fault cases of the processes the rig starts and stops (issue 23, parts B4 and C): a command stops only
what it started, and Ctrl-C or SIGTERM in a multi-leg command keeps every leg that finished, stops what it
started and says the result is partial."""
import csv
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, free_port, pairs_overlay, run_module, stack_a_overlay
from faultcase import fault

needs_prometheus = pytest.mark.skipif(not shutil.which("prometheus"), reason="prometheus comes with `make tools`")


def rig_overlay(tmp: Path) -> Path:
    """Every port of the rig free and every directory under ``tmp``: the demo's stacks, the exporters,
    Prometheus and the load generator."""
    a, b = free_port(), free_port()
    path = tmp / "rig.yaml"
    path.write_text(yaml.safe_dump({
        "results_dir": str(tmp / "results"), "run_dir": str(tmp / "run"),
        "stacks": {"stackA": {"openai_base": f"http://127.0.0.1:{a}/v1",
                              "metrics_url": f"http://127.0.0.1:{a}/prometheus/metrics"},
                   "stackB": {"openai_base": f"http://127.0.0.1:{b}/v1", "metrics_url": f"http://127.0.0.1:{b}/metrics",
                              "kvbm_metrics_url": f"http://127.0.0.1:{free_port()}/metrics",
                              "worker_metrics_url": f"http://127.0.0.1:{free_port()}/metrics"}},
        "exporters": {"ports": {k: free_port() for k in ("nvme", "uma", "gpu", "kvbm")}},
        "prometheus": {"port": free_port()}, "loadgen": {"metrics_port": free_port()}}))
    return path


def alive(pids) -> bool:
    return all(Path(f"/proc/{pid}").exists() for pid in pids)


def harness_processes(config: Path) -> list[int]:
    """Processes started for ``config`` (HARNESS_CONFIG in their environment, or the path on their command
    line): what a stopped command must not leave behind."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            seen = (proc / "environ").read_bytes() + (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if str(config).encode() in seen:
            found.append(int(proc.name))
    return found


@needs_prometheus
@fault("23.C2a", "`rig demo` and `rig sweep` started while `rig up` runs", "each refuses (already running) and "
       "stops only what it started: `rig up`'s Prometheus and exporters run on", ("rig:stops only what it started",))
def test_a_refused_start_leaves_what_rig_up_started(tmp_path):
    from rig.procs import Supervisor
    config = rig_overlay(tmp_path)
    up = run_module("rig", "--config", str(config), "up", timeout=120)
    sup = Supervisor(tmp_path / "run")
    try:
        assert up.returncode == 0, up.stderr
        before = sup.running()
        assert "prometheus" in before
        demo = run_module("rig", "--config", str(config), "demo", "--quick", timeout=120)
        assert demo.returncode == 1 and "already running" in demo.stdout, demo.stdout + demo.stderr
        assert "simulated stackA" in demo.stdout and "stopped stacksim-B, stacksim-A" in demo.stdout
        sweep = run_module("rig", "--config", str(config), "sweep", "--phase", "A", timeout=120)
        assert sweep.returncode == 1 and "already running" in sweep.stdout, sweep.stdout + sweep.stderr
        assert sup.running() == before and alive(before.values())
    finally:
        run_module("rig", "--config", str(config), "down")


@fault("23.C2b", "a second `rig pairs` while the first one's simulated Stack B serves its legs",
       "the second stops with PREFLIGHT_STACK_DID_NOT_START and leaves the first one's stack running",
       ("pairs:PREFLIGHT_STACK_DID_NOT_START", "rig:stops only what it started"))
def test_a_second_pairs_leaves_the_first_ones_stack(tmp_path):
    from configs import load
    from rig.launch import start_simulator
    from rig.procs import Supervisor
    config = rig_overlay(tmp_path)
    sup = Supervisor(tmp_path / "run")
    start_simulator(load(str(config)), sup, "stackB")         # the first experiment's, as its legs see it
    try:
        pid = sup.pid_of("stacksim-B")
        second = run_module("rig", "--config", str(config), "pairs", "--pairs", "1", timeout=120)
        assert second.returncode == 2 and "stacksim-B is already running" in second.stdout, second.stdout
        [verdict] = (tmp_path / "results").glob("pairs-*/verdict.json")
        assert json.loads(verdict.read_text())["reasons"] == ["PREFLIGHT_STACK_DID_NOT_START"]
        assert sup.pid_of("stacksim-B") == pid and alive([pid])
    finally:
        sup.stop_all()


def start(config: Path, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rig", "--config", str(config), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def interrupted(config: Path, args: tuple, marker: str, sig: int) -> tuple[subprocess.Popen, str]:
    """`rig <args>` sent ``sig`` 3 s after it printed ``marker`` (the leg then under way); its whole output."""
    proc = start(config, *args)
    seen: list = []
    try:
        read_until(proc, marker, 120, seen)
        time.sleep(3)
        proc.send_signal(sig)
        return proc, "".join(seen) + proc.communicate(timeout=60)[0]
    finally:
        proc.kill()


def read_until(proc: subprocess.Popen, marker: str, timeout_s: float, seen: list) -> None:
    deadline = time.monotonic() + timeout_s
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            return
        assert time.monotonic() < deadline, "".join(seen)
    raise AssertionError(f"ended before {marker!r}: " + "".join(seen))


@fault("23.C6a", "SIGTERM to `rig pairs` while its second leg runs", "the Locust leg is forwarded the signal, "
       "the finished leg stays in legs.csv, the cut one is marked incomplete, verdict INTERRUPTED, exit 143, "
       "no simulator or Locust left", ("pairs:INTERRUPTED",))
def test_sigterm_in_pairs_keeps_the_finished_legs(tmp_path):
    config = pairs_overlay(tmp_path)
    proc, out = interrupted(config, ("pairs", "--pairs", "2", "--duration-s", "2", "--concurrency", "2",
                                     "--context-tokens", "1024"), "leg 2:", signal.SIGTERM)
    assert proc.returncode == 143, out
    assert "Traceback" not in out and "SIGTERM: stopping once the running leg" in out
    [exp] = (tmp_path / "results").glob("pairs-*[0-9]Z")
    legs = list(csv.DictReader(open(exp / "legs.csv")))
    assert [(r["mode"], r["run_status"]) for r in legs] == [("B1", "complete"), ("B2", "incomplete")], legs
    verdict = json.loads((exp / "verdict.json").read_text())
    assert "INTERRUPTED" in verdict["reasons"] and not verdict["decision_grade"]
    cut = json.loads((tmp_path / "results" / legs[1]["run_id"] / "manifest.json").read_text())
    assert cut["status"] == "incomplete" and "SIGTERM" in cut["stop_reason"]
    assert harness_processes(config) == []


@fault("23.C6b", "Ctrl-C (SIGINT) to `rig rehydrate` after its first leg", "the sweep stops after the running leg, "
       "keeps it in sweep.csv, recommends nothing from a partial sweep, exits 130, leaves no process",
       ("rig:partial sweep recommends nothing",))
def test_ctrl_c_in_rehydrate_recommends_nothing(tmp_path):
    config = pairs_overlay(tmp_path)
    proc, out = interrupted(config, ("rehydrate", "--modes", "B1,B2", "--concurrencies", "1,2", "--duration-s", "2",
                                     "--context-tokens", "1024"), "[B1 at replay concurrency 2]", signal.SIGINT)
    assert proc.returncode == 130, out
    [exp] = (tmp_path / "results").glob("rehydrate-*[0-9]Z")
    rows = list(csv.DictReader(open(exp / "sweep.csv")))
    assert [(r["mode"], r["concurrency"]) for r in rows] == [("B1", "1"), ("B1", "2")]
    rec = json.loads((exp / "recommendation.json").read_text())
    assert rec["replay_concurrency"] is None and "partial sweep" in rec["reason"] and "INTERRUPTED" in rec["reason"]
    assert "recommended replay concurrency: none" in out
    assert harness_processes(config) == []


def children(pid: int) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


@fault("23.B4", "one of two load-generator workers (`--processes 2`) killed with SIGKILL mid-step",
       "said on the console; the manifest's loadgen_outages names it; the step's observed concurrency is below its "
       "target; no 15 s wait stamped into the step; gate loadgen fails LOADGEN_WORKER_LOST",
       ("gate:loadgen=LOADGEN_WORKER_LOST", "manifest:loadgen_outages"))
def test_a_killed_worker_is_an_outage_of_the_load_generator(tmp_path):
    from analysis import gates as G
    from analysis.steps import load_run, step_table
    from conftest import Sim
    with Sim(tmp_path, "A", time_scale=0.25) as sim:
        config = stack_a_overlay(tmp_path, sim, "hypotheses: {H0: {repetitions: 1, params: {max_tokens: 8}}}\n")
        env = {**os.environ, "HARNESS_CONFIG": str(config), "MODEL": "l70b", "CONCURRENCY": "8", "DURATION_S": "14",
               "RUN_ID": "lost-worker"}
        proc = subprocess.Popen([sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "h0.py"),
                                 "--headless", "--only-summary", "--processes", "2"], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        seen: list = []
        try:
            read_until(proc, "step 1/1", 60, seen)
            time.sleep(4)
            workers = children(proc.pid)
            assert len(workers) == 2, workers
            os.kill(workers[0], signal.SIGKILL)
            out = "".join(seen) + proc.communicate(timeout=90)[0]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert "load-generator worker" in out and "lost (no heartbeat)" in out, out[-3000:]
    run = tmp_path / "results" / "lost-worker"
    manifest = json.loads((run / "manifest.json").read_text())
    [lost] = manifest["loadgen_outages"]
    assert lost["users_lost"] == 4 and lost["users_left"] == 4 and lost["target_concurrency"] == 8
    [step] = manifest["steps"]
    assert step["end"] - step["start"] < 14 + 3                   # the master's wait is no part of the step
    manifest, records = load_run(run)
    gates = G.run_state(manifest, error_rate=0.0)
    assert [g.reason for g in gates if g.name == "loadgen"] == ["LOADGEN_WORKER_LOST"] and G.verdict(gates) == "fail"
    observed = step_table(manifest, records)["concurrency_observed"].iloc[0]
    assert 3.5 < observed < 7.0, observed                      # 8 users, then 4 for most of the step


def test_an_exited_process_its_parent_has_not_collected_is_not_running():
    """A zombie has exited: a stop waits for the exit, not for init to collect it (every stop took 2 s)."""
    from rig.procs import _alive
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while _alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child.pid)                             # exited, not yet waited for: a zombie
    assert open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    child.wait()
    assert _alive(os.getpid())


needs_fio = pytest.mark.skipif(not shutil.which("fio"), reason="fio comes with `make tools`")


@needs_fio
@fault("29.F1", fault="H4's fio contention job died or was stopped before it did any I/O (a short step on a busy "
       "machine: SIGINT reached fio before its handler, and no summary was written), yet the step kept its fio "
       "profile and the manifest pointed at a summary file that was empty or absent",
       says="the manifest notes `fio job failed: …` and marks the step's `fio_error`; the step table labels it "
       "`<profile> (fio failed)`, so H4 never pools it with the steps that had contention",
       catches=("manifest:fio_error",))
def test_a_fio_job_that_did_no_io_is_not_counted_as_contention(tmp_path):
    from analysis.steps import fio_label
    from configs import load
    from configs.runfiles import Manifest
    from locustfiles.lib.sidejobs import SideJobs

    cfg = load(None)
    profile = dataclasses.replace(cfg.fio_profiles["moderate"], size=4 * 2**20, ioengine="psync", direct=False)
    cfg = dataclasses.replace(cfg, fio_profiles={**cfg.fio_profiles, "moderate": profile})
    (tmp_path / "run").mkdir()
    manifest = Manifest(tmp_path / "run" / "manifest.json", {"run_id": "r", "steps": [], "notes": []})
    side = SideJobs(cfg)

    def step(index: int, pause: float, kill: bool = False) -> dict:
        slot = types.SimpleNamespace(index=index, step=types.SimpleNamespace(
            fio_profile="moderate", params=types.SimpleNamespace(cache_state="warm")))
        notes = side.prepare(slot, manifest, tmp_path / "tier2")
        manifest.begin_step({"index": index, "fio_profile": "moderate", **notes})
        time.sleep(pause)
        if kill:                                   # what an OOM kill or a crash leaves: no summary at all
            side.fio.proc.kill()
        return manifest.doc["steps"][-1]

    ran = step(0, 1.5)
    died = step(1, 0.5, kill=True)
    side.close(manifest)                          # returns: no job process outlived fio holding its pipe
    assert "fio_error" not in ran and fio_label(ran) == "moderate"
    assert json.loads((tmp_path / "run" / ran["fio_output"]).read_text())["jobs"][0]["read"]["io_bytes"] > 0
    assert died["fio_error"] == "fio left no JSON summary in fio-step1.json", died
    assert fio_label(died) == "moderate (fio failed)"
    assert any(n["text"].startswith("fio job failed: fio left no JSON summary") for n in manifest.doc["notes"])
    assert not list((tmp_path / "tier2" / "fio").iterdir())     # its file is gone either way
