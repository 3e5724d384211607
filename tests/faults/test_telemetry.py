"""Faults in the telemetry a gate stands on: a real Prometheus killed and restarted mid-run, a KVBM target
that stops answering, a KVBM that claims disk onboards nobody served while another reader moves the same
disk. One simulated Stack B and one `rig up` (exporters + real Prometheus) serve every case; the KVBM
target the exporters scrape is a small proxy in this process, which passes the simulator's exposition
through, answers 503, or inflates its disk-onboard counter."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from conftest import ROOT, Sim, free_port, run_module, sims_overlay
from configs import load
from faultcase import fault

pytestmark = pytest.mark.skipif(not shutil.which("prometheus"), reason="prometheus comes with `make tools`")


class FakeKvbm:
    """KVBM's /metrics as the exporters see it: ``mode`` "pass" (the simulator's own), "down" (503) or
    "claim" (kvbm_onboard_blocks_d2d grows by ``claim_blocks`` a second on top of the real count: a KVBM
    that counts disk hits whose transfer never happened, Dynamo #15079)."""

    def __init__(self, upstream: str, claim_blocks: int = 400):
        self.upstream, self.mode, self.claim_blocks, self.t0 = upstream, "pass", claim_blocks, time.time()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if fake.mode == "down":
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = requests.get(fake.upstream, timeout=2).text
                if fake.mode == "claim":
                    extra = int((time.time() - fake.t0) * fake.claim_blocks)
                    body = re.sub(r"^(kvbm_onboard_blocks_d2d(?:_total)?(?:\{[^}]*\})?) (\S+)$",
                                  lambda m: f"{m.group(1)} {float(m.group(2)) + extra}", body, flags=re.M)
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults-telemetry")
    with Sim(tmp, "A", time_scale=0.25) as a, Sim(tmp, "B", time_scale=0.25) as b:
        kvbm = FakeKvbm(f"http://127.0.0.1:{b.kvbm_port}/metrics")
        overlay = sims_overlay(tmp, a, b, f"""profiles:
  spill: {{tier2_path: {b.tier2}}}
exporters: {{ports: {{nvme: {free_port()}, uma: {free_port()}, gpu: {free_port()}, kvbm: {free_port()}}}}}
prometheus: {{port: {free_port()}}}
loadgen: {{metrics_port: {free_port()}, ready_timeout_s: 10}}
hypotheses: {{H2A: {{repetitions: 1}}, H2B: {{repetitions: 1}}}}
""")
        overlay.write_text(overlay.read_text().replace(f"http://127.0.0.1:{b.kvbm_port}/metrics", kvbm.url))
        up = run_module("rig", "--config", str(overlay), "up", timeout=120)
        assert up.returncode == 0, up.stderr
        try:
            yield {"tmp": tmp, "overlay": overlay, "cfg": load(overlay), "kvbm": kvbm, "sim": b}
        finally:
            kvbm.mode = "pass"
            run_module("rig", "--config", str(overlay), "down")
            kvbm.close()


def h2b_run(rig, run_id: str, during=None, contexts="256,512,1024", duration_s=6,
            hypothesis="h2b") -> tuple[dict, dict, str]:
    """One short H2B (or H2A, on Stack A) run on the simulator (``during(proc)`` runs beside it), then its
    report's verdict, its manifest and what Locust printed."""
    env = {**os.environ, "HARNESS_CONFIG": str(rig["overlay"]), "MODEL": "l70b", "DURATION_S": str(duration_s),
           "CONTEXT_TOKENS": contexts, "RUN_ID": run_id}
    proc = subprocess.Popen([sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / f"{hypothesis}.py"),
                             "--headless",
                             "--only-summary"], cwd=rig["tmp"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        if during:
            during(proc)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (rig["tmp"] / "results" / run_id / "manifest.json").exists(), err[-2000:]
    out = rig["tmp"] / f"report-{run_id}"
    rep = run_module("analysis", "--config", str(rig["overlay"]), "report", "--run", run_id, "--out", str(out),
                     timeout=300)
    assert rep.returncode == 0, rep.stderr[-3000:]
    manifest = json.loads((rig["tmp"] / "results" / run_id / "manifest.json").read_text())
    return json.loads((out / "verdict.json").read_text())[run_id], manifest, err


def gate(verdict: dict, name: str) -> dict:
    return next(g for g in verdict["gates"] if g["name"] == name)


@fault("23.B1", "Prometheus is killed 6 s into an 18 s run and restarted 7 s later (raw samples have a hole; a "
       "range query fills it from 5 minutes of lookback)",
       "aligned_samples fails GATE_ALIGNMENT_LOW: only samples really scraped count",
       ("gate:aligned_samples=GATE_ALIGNMENT_LOW",))
def test_prometheus_outage_fails_alignment(rig):
    from rig.local import run_dir, start_prometheus
    from rig.procs import Supervisor

    def outage(_proc):
        sup = Supervisor(run_dir(rig["cfg"]))
        time.sleep(9)                      # readiness wait + 6 s of load
        os.killpg(sup.pid_of("prometheus"), signal.SIGKILL)
        time.sleep(7)
        start_prometheus(rig["cfg"], sup)
    v, manifest, err = h2b_run(rig, "outage1", during=outage)
    aligned = gate(v, "aligned_samples")
    assert (aligned["status"], aligned["reason"]) == ("fail", "GATE_ALIGNMENT_LOW"), aligned
    assert v["verdict"] == "fail"
    # the load generator saw it as it happened (23.B7): an outage of the telemetry, in the manifest
    lost = [o for o in manifest["telemetry_outages"] if o["target"] == "prometheus"]
    assert lost and lost[0]["end"] is not None and "telemetry lost: prometheus" in err


@fault("23.B7", "Prometheus is not running when a run starts",
       "one warning line per missing target before step 1, recorded in the manifest (telemetry.missing); "
       "the gates then say TELEMETRY_MISSING", ("loadgen:telemetry preflight", "gate:aligned_samples=TELEMETRY_MISSING"))
def test_telemetry_checked_before_the_first_step(rig):
    from rig.local import run_dir, start_prometheus
    from rig.procs import Supervisor
    sup = Supervisor(run_dir(rig["cfg"]))
    sup.stop("prometheus")
    env = {**os.environ, "HARNESS_CONFIG": str(rig["overlay"]), "MODEL": "l70b", "DURATION_S": "2",
           "CONTEXT_TOKENS": "256", "RUN_ID": "noprom1"}
    try:
        proc = subprocess.run([sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "h2b.py"),
                               "--headless", "--only-summary"], cwd=rig["tmp"], env=env, capture_output=True,
                              text=True, timeout=120)
    finally:
        start_prometheus(rig["cfg"], sup)
    lines = proc.stderr.splitlines()
    step1 = next(i for i, line in enumerate(lines) if "step 1/" in line)
    assert any("warning: telemetry: prometheus" in line for line in lines[:step1]), proc.stderr[-2000:]
    manifest = json.loads((rig["tmp"] / "results" / "noprom1" / "manifest.json").read_text())
    assert "prometheus" in manifest["telemetry"]["missing"]


@fault("23.B6", "Stack B's KVBM endpoint stops answering for the whole run (sparkrig_kvbm_up 0; the exporter's "
       "counters hold still)",
       "aligned_samples and ssd_mechanism say TELEMETRY_MISSING, naming KVBM and DYN_KVBM_METRICS; never a "
       "measured zero", ("gate:aligned_samples=TELEMETRY_MISSING", "gate:ssd_mechanism=TELEMETRY_MISSING",
                         "gate:h2b_tier2_hits=TELEMETRY_MISSING"))
def test_kvbm_down_is_missing_not_zero(rig):
    rig["kvbm"].mode = "down"
    try:
        v, manifest, err = h2b_run(rig, "kvbmdown1", contexts="256,512", duration_s=5)
    finally:
        rig["kvbm"].mode = "pass"
    aligned, mech = gate(v, "aligned_samples"), gate(v, "ssd_mechanism")
    assert (aligned["status"], aligned["reason"]) == ("missing", "TELEMETRY_MISSING"), aligned
    assert "KVBM" in aligned["detail"] and "DYN_KVBM_METRICS=true" in aligned["detail"]
    assert (mech["status"], mech["reason"]) == ("missing", "TELEMETRY_MISSING"), mech
    assert "DYN_KVBM_METRICS=true" in mech["detail"]
    hits = gate(v, "h2b_tier2_hits")
    assert hits["status"] == "missing", hits
    assert "kvbm-stackB" in manifest["telemetry"]["missing"] and "warning: telemetry: kvbm-stackB down" in err


def other_reader(rig):
    """``during`` for h2b_run: dd reads the tier2 disk (O_DIRECT, past the page cache) for as long as the
    run lasts, as fio or any process beside the stack would; its exit codes collect in the list returned."""
    source = rig["tmp"] / "dd-source"
    if not source.exists():
        subprocess.run(["dd", "if=/dev/urandom", f"of={source}", "bs=1M", "count=64", "status=none"], check=True)
    readers = []

    def read_disk(proc):
        while proc.poll() is None:
            readers.append(subprocess.run(["dd", f"if={source}", "of=/dev/null", "bs=1M", "iflag=direct",
                                           "status=none"]).returncode)
    return read_disk, readers


@fault("23.B2", "a KVBM claims disk onboards its worker never read while `dd iflag=direct` reads the same disk",
       "ssd_mechanism fails DISK_READS_NOT_BACKED: only the serving process's own reads (/proc/<pid>/io) back "
       "the claim", ("gate:ssd_mechanism=DISK_READS_NOT_BACKED",))
def test_someone_elses_reads_do_not_back_kvbm(rig):
    read_disk, readers = other_reader(rig)
    rig["kvbm"].mode, rig["kvbm"].t0 = "claim", time.time()
    try:
        v, _, _ = h2b_run(rig, "claim1", during=read_disk, contexts="256,512", duration_s=5)
    finally:
        rig["kvbm"].mode = "pass"
    assert readers and readers[0] == 0            # the other reader really read the disk
    mech = gate(v, "ssd_mechanism")
    assert (mech["status"], mech["reason"]) == ("fail", "DISK_READS_NOT_BACKED"), mech
    assert "serving process" in mech["detail"]


@fault("29.G1", "`dd iflag=direct` reads the kv_tier2 disk through an H2A run on Stack A (on the development VM "
       "Prometheus, Stack B and the OS did the same: the old gate failed H2A on the device's r/s)",
       "h2a_nvme_flat passes on Stack A's own reads (its /proc/<pid>/io, 0 MiB/s), the disk's r/s only in its detail",
       ("gate:h2a_nvme_flat=OK",))
def test_someone_elses_reads_do_not_refute_h2a(rig):
    read_disk, readers = other_reader(rig)
    v, _, _ = h2b_run(rig, "flat1", during=read_disk, contexts="256,512", duration_s=5, hypothesis="h2a")
    assert readers and readers[0] == 0            # the other reader really read the disk
    flat = gate(v, "h2a_nvme_flat")
    assert (flat["status"], flat["reason"]) == ("pass", "OK"), flat
    assert re.search(r"the serving process read 0\.0\d MiB/s", flat["detail"]), flat
