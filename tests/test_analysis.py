"""Analysis: the knee rule, lag recovery, chunked range queries against a real Prometheus holding a
backfilled 3-hour series, missing telemetry as gate reasons, and reports from real runs."""
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from analysis import gates as G
from analysis.correlate import best_lag, linear_fit, on_grid
from analysis.knee import find_knee, saturation
from analysis.promdata import MAX_POINTS, FileSource, PrometheusSource, TelemetryError, chunks, export
from analysis.jsonout import dumps
from analysis.run import analyse, verdict_doc
from faultcase import fault
from conftest import free_port, run_module

LEVELS = [1, 2, 4, 8, 16, 32]


def test_knee_at_two_consecutive_steps():
    k = find_knee(LEVELS, [1, 1, 1, 1.2, 2, 3], [1.5, 1.6, 1.9, 2.6, 5, 9])
    assert (k.knee_index, k.u_work, k.reason) == (3, 4, "knee")


def test_single_noisy_spike_is_not_a_knee():
    k = find_knee(LEVELS, [1] * 6, [1.5, 3.0, 1.5, 1.6, 1.7, 1.8])
    assert k.reason == "no_knee" and k.u_work is None and "no knee in the tested range" in k.said


def test_knee_at_the_first_step_has_no_u_work():
    k = find_knee(LEVELS, [1] * 6, [3] * 6)
    assert (k.knee_index, k.u_work, k.reason) == (0, None, "knee_at_first_step")


def test_saturation_where_throughput_stops_growing():
    assert saturation(LEVELS, [10, 20, 39, 70, 75, 76]) == 8
    assert saturation(LEVELS, [10, 20, 40, 80, 160, 320]) is None


def test_correlation_recovers_a_known_lag():
    rng = np.random.default_rng(1)
    t = np.arange(0, 120, 0.2)
    driver = pd.Series(np.convolve(rng.normal(size=len(t)), np.ones(10) / 10, "same"), index=t)
    latency = driver.shift(3) * 2 + rng.normal(scale=0.01, size=len(t))     # latency follows 0.6 s later
    c = best_lag(latency, driver, max_lag=6, step_s=0.2)
    assert c.lag_s == pytest.approx(0.6) and c.pearson > 0.95 and c.spearman > 0.9
    assert c.ci[0] <= c.pearson <= c.ci[1] and c.ci[0] > 0.9 and not c.at_edge
    noise = pd.Series(rng.normal(size=len(t)), index=t)
    unrelated = best_lag(latency, noise, max_lag=0)
    assert abs(unrelated.pearson) < 0.2 and unrelated.ci[0] < 0 < unrelated.ci[1]     # an interval around zero
    assert best_lag(latency, driver, max_lag=2, step_s=0.2).at_edge          # the true lag (3) is beyond: said
    few = best_lag(latency.iloc[:15], driver.iloc[:15], max_lag=0)
    assert few.samples < 20 and np.isnan(few.ci[0])                          # too few windows for an interval
    slope, intercept, r2 = linear_fit([1, 2, 3, 4, 5], [3, 5, 7, 9, 11])
    assert (slope, intercept, r2) == pytest.approx((2, 1, 1))
    assert np.isnan(linear_fit([1, 2, 3], [3, 5, 7])[2])           # no R² = 1.00 through three points (#26.2)


def test_grid_carries_values_at_most_a_second():
    s = pd.Series([1.0, 2.0], index=[0.0, 0.5])
    g = on_grid(s, 0, 3)
    assert g.iloc[2] == 1.0 and g.iloc[7] == 2.0 and np.isnan(g.iloc[14])          # 0.4 s, 1.4 s, 2.8 s


def test_chunks_never_exceed_the_point_limit():
    parts = chunks(0, 3 * 3600, 0.2)
    assert all(round((b - a) / 0.2) + 1 <= MAX_POINTS for a, b in parts)
    assert parts[0][0] == 0 and parts[-1][1] == 3 * 3600 and len(parts) == 5
    assert all(b == a for (_, b), (a, _) in zip(parts, parts[1:]))     # no gap: each edge asked twice, kept once
    # edges on whole seconds on the step grid, whatever the window: prometheus-api-client rounds them (#25.7)
    odd = chunks(100.35, 7300.1, 0.3, 1000)
    assert odd[0][0] == 100 and odd[-1][1] >= 7300.1 and all(isinstance(t, int) for c in odd for t in c)
    assert all((t - 100) % 3 == 0 for c in odd for t in c) and all(round((b - a) / 0.3) + 1 <= 1000 for a, b in odd)


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory):
    """A real Prometheus holding a 3-hour series at 1 s, backfilled with promtool from OpenMetrics."""
    if not shutil.which("promtool"):
        pytest.skip("promtool comes with `make tools`")
    tmp = tmp_path_factory.mktemp("backfill")
    end = int(time.time()) - 3600
    start = end - 3 * 3600
    with open(tmp / "data.om", "w") as f:
        f.write("# TYPE sparkrig_test_ramp gauge\n")
        for t in range(start, end + 1):
            f.write(f"sparkrig_test_ramp{{device=\"nvme0n1\"}} {t - start} {t}\n")
        f.write("# EOF\n")
    data = tmp / "data"
    proc = subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(tmp / "data.om"), str(data)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    port = free_port()
    (tmp / "prometheus.yml").write_text("global: {scrape_interval: 15s}\n")
    prom = subprocess.Popen(["prometheus", f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={data}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if requests.get(f"{base}/-/ready", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        yield base, start, end
    finally:
        prom.terminate()
        prom.wait()


def test_chunked_range_query_over_three_hours_at_200ms(backfilled):
    base, start, end = backfilled
    source = PrometheusSource(base)
    source.check()
    frame = source.range("ramp", "sparkrig_test_ramp", start, end, 0.2)
    assert len(frame) == round((end - start) / 0.2) + 1 > MAX_POINTS * 4
    assert frame["time"].is_monotonic_increasing and not frame["time"].duplicated().any()
    # between the 1 s samples, Prometheus returns the latest one: value == whole seconds since start
    assert (frame["value"] == np.floor(frame["time"] - start + 1e-6)).all()
    direct = requests.get(f"{base}/api/v1/query_range", timeout=10, params={
        "query": "sparkrig_test_ramp", "start": start, "end": end, "step": 0.2}).json()
    assert direct["status"] == "error" and "11,000 points" in direct["error"]      # what chunking avoids


def test_unreachable_prometheus_is_one_line():
    with pytest.raises(TelemetryError, match="not reachable"):
        PrometheusSource(f"http://127.0.0.1:{free_port()}", retries=0).check()


def test_missing_telemetry_becomes_gate_reasons(observed, tmp_path):
    run = observed["results"] / next(r for r in observed["run_ids"] if r.startswith("h2b"))
    export({}, tmp_path / "empty", {"run_id": run.name})              # an export that holds nothing
    a = analyse(run, FileSource(tmp_path / "empty"), 0.25, tiered=True)
    reasons = {g.name: g.reason for g in a.gates}
    assert reasons["aligned_samples"] == "TELEMETRY_MISSING"
    assert reasons["ssd_mechanism"] == "TELEMETRY_MISSING"
    assert a.verdict == "fail" and len(a.pooled) == 2                 # latency from records still there
    doc = json.loads(dumps(verdict_doc(a)))                           # strict JSON: no bare NaN
    missing = set(doc["telemetry_missing"])
    for g in doc["gates"]:
        if g["reason"] == "TELEMETRY_MISSING":                        # every series a gate lacked is listed
            assert g["missing"] and set(g["missing"]) <= missing, g
    assert {"kv_offload_disk_bytes", "kv_onboard_disk_bytes", "nvme_reads"} <= missing


def test_verdict_json_has_no_nan():
    doc = {"a": float("nan"), "b": [1.0, float("inf")], "c": np.float64("nan"), "d": {"e": 2.5}}
    assert json.loads(dumps(doc)) == {"a": None, "b": [1.0, None], "c": None, "d": {"e": 2.5}}


@fault("run.blocked", "a blocked run (the frontend rejects session_id) whose requests also failed", "blocked says BLOCKED; errors still fails RUN_ERRORS_PRESENT and the verdict is fail", ("gate:blocked=BLOCKED", "gate:errors=RUN_ERRORS_PRESENT"))
def test_blocked_never_hides_an_error_rate():
    blocked = G.Gate("blocked", "blocked", "BLOCKED", "the frontend rejects session_id")
    failing = G.run_state({"status": "complete", "blocked": {"reason": "x"}}, error_rate=1.0)
    assert [g.reason for g in failing if g.name == "errors"] == ["RUN_ERRORS_PRESENT"]
    assert G.verdict(failing) == "fail"
    assert G.verdict(G.run_state({"status": "complete"}, 0.0) + [blocked]) == "blocked"


def test_no_onboarding_is_no_signal_not_a_low_share():
    nothing = G.tier2_hits_at_knee(0.0, "context_tokens=4096", onboarded=0.0)
    assert (nothing.status, nothing.reason) == ("fail", "H2B_NO_ONBOARD_SIGNAL")
    low = G.tier2_hits_at_knee(0.05, "context_tokens=4096", onboarded=120.0)
    assert low.reason == "H2B_TIER2_HITS_LOW"
    absent = G.tier2_hits_at_knee(float("nan"), "context_tokens=4096", onboarded=float("nan"))
    assert absent.reason == "TELEMETRY_MISSING" and absent.missing == ("kv_onboard_blocks",)


def test_ssd_mechanism_passes_only_on_bytes_really_read():
    mib, R = 2**20, G.DiskReads
    # KVBM claims 40 MiB onboarded from disk; the tier2 file gave 0 bytes (a full filesystem's failed reads)
    unbacked = G.mechanism(100 * mib, 40 * mib, R(file=0.0))
    assert (unbacked.status, unbacked.reason) == ("fail", "DISK_READS_NOT_BACKED")
    assert "only 0.0 MiB were read by the tier2 file" in unbacked.detail
    assert G.mechanism(100 * mib, 40 * mib, R(file=40 * mib)).status == "pass"
    # the serving process's own reads come first: the disk's may be anyone's
    assert G.mechanism(100 * mib, 40 * mib, R(process=0.0, device=400 * mib)).reason == "DISK_READS_NOT_BACKED"
    assert G.mechanism(100 * mib, 40 * mib, R(process=39 * mib)).status == "pass"
    # a real rig without process reads: the kv_tier2 disk's reads back the claim, said to be unattributed,
    # and only where nothing else is known to read that disk
    disk = G.mechanism(100 * mib, 40 * mib, R(device=38 * mib))
    assert disk.status == "pass" and "unattributed" in disk.detail
    assert G.mechanism(100 * mib, 40 * mib, R(device=1 * mib)).reason == "DISK_READS_NOT_BACKED"
    fio = G.mechanism(100 * mib, 40 * mib, R(device=400 * mib, other_readers="fio (heavy) read the same disk"))
    assert (fio.status, fio.reason) == ("missing", "TELEMETRY_MISSING") and "fio" in fio.detail
    unseen = G.mechanism(100 * mib, 40 * mib, R())
    assert (unseen.status, unseen.reason) == ("missing", "TELEMETRY_MISSING")      # never a pass on a claim alone
    assert G.mechanism(100 * mib, 0.0, R()).reason == "REHYDRATE_SIGNAL_ABSENT_WRITE_ONLY"
    # read back from a tier written before this run (H4B after H2B): the mechanism, when backed
    assert G.mechanism(0.0, 40 * mib, R(process=40 * mib)).status == "pass"
    assert G.mechanism(0.0, 0.0, R()).reason == "GATE_NO_SSD_MECHANISM_SIGNAL"
    # counters of a KVBM that was down most of the run are no measurement
    down = G.mechanism(0.0, 0.0, R(), kv_up_share=0.1)
    assert (down.status, down.reason) == ("missing", "TELEMETRY_MISSING") and "DYN_KVBM_METRICS" in down.detail
    # and nothing onboarded while KVBM was down is no H2B_NO_ONBOARD_SIGNAL either: its counters held still
    held = G.tier2_hits_at_knee(0.0, "context_tokens=512", 0.0, kv_up_share=0.1)
    assert (held.status, held.reason) == ("missing", "TELEMETRY_MISSING") and "DYN_KVBM_METRICS" in held.detail
    assert G.tier2_hits_at_knee(0.0, "context_tokens=512", 0.0, kv_up_share=1.0).reason == "H2B_NO_ONBOARD_SIGNAL"


def _pairs_experiment(results: Path) -> Path:
    """A `rig pairs` experiment's files as rig.pairs writes them: six pairs, B2 20 ms slower."""
    from analysis import paired as P
    from rig.pairs import _write
    legs = [P.Leg(pair, order, mode, {"ttfc_p50_ms": 100 + pair + (20 if mode == "B2" else 0)})
            for pair in range(6) for order in (("B1_B2", "B2_B1")[pair % 2],) for mode in order.split("_")]
    out = results / "pairs-20261202T000000Z"
    out.mkdir(exist_ok=True)
    _write(out, [], legs, [P.compare(legs, "ttfc_p50_ms")], [], ("B1", "B2"))
    return out


def _capacity_search(results: Path) -> dict:
    """A `rig capacity` search's capacity.json as rig.capacity writes it: H2B on Stack B in B2, 6 users."""
    from rig.capacity import Probe, search, sentence
    slo = {"ttft_s": 0.5, "tpot_s": None, "e2e_s": None, "percentile": 99.0}
    result = search(lambda load: Probe(load, f"run-{load:g}", load <= 6, ""), 1, 64, integer=True)
    result.update(hypothesis="H2B", stack="stackB", tier_mode="B2", unit="users", slo=slo, context_tokens=4096,
                  duration_s=30, said=sentence(result, "stackB (B2)", "users", slo, 4096))
    out = results / "capacity-20261202T000000Z-B2"
    out.mkdir(exist_ok=True)
    (out / "capacity.json").write_text(json.dumps(result))
    return result


def test_report_from_real_runs_and_offline_export(observed, tmp_path):
    overlay, results = str(observed["overlay"]), observed["results"]
    pairs = _pairs_experiment(results)
    searched = _capacity_search(results)
    out = tmp_path / "report"
    proc = run_module("analysis", "--config", overlay, "report", "--all", "--out", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "report: " in proc.stdout
    verdicts = json.loads((out / "verdict.json").read_text())
    assert set(verdicts) == set(observed["run_ids"])
    h2a = next(v for v in verdicts.values() if v["hypothesis"] == "H2A")
    h2b = next(v for v in verdicts.values() if v["hypothesis"] == "H2B")
    assert {g["name"] for g in h2a["gates"]} >= {"run_complete", "aligned_samples", "cov_p99", "h2a_nvme_flat"}
    assert {g["name"] for g in h2b["gates"]} >= {"h2b_tier2_hits", "ssd_mechanism"}
    assert all(g["reason"] for v in verdicts.values() for g in v["gates"])
    summary = pd.read_csv(out / "summary_v3.csv")
    assert set(summary["hypothesis"]) == {"H2A", "H2B"} and (summary["requests"] > 0).all()
    # 12 s steps sit inside the histogram rule's 30 s window: no number, the reason instead (#24.9)
    assert summary["ttft_p99_hist_s"].isna().all() and summary["ttft_p99_hist_reason"].str.contains("30 s").all()
    context = pd.read_csv(out / "H2_context.csv")
    assert sorted(set(context["context_tokens"])) == [256, 512]
    assert (out / "figures" / "H2_p99_vs_context.png").stat().st_size > 1000
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "H2A / H2B" in html
    # the first screen answers (#26.2): the first section after the title is the hypotheses' answers, a row
    # per hypothesis with its claim, expected outcome, finding and why, and each run's verdict and gates
    first = html.split("<h2>")[1]
    assert first.startswith("Answers</h2><table>")
    for v in verdicts.values():
        assert f"{v['run_id']} ({v['stack']}) {v['verdict']}" in first
    assert "h2b_tier2_hits" in first or all(g["status"] == "pass" for g in h2b["gates"] if g["name"] == "h2b_tier2_hits")
    for hid in ("H2A", "H2B"):
        row = first.split(f"<td>{hid}</td>")[1].split("</tr>")[0]
        assert any(f"<td>{status}</td>" in row for status in ("supported", "not supported", "inconclusive")), row
    # the capacity search of H2B is said in H2B's answer, and only there (#27.3)
    said = "stackB (B2) serves 6 users, below 7 at TTFT &lt;= 500 ms (99th percentile) with 4096-token contexts"
    assert said in first.split("<td>H2B</td>")[1].split("</tr>")[0]
    assert said not in first.split("<td>H2A</td>")[1].split("</tr>")[0] and searched["capacity"] == 6
    # the paired experiment under the results, with its verdict, delta, interval and p-values
    assert "Paired experiments (rig pairs)" in html and pairs.name in html and "Wilcoxon p" in html
    comparison = json.loads((pairs / "comparisons.json").read_text())[0]
    assert f"{comparison['mean']:.3g}" in html and f"[{comparison['ci'][0]:.3g}, {comparison['ci'][1]:.3g}]" in html
    # throughput against per-user speed, and each run's latency distributions (#27.7)
    assert "Output tokens/s per user vs total output tokens/s per step" in html
    assert all(f"{rid}: TTFT and inter-chunk gap CDFs by step" in html for rid in observed["run_ids"])
    # correlations in the appendix, at the end
    assert html.index("Appendix: correlations") > html.index("Caveats")
    # per run, summary.json for scripts: steps, knee, gates, verdict, finding
    for rid in observed["run_ids"]:
        doc = json.loads((results / rid / "analysis" / "summary.json").read_text())
        assert doc["run_id"] == rid and doc["verdict"] == verdicts[rid]["verdict"] and doc["steps"]
        assert {"ttft_p99_s", "itl_p99_s", "output_tokens_per_s"} <= set(doc["steps"][0])
        assert doc["finding"]["status"] in ("supported", "not supported", "inconclusive") and doc["gates"]
    # export, then the same report from files only
    run_ids = [a for r in observed["run_ids"] for a in ("--run", r)]
    assert run_module("analysis", "--config", overlay, "export", *run_ids, timeout=300).returncode == 0
    earlier = set(results.glob("report-*"))
    proc = run_module("analysis", "--config", overlay, "--prometheus", f"http://127.0.0.1:{free_port()}", "report",
                      "--offline", *run_ids, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [offline] = set(results.glob("report-*")) - earlier          # its own directory, named by its time
    assert re.fullmatch(r"report-\d{8}T\d{6}Z", offline.name)
    ordered = lambda f: f.sort_values(["run_id", "label"]).reset_index(drop=True)    # noqa: E731
    pd.testing.assert_frame_equal(ordered(pd.read_csv(offline / "summary_v3.csv")), ordered(summary), check_like=True)
    assert all((results / r / "analysis" / "verdict.json").exists() for r in observed["run_ids"])


def test_report_without_prometheus_is_one_line(observed):
    proc = run_module("analysis", "--config", str(observed["overlay"]), "--prometheus",
                      f"http://127.0.0.1:{free_port()}", "report", "--all")
    assert proc.returncode == 1 and proc.stderr.strip().startswith("error: Prometheus at")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert G.verdict([G.Gate("x", "pass", "OK", "")]) == "pass"


def test_refusals_behind_a_block_are_not_errors_but_other_failures_are():
    from analysis.steps import blocking_refusals
    manifest = {"blocked": {"reason": "the frontend rejects session_id metadata (HTTP 400): HTTP 400 "
                                      "Validation: Unsupported parameter(s): `session_id`"}}
    records = pd.DataFrame({"status": [400, 200, 200, 500],
                            "error": ["Validation: Unsupported parameter(s): `session_id`", None,
                                      "Internal server error", "boom"]})
    assert blocking_refusals(manifest, records).tolist() == [True, False, False, False]
    assert not blocking_refusals({}, records).any()


def test_runs_are_chosen_by_rig_and_site_and_each_query_is_scoped_to_its_rig(tmp_path):
    """--rig / --site keep the runs whose manifests name them (a damaged one is skipped with a line); a
    run's queries match its rig's series or unlabelled ones (the rig's own Prometheus), any rig for a run
    from before rigs were recorded."""
    from analysis.__main__ import of_fleet
    from analysis.telemetry import QUERIES, scope
    from configs import ConfigError
    for name, rig, site in (("a", "spark-01", "lab.a"), ("b", "spark-02", "lab.a"), ("c", "spark-03", None)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(json.dumps({"run_id": name, "start": 1.0, "stack": "stackB",
                                                                    "hypothesis": "H0", "rig": rig, "site": site}))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "manifest.json").write_text("{not json")
    runs = sorted(tmp_path.iterdir())
    assert [d.name for d in of_fleet(runs, ["spark-01", "spark-03"], [])] == ["a", "c"]
    assert [d.name for d in of_fleet(runs, [], ["lab.a"])] == ["a", "b"]
    with pytest.raises(ConfigError, match="no runs of rig spark-03; site lab.a"):
        of_fleet(runs, ["spark-03"], ["lab.a"])
    where = scope({"rig": "spark.01", "site": None})
    assert where == 'rig=~"spark[.]01|",site=~".*"'
    assert scope({}) == 'rig=~".*",site=~".*"'
    query = QUERIES["nvme_reads"][0].format(run_id="r", scope=where)
    assert query.endswith('{role="kv_tier2",rig=~"spark[.]01|",site=~".*"})')


def test_steps_are_measured_from_their_target_load_and_outages_make_no_knee():
    """A step is measured from when its load reached its target (a step down from 32 users used to be
    measured while 31 → 12 of them still ran); requests sent before are counted off target and left out; a
    step that never reached it has no throughput; a step an outage touched is left out of the pooled
    steps, and a level left with no clean repetition makes no knee (#24.1, #24.2)."""
    from analysis.knee import knee_of
    from analysis.steps import by_step, frame, step_table

    def step(i, conc, start, at_target="start"):
        return {"index": i, "step": i, "repetition": 0, "phase": "run", "label": f"concurrency={conc}", "swept": {},
                "target_concurrency": conc, "target_context_tokens": 256, "start": start, "end": start + 40.0,
                "at_target": start if at_target == "start" else at_target}
    manifest = {"run_id": "r", "hypothesis": "H0", "stack": "stackA", "end": 1160.0,
                "steps": [step(0, 4, 1000.0), step(1, 1, 1040.0, at_target=1050.0), step(2, 8, 1080.0, None),
                          step(3, 16, 1120.0)],
                "outages": [{"start": 1130.0, "end": 1135.0, "kind": "http_404", "failures": 40}]}
    rows = []
    for s in manifest["steps"]:
        for k in range(40):                                  # one request a second, each 4 s long: 4 in flight
            for user in range(4):
                rows.append({"step": s["index"], "ok": True, "status": 200, "error_class": None, "error": None,
                             "start_time": s["start"] + k + user * 0.25, "ttft_s": 0.1, "e2e_s": 1.0,
                             "prompt_tokens": 256, "completion_tokens": 8, "cached_tokens": None, "phase": "run",
                             "session_id": None, "schedule_lag_s": None, "users_active": 4})
    table = step_table(manifest, frame(rows))
    first, down, never, hit = (table.iloc[i] for i in range(4))
    assert first["off_target_requests"] == 0 and first["at_target_after_s"] == 0
    assert 3.5 < first["concurrency_observed"] <= 4.0                        # Little's law over the window
    assert down["at_target_after_s"] == 10 and down["off_target_requests"] == 40       # 10 s x 4 requests
    assert down["warmup_s"] == 10 + 5 and down["requests"] == 4 * 25                  # warm-up from the target
    assert never["off_target_requests"] == 160 and never["requests"] == 0 and np.isnan(never["throughput_rps"])
    assert hit["outage_s"] == 5 and first["outage_s"] == 0
    clean = table[table["outage_s"] == 0]
    knee, _ = knee_of(table, by_step(clean), "concurrency")
    assert knee.reason == "outage" and knee.u_work is None and "outage" in knee.said
    knee, _ = knee_of(clean, by_step(clean), "concurrency")
    assert knee.reason != "outage"


def test_the_histogram_p99_is_left_out_of_steps_inside_its_rule_window():
    """On 20 s steps the 30 s rule read 0.74 s against an exact 0.118 s: shorter steps get no number, and
    say why; a step longer than the window gets the mean from 30 s in (#24.9)."""
    from analysis.run import STEP_TELEMETRY, add_step_telemetry
    table = pd.DataFrame([{"slot": 0, "start": 0.0, "end": 20.0, "duration_s": 20.0, "warmup_s": 4.0},
                          {"slot": 1, "start": 20.0, "end": 80.0, "duration_s": 60.0, "warmup_s": 5.0}])
    hist = pd.DataFrame({"time": np.arange(0.0, 80.0, 1.0),
                         "series": ['{"step":"0"}'] * 20 + ['{"step":"1"}'] * 60, "step": ["0"] * 20 + ["1"] * 60,
                         "value": [0.74] * 20 + [9.0] * 30 + [0.12] * 30})     # slot 1's first 30 s: slot 0's tail
    frames = {name: pd.DataFrame(columns=["time", "series", "value"]) for name in STEP_TELEMETRY}
    out = add_step_telemetry(table.assign(ttft_p99_s=0.118), {**frames, "ttft_p99_hist": hist})
    assert np.isnan(out["ttft_p99_hist_s"][0]) and "30 s window" in out["ttft_p99_hist_reason"][0]
    assert out["ttft_p99_hist_s"][1] == pytest.approx(0.12) and out["ttft_p99_hist_reason"][1] == ""


def test_runs_of_different_plans_are_never_pooled_into_one_line():
    """`report --all` drew one H0 line per stack from runs at 256 and 512 tokens and a run 99 % failed, and
    took the stack's U_work from the failed one: runs share a line only when their plans match, each plan
    gets its own line and knee, named by run id, and a failed run gives no U_work (#24.6)."""
    from analysis.knee import Knee
    from analysis.hypotheses.common import failed as _failed, lines as _lines
    from analysis.run import RunAnalysis

    def run(run_id, context, p50, ok=True):
        plan = {"steps": [{"params": {"concurrency": c, "context_tokens": context}, "swept": {"concurrency": c}}
                          for c in (1, 2, 4)]}
        manifest = {"run_id": run_id, "hypothesis": "H0", "stack": "stackA", "model": "m", "profile": "spill",
                    "tier_mode": None, "step_duration_s": 30, "plan": plan, "outages": []}
        pooled = pd.DataFrame([{"hypothesis": "H0", "stack": "stackA", "step": i, "phase": "run",
                                "label": f"concurrency={c}", "concurrency": c, "context_tokens": context,
                                "arrival_rate_rps": 0.0, "fio_profile": "none", "ttft_p50_s": p50 * c,
                                "ttft_p99_s": p50 * c * 1.5, "throughput_rps": 10.0 * c,
                                "ttft_tail_requests": 0} for i, c in enumerate((1, 2, 4))])
        records = pd.DataFrame({"ok": [ok] * 50 + [True] * (0 if ok else 1), "error_class": [None] * (50 if ok else 51),
                                "status": [200] * (50 if ok else 51)})
        return RunAnalysis(Path(run_id), manifest, records, pd.DataFrame(), pooled, Knee(None, None, "no_knee"),
                           "concurrency", None, pd.DataFrame(), [])
    same = [run("a1", 256, 0.1), run("a2", 256, 0.3)]
    lines, knees = _lines(same)
    assert set(lines["series"]) == {"stackA"} and len(lines) == 3                # one line: the median of both
    assert lines.sort_values("concurrency")["ttft_p50_s"].tolist() == pytest.approx([0.2, 0.4, 0.8])
    mixed = same + [run("b1", 512, 0.5)]
    lines, knees = _lines(mixed)
    assert set(lines["series"]) == {"stackA a1 (+1 runs)", "stackA b1"} and set(knees) == set(lines["series"])
    assert _failed(run("f1", 256, 0.1, ok=False)).startswith("98%") and _failed(same[0]) == ""


def test_a_runs_routing_is_read_from_its_recorded_stack():
    """H5's reuse is read per routing: the router mode and the workers as the run's manifest recorded the
    stack (#24.8), and never a guess where the configuration did not say."""
    from analysis.run import RunAnalysis

    def routing(stack):
        manifest = {"run_id": "r", "stack": "stackB", "config": {"stacks": {"stackB": stack}}}
        return RunAnalysis(Path("r"), manifest, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), None, "concurrency",
                           None, pd.DataFrame(), []).routing
    assert routing({"router_mode": "kv", "worker_metrics_url": ["http://a/metrics", "http://b/metrics"]}) == \
        "router kv, 2 workers"
    assert routing({"worker_metrics_url": "http://a/metrics"}) == "router not said, 1 worker"
    assert routing({}) == "router not said, workers not said"


def test_reuse_by_turn_is_the_servers_cached_share_of_each_turns_prompt():
    """H5 states the reuse it measured: per turn, cached over prompt tokens where the server reports
    cached_tokens (#24.8)."""
    from analysis.steps import by_turn
    records = pd.DataFrame({"ok": [True] * 6 + [False], "turn": [0, 0, 1, 1, 2, 2, 2],
                            "prompt_tokens": [100, 100, 300, 300, 600, 600, 600],
                            "cached_tokens": [0, 0, 150, 150, 480, None, 600], "ttft_s": [0.1] * 7})
    t = by_turn(records)
    assert t["turn"].tolist() == [0, 1, 2] and t["requests"].tolist() == [2, 2, 2]
    assert t["cached_share"].tolist() == pytest.approx([0.0, 0.5, 0.8])      # unknown counts left out, failed too
    assert t["prefix_hit_share"].tolist() == [0.0, 1.0, 1.0]                # #27.4: requests the cache served any of
    assert by_turn(records.iloc[:0]).empty
    from analysis.steps import session_hits
    hits = session_hits(records.assign(session_id=["a", "b", "a", "b", "a", "b", "b"]))
    assert hits.to_dict() == pytest.approx({"a": (0 + 150 + 480) / 1000, "b": 150 / 400})   # b's unknown left out


def test_a_hypothesis_registered_in_one_place_gets_its_section_csv_gates_and_finding(tmp_path, monkeypatch):
    """A new hypothesis is one registered unit (#25.1): registered here, from inside the test, it gets its
    heading (its configured title), claim and finding, its section and CSV in the report, its own gate in
    the run's gates and its storage claim's mechanism gate, touching no other module."""
    from analysis import gates as G
    from analysis import report
    from analysis import hypotheses as H
    from analysis.hypotheses.registry import REGISTRY
    from analysis.run import RunAnalysis, gates_for
    from analysis.telemetry import QUERIES

    def section(runs, out):
        out.csv("HX_toy.csv", pd.DataFrame({"run_id": [a.run_id for a in runs]}))
        out.doc.p("toy section body")
    toy = H.Hypothesis(("HX",), "toys", "HX_toy.csv", section,
                       gates=lambda ctx: [G.Gate("hx_toy", "pass", "OK", f"{len(ctx.records)} records")],
                       storage_claims=("HX",), finding=lambda hid, runs: H.Finding(H.SUPPORTED, f"{len(runs)} run"))
    monkeypatch.setitem(REGISTRY, "HX", toy)
    frames = {n: pd.DataFrame(columns=["time", "series", "value"]) for n in QUERIES}
    manifest = {"run_id": "hx-1", "hypothesis": "HX", "title": "Toys are fun", "stack": "stackB", "status": "complete",
                "steps": [], "outages": [], "tier_mode": "B2", "plan": {"hypothesis": {"expected": "more toys"}}}
    records = pd.DataFrame({"ok": [True], "error_class": [None], "status": [200]})
    gates = gates_for(manifest, records, pd.DataFrame(), frames, 0.0, 10.0, True, None, "concurrency")
    assert {"hx_toy", "ssd_mechanism"} <= {g.name for g in gates}
    pooled = pd.DataFrame([{"rig": "r", "hypothesis": "HX", "stack": "stackB", "step": 0, "label": "single",
                            "requests": 1}])
    run = RunAnalysis(Path("hx-1"), manifest, records, pd.DataFrame(), pooled, None, "step", None, pd.DataFrame(),
                      gates)
    lost = RunAnalysis(Path("hx-2"), {**manifest, "run_id": "hx-2"}, records, pd.DataFrame(), pd.DataFrame(), None,
                       "step", None, pd.DataFrame(), gates)
    report.build([lost], tmp_path / "none", lambda _m: None)      # no pooled steps at all (an outage run)
    written = report.build([run], tmp_path, lambda _m: None)
    assert "HX_toy.csv" in written
    md = (tmp_path / "report.md").read_text()
    assert "## HX — Toys are fun" in md and "**HX**: **Finding: supported** — 1 run" in md
    assert ("| HX | Toys are fun | more toys | supported | 1 run | hx-1 (stackB) fail: aligned_samples missing "
            "TELEMETRY_MISSING; ssd_mechanism missing TELEMETRY_MISSING |") in md         # the answers, and why
    assert "toy section body" in md and "hx_toy" in md


def test_figures_do_not_overstate(tmp_path, monkeypatch):
    """#26.2: x ticks at the steps' values; shares on 0-100 %; no fitted line through fewer than 5 points and
    none pooling two stacks; legend entries only for what is drawn; a band across repetitions."""
    from analysis import figures as F
    kept = []
    monkeypatch.setattr(F.plt, "close", kept.append)
    d = pd.DataFrame({"hypothesis": "H0", "stack": "stackA", "concurrency": [4, 8, 16, 24, 32, 48],
                      "ttft_p50_s": 0.1, "ttft_p95_s": 0.2, "ttft_p99_s": [.1, .2, .3, .9, 1.5, 2.0],
                      "ttft_p99_min": .05, "ttft_p99_max": 2.5, "repetitions": 3, "share": [.01, .02, .02, .03, .05, .1],
                      "gone": np.nan})
    F.percentiles_vs(d, "concurrency", tmp_path / "a.png", "t")
    ax = kept[-1].axes[0]
    assert list(ax.get_xticks()) == [4, 8, 16, 24, 32, 48] and ax.get_xticklabels()[3].get_text() == "24"
    assert "p99 range over 3 repetitions" in [t.get_text() for t in ax.get_legend().get_texts()]
    F.compare(d, "concurrency", "share", tmp_path / "b.png", "t", "share", share=True)
    assert kept[-1].axes[0].get_ylim() == (0, 100)
    F.compare(d, "concurrency", "ttft_p99_s", tmp_path / "e.png", "t", "ms", 1000)
    assert kept[-1].axes[0].collections                          # the p99 range over the repetitions, shaded
    x = pd.Series([1.0, 2, 3, 4, 5, 6, 1, 2, 3])
    y = x * 2
    stacks = pd.Series(["A"] * 6 + ["B"] * 3)
    F.scatter_fit(x, y, stacks, tmp_path / "c.png", "t", "x", "y", groups=stacks)
    legend = [t.get_text() for t in kept[-1].axes[0].get_legend().get_texts()]
    assert legend == ["A", "B", "fit A R²=1.00"]                # B has 3 points: no line through them
    F.compare(d.assign(hypothesis=["H0"] * 3 + ["H1"] * 3, gone=[np.nan] * 3 + [1.0] * 3), "concurrency", "gone",
              tmp_path / "d.png", "t", "y")
    assert [t.get_text() for t in kept[-1].axes[0].get_legend().get_texts()] == ["H1 stackA"]   # H0's is all NaN
    # #27.7: throughput against per-user speed with its Pareto front; TTFT and ITL CDFs by step
    assert F.pareto_front([10, 20, 30, 25], [9, 8, 2, 1]) == [True, True, True, False]
    steps = pd.DataFrame({"series": ["A"] * 3 + ["B"] * 3, "output_tokens_per_s": [10, 20, 30, 12, 24, 25],
                          "output_tokens_per_s_per_user": [9, 8, 2, 10, 9, 1]})
    F.throughput_vs_user(steps, tmp_path / "f.png")
    ax = kept[-1].axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["A", "B", "Pareto front"]
    assert sorted(map(tuple, ax.collections[-1].get_offsets().tolist())) == [(12, 10), (24, 9), (30, 2)]
    records = pd.DataFrame({"step": [0, 0, 1], "ok": [True, True, True], "ttft_s": [0.1, 0.2, 0.3],
                            "itl_s": [np.array([0.01, 0.02], np.float32)] * 3})
    F.latency_cdfs(records, {0: "c=1", 1: "c=2"}, tmp_path / "g.png", "t")
    left, right = kept[-1].axes
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["c=1", "c=2"] and len(right.lines) == 2


def test_tpot_per_user_and_prefill_throughput_from_crafted_records():
    """#27.1, exact values: TPOT = (E2E − TTFT) / (output tokens − 1), 1 / TPOT per user, prompt tokens over
    TTFT (the uncached part where cached_tokens is known); one-token answers have no TPOT (the one here has
    no schedule lag: its intended-start TTFT is left out)."""
    from analysis.steps import frame, step_table
    manifest = {"run_id": "r", "hypothesis": "H0", "stack": "stackA", "end": 100.0, "steps": [
        {"index": 0, "step": 0, "repetition": 0, "phase": "run", "label": "single", "swept": {},
         "target_concurrency": 2, "target_context_tokens": 1000, "start": 0.0, "end": 100.0, "at_target": 0.0}]}
    rows = [{"step": 0, "ok": True, "status": 200, "start_time": 10.0 + i, "ttft_s": 0.5, "e2e_s": 0.5 + 0.02 * 9,
             "prompt_tokens": 1000, "completion_tokens": 10, "cached_tokens": 600, "itl_s": [0.02] * 9,
             "schedule_lag_s": 0.25} for i in range(10)]
    rows.append({"step": 0, "ok": True, "status": 200, "start_time": 30.0, "ttft_s": 0.5, "e2e_s": 0.5,
                 "prompt_tokens": 1000, "completion_tokens": 1, "cached_tokens": None, "itl_s": []})
    row = step_table(manifest, frame(rows)).iloc[0]
    assert row["tpot_p50_s"] == pytest.approx(0.02) and row["tpot_p99_s"] == pytest.approx(0.02)
    assert row["output_tokens_per_s_per_user"] == pytest.approx(50.0)
    assert row["prefill_tokens_per_s_per_user"] == pytest.approx(2000.0)
    assert row["uncached_prefill_tokens_per_s_per_user"] == pytest.approx(800.0)
    assert row["itl_p50_s"] == pytest.approx(0.02) and row["itl_p99_s"] == pytest.approx(0.02)
    # #27.5: an open loop's TTFT from the intended start (its schedule lag added) beside the one from the send
    assert row["ttft_from_intended_p50_s"] == pytest.approx(0.75) and row["ttft_p50_s"] == pytest.approx(0.5)


def test_output_tokens_per_joule_is_missing_without_an_energy_counter():
    """#27.6: tokens per joule from the GPUs' power (NVML's energy counter); nan without it, never 0 or inf."""
    from analysis.run import per_joule
    steps = pd.DataFrame({"output_tokens_per_s": [500.0, 500.0, 500.0], "gpu_watts": [100.0, np.nan, 0.0]})
    out = per_joule(steps)["output_tokens_per_joule"].tolist()
    assert out[0] == 5.0 and np.isnan(out[1]) and np.isnan(out[2])


def test_a_damaged_experiment_file_is_one_line_of_the_report(tmp_path):
    """A pairs or capacity directory whose JSON was cut (a full disk) costs its own line, not the report."""
    from analysis.document import Document
    from analysis.report import capacities, capacity_section, pairs_section
    for kind, name in (("pairs-1", "verdict.json"), ("capacity-1", "capacity.json")):
        (tmp_path / kind).mkdir()
        (tmp_path / kind / name).write_text('{"cut')
    doc = Document()
    pairs_section([tmp_path / "pairs-1"], doc)
    capacity_section(capacities([tmp_path / "capacity-1"], doc), doc)
    lines = doc.markdown(tmp_path).strip().splitlines()
    assert [line.split(": not read")[0] for line in lines if line] == [
        str(tmp_path / "pairs-1" / "verdict.json"), str(tmp_path / "capacity-1" / "capacity.json")]
