"""Paired AB/BA statistics on synthetic pairs with a known effect."""
import math
import random

from analysis import paired as P
from faultcase import fault

SEEN = P.Mechanism(write=True, rehydrate=True, backed=True)


def legs(effect_ms: float, n: int, noise_ms: float = 2.0, order_effect_ms: float = 0.0, seed: int = 7,
         errors: int = 0) -> list:
    """n pairs, alternating B1_B2 / B2_B1; B2 is ``effect_ms`` slower; the second leg of a pair is
    ``order_effect_ms`` slower than it would be (a warm-up the first leg leaves behind, say)."""
    rng = random.Random(seed)
    out = []
    for pair in range(n):
        order = "B1_B2" if pair % 2 == 0 else "B2_B1"
        drift = rng.uniform(0, 50)                     # the machine drifts; both legs of a pair share it
        for position, mode in enumerate(order.split("_")):
            value = 100 + drift + (effect_ms if mode == "B2" else 0) + rng.gauss(0, noise_ms) + \
                position * order_effect_ms
            out.append(P.Leg(pair, order, mode, {"ttfc_p50_ms": value}, errors=errors if pair == 0 else 0))
    return out


@fault("pairs.OK", "eight clean pairs with a 20 ms effect", "decision-grade, reasons OK", ("pairs:OK",))
def test_a_known_effect_is_inside_the_interval_and_decision_grade():
    data = legs(effect_ms=-20.0, n=8)
    c = P.compare(data, "ttfc_p50_ms")
    assert len(c.deltas) == 8 and c.ci[0] < -20 < c.ci[1] and c.excludes_zero
    assert c.wilcoxon_p <= 2 / 2 ** 8 + 1e-12 and c.sign_p <= 2 / 2 ** 8 + 1e-12   # all 8 deltas negative
    v = P.verdict(data, [c], mechanism=SEEN)
    assert v == {"decision_grade": True, "reasons": ["OK"], "primary_metric": "ttfc_p50_ms",
                 "ssd_write_signal_present": True, "ssd_rehydrate_signal_present": True,
                 "ssd_rehydrate_backed_by_reads": True}


@fault("pairs.zero", "two modes the stack cannot tell apart (no effect)", "not decision-grade: INTERVAL_INCLUDES_ZERO", ("pairs:INTERVAL_INCLUDES_ZERO",))
def test_no_effect_is_not_decision_grade():
    data = legs(effect_ms=0.0, n=8, noise_ms=5.0, seed=3)
    c = P.compare(data, "ttfc_p50_ms")
    assert not c.excludes_zero and "INTERVAL_INCLUDES_ZERO" in c.reasons
    assert c.wilcoxon_p > 0.05
    assert P.verdict(data, [c], mechanism=SEEN)["decision_grade"] is False


@fault("pairs.order", "the first leg of each pair warms the second", "ORDER_EFFECT_<METRIC>, not decision-grade", ("pairs:ORDER_EFFECT_<METRIC>",))
def test_a_planted_order_effect_is_flagged():
    data = legs(effect_ms=-20.0, n=8, order_effect_ms=15.0)
    c = P.compare(data, "ttfc_p50_ms")
    # B1_B2 pairs: B2 second, delta -20 + 15; B2_B1 pairs: B1 second, delta -20 - 15
    assert abs(c.order_diff - 30) < 5 and "ORDER_EFFECT_TTFC_P50_MS" in c.reasons
    v = P.verdict(data, [c], mechanism=SEEN)
    assert not v["decision_grade"] and "ORDER_EFFECT_TTFC_P50_MS" in v["reasons"]


@fault("pairs.few", "three pairs whose interval excludes zero", "NOT_SIGNIFICANT: the exact Wilcoxon test cannot reach 5 %", ("pairs:NOT_SIGNIFICANT",))
def test_a_handful_of_pairs_is_not_significant_whatever_the_interval():
    three = P.compare(legs(-20, 3), "ttfc_p50_ms")
    assert three.excludes_zero and three.wilcoxon_p == 2 / 8 and "NOT_SIGNIFICANT" in three.reasons
    assert not P.verdict(legs(-20, 3), [three], SEEN)["decision_grade"]


def test_a_small_carry_over_next_to_a_large_effect_is_not_an_order_effect():
    data = legs(effect_ms=-40.0, n=6, order_effect_ms=3.0, noise_ms=0.5)
    c = P.compare(data, "ttfc_p50_ms")
    assert c.order_ci[0] > 0 and not any(r.startswith("ORDER_EFFECT") for r in c.reasons)    # seen, and small


@fault("pairs.blocking", "legs with errors; no KVBM telemetry; no disk traffic; writes only; two pairs; no text chunks", "each its own reason; only the TTFT stand-in is a warning", ("pairs:RUN_ERRORS_PRESENT", "pairs:TELEMETRY_MISSING", "pairs:GATE_NO_SSD_MECHANISM_SIGNAL", "pairs:REHYDRATE_SIGNAL_ABSENT_WRITE_ONLY", "pairs:TOO_FEW_PAIRS", "pairs:METRIC_FALLBACK_TTFT"))
def test_errors_missing_mechanism_and_few_pairs_each_block():
    assert "RUN_ERRORS_PRESENT" in P.verdict(legs(-20, 6, errors=3), [P.compare(legs(-20, 6), "ttfc_p50_ms")],
                                             SEEN)["reasons"]
    c = P.compare(legs(-20, 6), "ttfc_p50_ms")
    assert P.verdict(legs(-20, 6), [c], mechanism=P.Mechanism(None, None))["reasons"] == ["TELEMETRY_MISSING"]
    assert P.verdict(legs(-20, 6), [c], mechanism=P.Mechanism(False, False))["reasons"] == ["GATE_NO_SSD_MECHANISM_SIGNAL"]
    written_only = P.verdict(legs(-20, 6), [c], mechanism=P.Mechanism(True, False))
    assert written_only["reasons"] == ["REHYDRATE_SIGNAL_ABSENT_WRITE_ONLY"] and not written_only["decision_grade"]
    two = P.compare(legs(-20, 2), "ttfc_p50_ms")
    assert math.isnan(two.ci[0]) and "TOO_FEW_PAIRS" in two.reasons
    fallback = [P.Leg(x.pair, x.order, x.mode, x.metrics, metric_used="ttft") for x in legs(-20, 6)]
    v = P.verdict(fallback, [P.compare(fallback, "ttfc_p50_ms")], SEEN)
    assert v["decision_grade"] and v["reasons"] == ["METRIC_FALLBACK_TTFT"]      # said, not blocking


def test_exact_tests_match_their_textbook_values():
    assert P.wilcoxon_p([1, 2, 3, 4, 5, 6]) == 2 / 64
    assert P.sign_p([1, 2, 3, 4, 5, 6]) == 2 / 64
    assert P.sign_p([1, -1, 2, -2]) == 1.0
    # n=5, ranks 1..5 with rank 1 negative: W+ = 14; P(|W+ - 7.5| >= 6.5) = 4/32
    assert P.wilcoxon_p([-1, 2, 3, 4, 5]) == 4 / 32


def test_the_exact_tests_agree_with_scipy_and_the_verdicts_do_not_change():
    """The sign test and the intervals are scipy's (binomtest, bootstrap); the Wilcoxon test's tie-aware exact
    null is ours, and equals scipy's full permutation distribution wherever that runs in time (#25.7)."""
    import random
    import numpy as np
    from scipy import stats
    rng = random.Random(3)
    cases = [[1, 1, 2, 2, -3, 4], [1.5, -1.5, 2, 3, 3, 3, -0.5]] + \
        [[rng.choice([-3, -2, -1, -0.5, 0.5, 1, 2, 2.5, 3]) for _ in range(rng.randint(2, 9))] for _ in range(40)]
    for d in cases:
        exact = stats.wilcoxon(d, method=stats.PermutationMethod(n_resamples=np.inf)).pvalue
        assert P.wilcoxon_p(d) == pytest.approx(exact, abs=1e-12), d
        assert P.sign_p(d) == pytest.approx(stats.binomtest(sum(x > 0 for x in d), len(d)).pvalue, abs=1e-12), d
    lo, hi = P.bootstrap_ci([-10.2, -8.1, -12.3, -9.9, -11.0, -7.5])
    assert -11.5 < lo < -10.8 and -8.8 < hi < -8.3 and P.bootstrap_ci([4.0] * 5) == (4.0, 4.0)


# ---- `python -m rig pairs` end to end on the simulator ----------------------------------------------
import csv  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

import pytest  # noqa: E402

from analysis import gates as G  # noqa: E402
from conftest import pairs_overlay, run_module  # noqa: E402


def only(tmp, pattern):
    [found] = (tmp / "results").glob(pattern)
    return found


def test_pairs_run_end_to_end_with_counterbalanced_legs(tmp_path):
    overlay = pairs_overlay(tmp_path)
    proc = run_module("rig", "--config", str(overlay), "pairs", "--pairs", "2", "--duration-s", "3",
                      "--concurrency", "2", "--context-tokens", "1024", timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    out = only(tmp_path, "pairs-*[0-9]Z")
    legs = list(csv.DictReader(open(out / "legs.csv")))
    assert [(r["pair"], r["order"], r["mode"]) for r in legs] == [
        ("0", "B1_B2", "B1"), ("0", "B1_B2", "B2"), ("1", "B2_B1", "B2"), ("1", "B2_B1", "B1")]
    for r in legs:
        assert int(r["replay_requests"]) > 0 and int(r["errors"]) == 0 and r["metric_used"] == "ttfc"
        # B2 reads back from its disk tier what B1 has to recompute; B1 has none
        assert (float(r["onboard_disk_blocks"]) > 0) == (r["mode"] == "B2"), r
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict == {"decision_grade": False, "reasons": ["TOO_FEW_PAIRS"], "primary_metric": "ttfc_p50_ms",
                       "ssd_write_signal_present": True, "ssd_rehydrate_signal_present": True,
                 "ssd_rehydrate_backed_by_reads": True}
    # storage evidence per leg: the serving process's own I/O before and after, beside the disk's identity
    evidence = json.loads((out / f"storage-{legs[1]['run_id']}.json").read_text())
    assert evidence["before"]["tier2_path"] == str(tmp_path / "t2")
    assert evidence["after"]["process_io"]["read_bytes"] >= evidence["before"]["process_io"]["read_bytes"]
    assert all(r["process_read_bytes"] != "" for r in legs)
    comparisons = json.loads((out / "comparisons.json").read_text())
    assert [c["metric"] for c in comparisons] == ["ttfc_p50_ms", "ttfc_p95_ms", "ttfc_p99_ms", "throughput_rps"]
    assert len(comparisons[0]["deltas"]) == 2 and comparisons[0]["ci"] == [None, None]
    assert "B2 − B1 within each pair" in (out / "report.md").read_text()
    runs = sorted(p.name for p in (tmp_path / "results").glob("pairs-*-p*-l*"))
    manifests = [json.loads((tmp_path / "results" / r / "manifest.json").read_text()) for r in runs]
    assert len(runs) == 4 and all(m["tier_mode"] == r.rsplit("-", 1)[1] for m, r in zip(manifests, runs))
    # every leg replayed the same deterministic list, and every record says which request it was
    assert len({m["request_manifest_hash"] for m in manifests}) == 1 and len({r["request_manifest_hash"]
                                                                             for r in legs}) == 1
    replay = [json.loads(line) for line in (tmp_path / "results" / runs[0] / "request_manifest.jsonl").open()]
    assert replay and {"session_id", "prefix_hash", "context_tokens"} <= set(replay[0])
    records = [json.loads(line) for line in (tmp_path / "results" / runs[0] / "requests.jsonl").open()]
    assert all(r["request_hash"] for r in records)
    replays = [r for r in records if r["phase"] == "replay"]
    assert len({r["request_hash"] for r in replays}) <= len(replay)      # replays repeat the list's requests


def test_control_legs_stay_in_tier0_and_say_what_they_show(tmp_path):
    overlay = pairs_overlay(tmp_path)
    proc = run_module("rig", "--config", str(overlay), "pairs", "--pairs", "1", "--duration-s", "2",
                      "--concurrency", "2", "--context-tokens", "1024", "--control", timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    out = only(tmp_path, "pairs-*[0-9]Z")
    legs = list(csv.DictReader(open(out / "legs.csv")))
    assert [(r["mode"], r["control"]) for r in legs] == [("B1", "False"), ("B2", "False"), ("B1", "True"),
                                                        ("B2", "True")]
    control = [r for r in legs if r["control"] == "True"]
    # 2 users x 4 prefixes in half of the 4 MiB tier0 (64 blocks of 32 tokens): 4 blocks each, less the output
    assert {r["context_tokens"] for r in control} == {str(4 * 32 - 8)}
    assert all(float(r["onboard_disk_blocks"]) == 0 for r in control) and all(int(r["replay_requests"]) > 0
                                                                               for r in control)
    manifests = [json.loads((tmp_path / "results" / r["run_id"] / "manifest.json").read_text()) for r in control]
    assert all({s["phase"] for s in m["steps"]} == {"populate", "replay"} for m in manifests)   # no thrash
    verdict = json.loads((out / "verdict.json").read_text())
    assert "CONTROL_TOO_FEW_PAIRS" in verdict["reasons"] and verdict["ssd_rehydrate_signal_present"]
    assert (out / "control.json").exists() and "(control)" in (out / "report.md").read_text()


def test_pairs_under_tensorrt_llm_offload_take_their_evidence_from_the_engine(tmp_path):
    """Stack B with TensorRT-LLM's native offload (kv_offload: trtllm): no KVBM listener; the legs read the
    disk onboards from the engine's per-tier hit tokens on the worker port through the same collector, and
    the serving process's reads back them as they back KVBM's."""
    overlay = pairs_overlay(tmp_path, offload="trtllm")
    proc = run_module("rig", "--config", str(overlay), "pairs", "--pairs", "1", "--duration-s", "3",
                      "--concurrency", "2", "--context-tokens", "1024", timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    out = only(tmp_path, "pairs-*[0-9]Z")
    legs = list(csv.DictReader(open(out / "legs.csv")))
    assert [r["mode"] for r in legs] == ["B1", "B2"]
    for r in legs:
        assert (float(r["onboard_disk_blocks"]) > 0) == (r["mode"] == "B2"), r
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["reasons"] == ["TOO_FEW_PAIRS"] and verdict["ssd_rehydrate_backed_by_reads"] is True
    manifest = json.loads((tmp_path / "results" / legs[1]["run_id"] / "manifest.json").read_text())
    assert (manifest["kv_offload"], manifest["disk_offload_filter"]) == ("trtllm", None)


@fault("pairs.early", "the first B2 leg reads nothing back from a disk tier", "the experiment stops with GATE_NO_SSD_MECHANISM_SIGNAL", ("pairs:GATE_NO_SSD_MECHANISM_SIGNAL",))
def test_the_early_gate_stops_when_b2_has_no_disk_tier(tmp_path):
    """The overlay reaches the simulator and every leg however it was given: here through $HARNESS_CONFIG
    alone (with which `rig pairs` once stopped at PREFLIGHT_STACK_DID_NOT_START, #25.6); the other pairs
    tests give it with --config."""
    overlay = pairs_overlay(tmp_path, tier2_bytes="0")
    env = {**os.environ, "HARNESS_CONFIG": str(overlay)}
    proc = run_module("rig", "pairs", "--pairs", "1", "--duration-s", "2", "--concurrency", "2",
                      "--context-tokens", "1024", env=env, timeout=240)
    assert proc.returncode == 2 and "the first B2 leg read nothing back from its disk tier" in proc.stdout
    out = only(tmp_path, "pairs-*[0-9]Z")
    assert json.loads((out / "verdict.json").read_text())["reasons"] == ["GATE_NO_SSD_MECHANISM_SIGNAL"]
    assert len(list(csv.DictReader(open(out / "legs.csv")))) == 2          # what ran is kept


@fault("28.4", "KVBM counts a disk hit whose transfer failed and answers 200 (ai-dynamo/dynamo #15079, kvbm 1.4.2; "
       "the simulator's engine.count_failed_disk_onboards)",
       "the first B2 leg stops the experiment with DISK_READS_NOT_BACKED: KVBM's onboard counter moved, the serving "
       "process read nothing", ("pairs:DISK_READS_NOT_BACKED",))
def test_disk_hits_the_disk_never_served_are_not_backed(tmp_path):
    unbacked_disk_hits(tmp_path, "kvbm")


@fault("28.5", "under TensorRT-LLM's native offload (kv_offload: trtllm) the engine's disk hit tokens grow for "
       "transfers that never read the disk (the same simulated fault, in TensorRT-LLM's counters)",
       "DISK_READS_NOT_BACKED as under KVBM: the engine's per-tier hit counter is a claim, the serving process's "
       "reads are the evidence", ("pairs:DISK_READS_NOT_BACKED",))
def test_tensorrt_llm_disk_hits_the_disk_never_served_are_not_backed(tmp_path):
    unbacked_disk_hits(tmp_path, "trtllm")


def unbacked_disk_hits(tmp_path, offload):
    overlay = pairs_overlay(tmp_path, engine="count_failed_disk_onboards: true", offload=offload)
    proc = run_module("rig", "--config", str(overlay), "pairs", "--pairs", "1", "--duration-s", "2", "--concurrency",
                      "2", "--context-tokens", "1024", timeout=240)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-2000:]
    out = only(tmp_path, "pairs-*[0-9]Z")
    assert json.loads((out / "verdict.json").read_text())["reasons"] == ["DISK_READS_NOT_BACKED"]
    b2 = next(r for r in csv.DictReader(open(out / "legs.csv")) if r["mode"] == "B2")
    assert float(b2["onboard_disk_blocks"]) > 0 and int(b2["errors"]) == 0      # the counters' word, and 200s
    assert float(b2["process_read_bytes"]) < float(b2["onboard_disk_bytes"]) / 2   # what the process read


@fault("pairs.dead", "`rig pairs` against a frontend that does not answer", "stops before any leg: PREFLIGHT_FRONTEND_UNREACHABLE", ("pairs:PREFLIGHT_FRONTEND_UNREACHABLE",))
def test_preflight_names_a_dead_endpoint(tmp_path):
    overlay = pairs_overlay(tmp_path)
    env = {**os.environ, "STACK_B_RESTART_CMD": "true"}           # a real stack that is not there
    proc = run_module("rig", "--config", str(overlay), "pairs", "--pairs", "1", env=env, timeout=60)
    assert proc.returncode == 2 and "preflight failed: PREFLIGHT_FRONTEND_UNREACHABLE" in proc.stdout
    out = only(tmp_path, "pairs-*[0-9]Z")
    assert json.loads((out / "verdict.json").read_text())["reasons"] == ["PREFLIGHT_FRONTEND_UNREACHABLE"]


@fault("pairs.b1", "a B1 leg (CPU tier only) onboards from disk or reads the tier2 file", "B1_DISK_TIER_NOT_DISABLED; the b1_disk_off gate fails", ("pairs:B1_DISK_TIER_NOT_DISABLED", "gate:b1_disk_off=B1_DISK_TIER_NOT_DISABLED"))
@pytest.mark.parametrize("onboarded,read,reason", [
    (0.0, 0.0, "OK"), (0.0, float("nan"), "OK"), (12.0, 0.0, "B1_DISK_TIER_NOT_DISABLED"),
    (0.0, 8 * 2**20, "B1_DISK_TIER_NOT_DISABLED"), (float("nan"), float("nan"), "TELEMETRY_MISSING")])
def test_a_b1_run_with_disk_traffic_is_flagged(onboarded, read, reason):
    assert G.b1_disk_off(onboarded, read).reason == reason


@fault("pairs.baseline", "the replay list differs from an earlier experiment", "BASELINE_MANIFEST_CHANGED (warning), BASELINE_MANIFEST_MISMATCH with --strict-baseline", ("pairs:BASELINE_MANIFEST_CHANGED", "pairs:BASELINE_MANIFEST_MISMATCH"))
def test_the_replay_list_baseline_is_kept_checked_and_audited(tmp_path):
    from rig.pairs import BASELINE_AUDIT, check_baseline
    key = "H9:c2:ctx1024"
    assert check_baseline(tmp_path, key, "aaa", strict=False, accept=False, run="r1") == []      # first: kept
    assert check_baseline(tmp_path, key, "aaa", strict=True, accept=False, run="r2") == []       # same: fine
    assert check_baseline(tmp_path, key, "bbb", strict=False, accept=False, run="r3") == ["BASELINE_MANIFEST_CHANGED"]
    assert check_baseline(tmp_path, key, "bbb", strict=True, accept=False, run="r4") == ["BASELINE_MANIFEST_MISMATCH"]
    assert check_baseline(tmp_path, key, "bbb", strict=True, accept=True, run="r5") == []        # accepted
    assert check_baseline(tmp_path, key, "bbb", strict=True, accept=False, run="r6") == []
    audit = [json.loads(line) for line in (tmp_path / BASELINE_AUDIT).read_text().splitlines()]
    assert [(a["previous"], a["accepted"], a["run"]) for a in audit] == [(None, "aaa", "r1"), ("aaa", "bbb", "r5")]
    assert P.verdict(legs(-20, 6), [P.compare(legs(-20, 6), "ttfc_p50_ms")], SEEN,
                     ("BASELINE_MANIFEST_CHANGED",))["decision_grade"] is True          # a warning, said


def test_the_rehydrate_sweep_tables_every_mode_and_recommends_a_concurrency(tmp_path):
    overlay = pairs_overlay(tmp_path)
    proc = run_module("rig", "--config", str(overlay), "rehydrate", "--modes", "B0,B1,B2", "--concurrencies", "1,2",
                      "--duration-s", "2", "--context-tokens", "1024", timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    out = only(tmp_path, "rehydrate-*[0-9]Z")
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert [(r["mode"], r["concurrency"]) for r in rows] == [("B0", "1"), ("B0", "2"), ("B1", "1"), ("B1", "2"),
                                                            ("B2", "1"), ("B2", "2")]
    assert all((float(r["onboard_disk_blocks"]) > 0) == (r["mode"] == "B2") for r in rows if r["mode"] != "B0")
    assert all(r["onboard_disk_blocks"] == "nan" for r in rows if r["mode"] == "B0")     # no KVBM at all in B0
    assert set(json.loads((out / "knees.json").read_text())) == {"B0", "B1", "B2"}
    rec = json.loads((out / "recommendation.json").read_text())
    assert rec["replay_concurrency"] in (1, 2)
    assert "Recommended replay concurrency" in (out / "recommendation.md").read_text()


@fault("29.H7", "`rig rehydrate`'s B2 leg at some concurrency: KVBM counts disk onboards the serving process never "
       "read (Dynamo #15079)",
       "that concurrency is not recommended for the pairs (it was: KVBM's counters alone stood for \"B2 read from "
       "its disk tier\")", ("rig:rehydrate recommends only backed disk reads",))
def test_the_recommendation_needs_clean_legs_and_a_disk_signal():
    from rig.rehydrate import recommend
    block = 2**16

    def row(mode, c, p50, errors=0, onboard=10.0, status="complete", read=None):
        return {"mode": mode, "concurrency": c, "ttfc_p50_ms": p50, "errors": errors, "onboard_disk_blocks": onboard,
                "onboard_disk_bytes": onboard * block, "offload_disk_bytes": onboard * block,
                "tier2_read_bytes": math.nan, "process_read_bytes": onboard * block if read is None else read,
                "run_status": status}
    rows = [row("B1", 1, 50), row("B2", 1, 40), row("B1", 2, 80), row("B2", 2, 40, errors=3),
            row("B1", 4, 90), row("B2", 4, 60), row("B1", 8, 90), row("B2", 8, 10, status="incomplete")]
    assert recommend(rows)["replay_concurrency"] == 4        # c=2 and c=8 differ more: errors, a leg cut short
    assert recommend([row("B1", 1, 50), row("B2", 1, 40, onboard=0.0)])["replay_concurrency"] is None
    unbacked = rows[:4] + [row("B1", 4, 90), row("B2", 4, 60, read=0.0)]
    assert recommend(unbacked)["replay_concurrency"] == 1    # c=4's disk hits were never read


def test_a_results_pack_holds_tables_figures_and_methodology(tmp_path):
    overlay = pairs_overlay(tmp_path)
    assert run_module("rig", "--config", str(overlay), "pairs", "--pairs", "1", "--duration-s", "2", "--concurrency",
                      "2", "--context-tokens", "1024", timeout=240).returncode == 0
    experiment = only(tmp_path, "pairs-*[0-9]Z")
    proc = run_module("rig", "--config", str(overlay), "pack", experiment.name, "--name", "brief")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "results" / "publish" / "brief"
    names = {p.name for p in out.iterdir()}
    assert {"legs.csv", "deltas.csv", "comparisons.json", "verdict.json", "report.md", "order_check.json",
            "config.json", "methodology.md", "figures"} <= names
    assert {p.name for p in (out / "figures").iterdir()} >= {"deltas_ttfc_p50_ms.png", "ttfc_cdf.png"}
    text = (out / "methodology.md").read_text()
    assert "1 pairs" in text and "Replay concurrency 2, context 1024 tokens" in text and "not decision-grade" in text
    assert run_module("rig", "--config", str(overlay), "pack", "pairs-nope").returncode == 2


def test_hygiene_lists_then_archives_trials_and_keeps_the_rest(tmp_path):
    results = tmp_path / "results"

    def run(name, status="complete", records=1, manifest=None):
        d = results / name
        d.mkdir(parents=True)
        (d / "manifest.json").write_text(manifest if manifest is not None else json.dumps(
            {"run_id": name, "status": status, "steps": [], "start": 0, "stack": "stackB", "hypothesis": "H0"}))
        (d / "requests.jsonl").write_text('{"ok": true}\n' * records)
    run("h0-good")
    run("h0-cut", status="incomplete")
    run("h0-empty", records=0)
    run("h0-broken", manifest="{not json")
    run("h0-kept", status="running")
    (results / "pairs-20260101T000000Z").mkdir()                      # an experiment that never finished
    run("pairs-20260101T000000Z-p0-l0-B1")
    (results / "pairs-20260102T000000Z").mkdir()                      # a finished one
    (results / "pairs-20260102T000000Z" / "verdict.json").write_text("{}")
    run("pairs-20260102T000000Z-p0-l0-B1")
    overlay = tmp_path / "o.yaml"
    overlay.write_text(f"results_dir: {results}\nrun_dir: {tmp_path / 'run'}\n")
    dry = run_module("rig", "--config", str(overlay), "hygiene", "--keep", "h0-kept")
    assert dry.returncode == 0 and "--execute moves them" in dry.stdout
    listed = {line.split()[2] for line in dry.stdout.splitlines() if line.startswith("would move")}
    assert listed == {"h0-cut", "h0-empty", "h0-broken", "pairs-20260101T000000Z", "pairs-20260101T000000Z-p0-l0-B1"}
    assert all((results / n).exists() for n in listed)                 # a dry run moves nothing
    done = run_module("rig", "--config", str(overlay), "hygiene", "--keep", "h0-kept", "--execute")
    assert done.returncode == 0
    [archive] = (results / "trials").iterdir()
    assert {p.name for p in archive.iterdir()} == listed
    assert {p.name for p in results.iterdir()} == {"h0-good", "h0-kept", "pairs-20260102T000000Z",
                                                   "pairs-20260102T000000Z-p0-l0-B1", "trials"}


@fault("pairs.leg", "a leg leaves no readable run", "LEG_FAILED; the legs before it are kept", ("pairs:LEG_FAILED",))
def test_a_leg_that_leaves_no_run_stops_the_experiment_with_its_reason(tmp_path):
    overlay = pairs_overlay(tmp_path)
    proc = run_module("rig", "--config", str(overlay), "pairs", "--pairs", "1", "--context-tokens", "99999999",
                      "--duration-s", "2", timeout=120)
    assert proc.returncode == 2 and "left no readable run" in proc.stdout and "Traceback" not in proc.stderr
    out = only(tmp_path, "pairs-*[0-9]Z")
    assert json.loads((out / "verdict.json").read_text())["reasons"] == ["LEG_FAILED"]


def test_a_real_stack_b_on_tensorrt_llms_offload_is_restarted_with_its_engine_options(tmp_path, monkeypatch):
    """STACK_B_RESTART_CMD gets the leg's tiers as the engine's YAML (a file under run_dir) instead of KVBM's
    variables, and nothing of KVBM's."""
    import yaml
    import configs
    from configs.tier_env import engine_config
    from rig.launch import restart_real_stack_b
    cfg = configs.load(pairs_overlay(tmp_path, offload="trtllm"))
    seen = tmp_path / "seen"
    monkeypatch.setenv("STACK_B_RESTART_CMD", f'cp "$SPARKRIG_EXTRA_ENGINE_ARGS" {seen}.yaml; '
                                              f'echo "$SPARKRIG_TIER_MODE ${{DYN_CONNECTOR-unset}}" > {seen}')
    restart_real_stack_b(cfg, "stress", "B1")
    assert yaml.safe_load((tmp_path / "seen.yaml").read_text()) == engine_config(cfg, "stress", "B1")
    assert seen.read_text().split() == ["B1", "unset"]
    assert (tmp_path / "run" / "kv-offload-stress-B1.yaml").is_file()
