"""Several rigs, one long-term store: a real VictoriaMetrics (Debian's package) receives remote_write from
the rig's real Prometheus during Locust runs against the simulators. The store is stopped in the middle of
a run and every sample still arrives (Prometheus' WAL replays); the report from the store equals the one
from the rig's Prometheus; two rigs' runs are reported side by side."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from configs import load
from conftest import ROOT, Sim, free_port, run_module, sims_overlay

pytestmark = pytest.mark.skipif(not (shutil.which("victoria-metrics") and shutil.which("prometheus")),
                                reason="victoria-metrics and prometheus come with `make tools-test`")
OUTAGE_S = 15


class Store:
    """victoria-metrics on loopback; stop() and start() again keep its data directory."""

    def __init__(self, data: Path) -> None:
        self.data, self.port, self.proc = data, free_port(), None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        # latencyOffset 0: a query sees samples as soon as they are stored (VictoriaMetrics hides the last
        # 30 s by default, for stores fed by many slow clients)
        self.proc = subprocess.Popen(["victoria-metrics", f"-storageDataPath={self.data}", "-loggerLevel=ERROR",
                                      f"-httpListenAddr=127.0.0.1:{self.port}", "-search.latencyOffset=0s",
                                      "-search.disableCache"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/health", timeout=1).text.strip() == "OK":
                    return
            except requests.RequestException:
                time.sleep(0.2)
        raise AssertionError("victoria-metrics did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)


def instant(url: str, query: str, at: float) -> dict[str, float]:
    r = requests.get(f"{url}/api/v1/query", params={"query": query, "time": f"{at:.3f}"}, timeout=30)
    r.raise_for_status()
    return {json.dumps(x["metric"], sort_keys=True): float(x["value"][1]) for x in r.json()["data"]["result"]}


def locust(overlay: Path, cwd: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "h2b.py"), "--headless",
                           "--only-summary"], cwd=cwd, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "HARNESS_CONFIG": str(overlay), "MODEL": "l70b", **env})


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("store")
    store = Store(tmp / "vm")
    store.start()
    with Sim(tmp, "A", time_scale=0.25) as a, Sim(tmp, "B", time_scale=0.25) as b:
        rest = f"""profiles:
  spill: {{tier2_path: {tmp / 't2'}}}
exporters: {{ports: {{nvme: {free_port()}, uma: {free_port()}, gpu: {free_port()}, kvbm: {free_port()}}}}}
prometheus:
  port: {free_port()}
  remote_write: [{{url: '{store.url}/api/v1/write', batch_send_deadline_ms: 500, max_backoff_ms: 1000}}]
loadgen: {{metrics_port: {free_port()}, ready_timeout_s: 10}}
hypotheses: {{H2B: {{repetitions: 1}}}}
"""
        overlay_a = sims_overlay(tmp, a, b, "rig: rig-a\n" + rest)
        overlay_b = tmp / "overlay-b.yaml"
        overlay_b.write_text(overlay_a.read_text().replace("rig: rig-a", "rig: rig-b"))
        cfg = load(overlay_a)
        local = f"http://127.0.0.1:{cfg.prometheus.port}"
        up = run_module("rig", "--config", str(overlay_a), "up", timeout=120)
        assert up.returncode == 0, up.stderr
        try:
            # rig-a's run, with the store down for OUTAGE_S in its middle
            run_a = subprocess.Popen([sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "h2b.py"),
                                      "--headless", "--only-summary"], cwd=tmp, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL,
                                     env={**os.environ, "HARNESS_CONFIG": str(overlay_a), "MODEL": "l70b",
                                          "DURATION_S": "12", "CONTEXT_TOKENS": "256,512"})
            time.sleep(4)
            store.stop()
            down_at = time.time()
            time.sleep(OUTAGE_S)
            store.start()
            assert run_a.wait(timeout=240) == 0
            outage = (down_at, down_at + OUTAGE_S)
            caught_up = replayed(local, store.url, run_of_dir(tmp / "results", "rig-a"))
            # the same rig renamed rig-b (its Prometheus reloads the new external_labels), a second run
            assert run_module("rig", "--config", str(overlay_b), "render").returncode == 0
            pid = int((tmp / "run" / "pids" / "prometheus.pid").read_text().split()[0])
            os.kill(pid, signal.SIGHUP)
            time.sleep(2)
            proc = locust(overlay_b, tmp, DURATION_S="4", CONTEXT_TOKENS="256,512")
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
            time.sleep(3)                         # the last samples leave within batch_send_deadline
            yield {"tmp": tmp, "store": store, "local": local, "overlay": overlay_a, "outage": outage,
                   "results": tmp / "results", "caught_up": caught_up}
        finally:
            run_module("rig", "--config", str(overlay_a), "down")
            store.stop()


def run_of_dir(results: Path, rig: str) -> dict:
    for m in (json.loads(p.read_text()) for p in results.glob("*/manifest.json")):
        if m["rig"] == rig:
            return m
    raise AssertionError(f"no run of {rig}")


def run_of(fleet, rig: str) -> dict:
    return run_of_dir(fleet["results"], rig)


def replayed(local: str, store: str, m: dict, timeout_s: float = 90) -> tuple[dict, dict]:
    """Wait (bounded) until the store holds what the rig's Prometheus holds for the run's window, before the
    rig is renamed: a reload with new external_labels restarts the remote-write queue, and samples still
    queued then are not sent (a rig renames itself between runs, never during one)."""
    start, end = m["start"] - 2, m["end"] + 1
    deadline = time.monotonic() + timeout_s
    while True:                       # the WAL replays at the queue's pace
        want = raw_samples(local, "up", start, end)
        got = raw_samples(store, 'up{rig="rig-a"}', start, end)
        if got == want or time.monotonic() > deadline:
            return want, got
        time.sleep(1)


def test_every_sample_reaches_the_store_through_an_outage(fleet):
    """The store was down for OUTAGE_S during rig-a's run: afterwards it holds every sample the rig's own
    Prometheus scraped during the run, for every job, the outage included (raw samples compared; the two
    engines disagree on a range's edges, so the run's window is cut out of a wider range)."""
    m = run_of(fleet, "rig-a")
    assert m["site"] is None and m["schema_version"] >= 5
    assert m["start"] < fleet["outage"][0] and fleet["outage"][1] < m["end"]
    local, stored = fleet["caught_up"]
    assert local == raw_samples(fleet["local"], "up", m["start"] - 2, m["end"] + 1)
    assert len(local) >= 6 and sum(len(v) for v in local.values()) > 300
    a, b = fleet["outage"]
    assert stored == local, {job: sorted(round(t - a, 3) for t in set(local[job]) ^ set(stored.get(job, ())))
                             for job in local}
    during = [t for times in stored.values() for t in times if a + 1 < t < b - 1]
    assert len(during) >= len(local) * (OUTAGE_S - 2)        # every job, every second of the outage


def raw_samples(url: str, selector: str, start: float, end: float) -> dict[str, list[float]]:
    """Sample timestamps per job strictly inside (start, end), read as a raw range vector."""
    window = f"{round((end - start + 10) * 1000)}ms"         # Prometheus 2 takes no fractional durations
    r = requests.get(f"{url}/api/v1/query", params={"query": f"{selector}[{window}]", "time": f"{end + 5:.3f}"},
                     timeout=30)
    r.raise_for_status()
    out: dict[str, list[float]] = {}
    for series in r.json()["data"]["result"]:
        out.setdefault(series["metric"]["job"], []).extend(
            round(float(t), 3) for t, _v in series["values"] if start < float(t) < end)
    return {job: sorted(times) for job, times in out.items()}


def report(fleet, out: Path, *args) -> dict:
    proc = run_module("analysis", "--config", str(fleet["overlay"]), *args, "--out", str(out), timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads((out / "verdict.json").read_text())


def test_the_report_from_the_store_equals_the_rigs_own(fleet, tmp_path):
    run_id = run_of(fleet, "rig-a")["run_id"]
    local = report(fleet, tmp_path / "local", "report", "--run", run_id)
    stored = report(fleet, tmp_path / "store", "--prometheus-url", fleet["store"].url, "report", "--run", run_id)
    assert local[run_id]["verdict"] == stored[run_id]["verdict"]
    gates = lambda doc: [(g["name"], g["status"], g["reason"]) for g in doc[run_id]["gates"]]   # noqa: E731
    assert gates(local) == gates(stored)
    assert local[run_id]["telemetry_missing"] == stored[run_id]["telemetry_missing"]
    import pandas as pd
    a = pd.read_csv(tmp_path / "local" / "summary_v3.csv")
    b = pd.read_csv(tmp_path / "store" / "summary_v3.csv")
    assert list(a["label"]) == list(b["label"]) and list(a["requests"]) == list(b["requests"])
    for col in ("nvme_reads", "kv_onboard_disk_bytes", "kv_hit_disk", "ttft_p99_hist_s"):
        same = (a[col] - b[col]).abs() <= 0.02 * a[col].abs().clip(lower=1e-9)
        assert (same | (a[col].isna() & b[col].isna())).all(), (col, a[col], b[col])


def test_two_rigs_side_by_side_from_the_store(fleet, tmp_path):
    """rig-b's run (the same rig renamed) and rig-a's, from the store: each run's telemetry is scoped to its
    own rig, and the report puts H2B's steps side by side."""
    out = tmp_path / "rigs"
    verdicts = report(fleet, out, "--prometheus-url", fleet["store"].url, "report", "--rig", "rig-a",
                      "--rig", "rig-b")
    assert {v["rig"] for v in verdicts.values()} == {"rig-a", "rig-b"}
    import pandas as pd
    table = pd.read_csv(out / "rigs.csv")
    assert {"ttft_p99_s[rig-a]", "ttft_p99_s[rig-b]", "requests[rig-a]", "requests[rig-b]"} <= set(table.columns)
    assert len(table) == 2 and (table["requests[rig-a]"] > 0).all() and (table["requests[rig-b]"] > 0).all()
    assert "Across rigs — rig-a, rig-b" in (out / "report.md").read_text()
    assert list((out / "figures").glob("rigs_H2B_*.png"))
    # the store tells the rigs apart: rig-b's exporters were not scraped during rig-a's run, and vice versa
    m = run_of(fleet, "rig-a")
    assert instant(fleet["store"].url, 'count(up{rig="rig-b"})', m["end"] - 1) == {}
    only_a = report(fleet, tmp_path / "a", "--prometheus-url", fleet["store"].url, "report", "--rig", "rig-a")
    assert {v["rig"] for v in only_a.values()} == {"rig-a"}


def test_chunked_range_queries_read_the_same_from_the_store(fleet):
    """The analysis' range queries cut into chunks (as a 3-hour run needs) return what one query returns,
    from the store and from the rig's Prometheus: chunks meet on the step grid without gaps or duplicates
    (a client that rounded each chunk's start and end to whole seconds lost points at every boundary)."""
    from analysis.promdata import PrometheusSource
    from analysis.telemetry import QUERIES, scope
    m = run_of(fleet, "rig-a")
    for url in (fleet["store"].url, fleet["local"]):
        whole, chunked = PrometheusSource(url), PrometheusSource(url)
        chunked.max_points = 7             # 1.5 s a chunk at 250 ms: a dozen boundaries in the run
        for name in ("loadgen_step", "nvme_reads", "kv_onboard_disk_bytes"):
            query = QUERIES[name][0].format(run_id=m["run_id"], scope=scope(m))
            a = whole.range(name, query, m["start"], m["end"], 0.25)
            b = chunked.range(name, query, m["start"], m["end"], 0.25)
            assert len(a) > 7 * 8 and a.equals(b), (url, name)
