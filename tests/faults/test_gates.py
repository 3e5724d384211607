"""Gate faults that crafted per-step tables show exactly: repetitions that disagree, an NVMe that is not
flat, and a queue that saturates every request alike (no p99/p50 knee)."""
from __future__ import annotations

import math

import pandas as pd

from analysis import gates as G
from analysis.knee import SATURATION_RULE, find_knee
from faultcase import fault


def pooled(p99s: list[list[float]]) -> pd.DataFrame:
    """A by_step table: one row per step from each step's p99 in each repetition."""
    rows = []
    for i, reps in enumerate(p99s):
        s = pd.Series(reps)
        rows.append({"label": f"concurrency={2 ** i}", "repetitions": len(reps), "ttft_p99_mean": s.mean(),
                     "ttft_p99_std": s.std(), "ttft_p99_min": s.min(), "ttft_p99_max": s.max(),
                     "ttft_p99_cov": s.std() / s.mean()})
    return pd.DataFrame(rows)


@fault("gate.repro", "three repetitions of a step whose TTFT p99 are 0.50, 0.80 and 1.20 s (another load on the box)",
       "cov_p99 fails COV_P99_HIGH and reproducibility_p99 fails REPRO_P99_SPREAD, naming the step",
       ("gate:cov_p99=COV_P99_HIGH", "gate:reproducibility_p99=REPRO_P99_SPREAD"))
def test_repetitions_that_disagree_fail_both_gates():
    cov, repro = G.repetitions(pooled([[0.30, 0.31, 0.30], [0.50, 0.80, 1.20]]))
    assert (cov.status, cov.reason) == ("fail", "COV_P99_HIGH") and "concurrency=2" in cov.detail
    assert (repro.status, repro.reason) == ("fail", "REPRO_P99_SPREAD") and "concurrency=2" in repro.detail
    steady = G.repetitions(pooled([[0.30, 0.301, 0.302]]))
    assert [g.status for g in steady] == ["pass", "pass"]


@fault("gate.nvme_flat", "an H2A (UMA-only) run whose serving process reads 8 MiB/s from storage; or the kv_tier2 "
       "disk reads 200 r/s (Prometheus, Stack B, fio: any reader) while Stack A's own reads are not observed, or "
       "observed for only part of the run; or nothing at all was scraped",
       "h2a_nvme_flat fails H2A_NVME_NOT_FLAT on the process's own reads only; someone else's reads are never a "
       "fail: with the process's reads observed they pass, without them TELEMETRY_MISSING (a disk as quiet as when "
       "idle passes: it holds every reader's reads)",
       ("gate:h2a_nvme_flat=H2A_NVME_NOT_FLAT", "gate:h2a_nvme_flat=TELEMETRY_MISSING"))
def test_h2a_is_judged_on_the_serving_processs_own_reads():
    nan = math.nan
    refuted = G.nvme_flat(8 * 2**20, 1.0, 200.0, 10.0)
    assert (refuted.status, refuted.reason) == ("fail", "H2A_NVME_NOT_FLAT") and "8.00 MiB/s" in refuted.detail
    others = G.nvme_flat(0.0, 1.0, 200.0, 10.0)              # the disk busy with another reader's reads
    assert (others.status, others.reason) == ("pass", "OK") and "200.0 r/s" in others.detail
    unseen = G.nvme_flat(nan, 0.0, 200.0, 10.0)
    assert (unseen.status, unseen.reason) == ("missing", "TELEMETRY_MISSING")
    assert "not observed" in unseen.detail and unseen.missing == ("serving_read_bytes",)
    partial = G.nvme_flat(0.0, 0.5, 200.0, 10.0)             # a process found halfway through the run
    assert (partial.status, partial.reason) == ("missing", "TELEMETRY_MISSING") and "50%" in partial.detail
    assert G.nvme_flat(nan, 0.0, 12.0, 10.0).status == "pass"  # every reader's reads as low as when idle
    assert G.nvme_flat(nan, 0.0, 12.0, nan).reason == "TELEMETRY_MISSING"


@fault("23.B9", "an H0 run whose TTFT p50 rises 25 ms → 2 s while throughput falls 8.4 → 6.5 req/s (p99 stays "
       "under 2 x p50); and a run with no knee at all",
       "U_work from the saturation rule, named as such; with no knee: no U_work, 'no knee in the tested range'",
       ("report:U_work rule named", "report:no knee, no U_work"))
def test_saturation_that_hits_every_request_is_a_knee():
    levels, p50 = [1, 2, 4, 8, 16, 32], [0.025, 0.026, 0.030, 0.200, 0.900, 2.0]
    p99 = [x * 1.5 for x in p50]
    k = find_knee(levels, p50, p99, throughput=[1.3, 2.6, 5.0, 8.4, 7.9, 6.5])
    assert (k.reason, k.u_work, k.rule) == ("saturation", 8, SATURATION_RULE)
    assert "U_work = 8" in k.said and "saturation" in k.said
    none = find_knee(levels, [0.025] * 6, [0.03] * 6, throughput=[1, 2, 4, 8, 16, 32])
    assert none.u_work is None and none.said == "no knee in the tested range: no U_work"


@fault("24.K", "short steps (17-24 requests, the quick demo's) whose p99 is one stalled request at 3 x p50 in two "
       "steps running", "no knee from them: a step is over only when at least two requests exceed 2 x p50; the "
       "real queue two steps later is the knee", ("report:U_work rule named",))
def test_one_stalled_request_does_not_make_a_knee():
    levels, p50 = [4, 8, 16, 24, 32, 48], [0.011, 0.013, 0.016, 0.020, 0.025, 0.75]
    p99 = [0.033, 0.040, 0.023, 0.17, 0.21, 0.98]
    k = find_knee(levels, p50, p99, tail=[1, 1, 0, 6, 9, 4])
    assert (k.reason, k.knee_index, k.u_work) == ("knee", 3, 16)
    assert find_knee(levels, p50, p99, tail=[2, 2, 0, 6, 9, 4]).reason == "knee_at_first_step"


@fault("23.D1", "a manifest with `start: 1.0` (about 800,000 range queries per series)",
       "one line: the manifest window does not hold its records; the report goes on with the other runs",
       ("report:damaged window refused",))
def test_a_window_far_from_its_records_is_one_line():
    import pytest
    from analysis.run import window
    records = pd.DataFrame({"start_time": [1_700_000_000.0, 1_700_000_010.0], "e2e_s": [1.0, 2.0]})
    assert window({"start": 1_699_999_990.0, "end": 1_700_000_020.0}, records) == (1_699_999_990.0, 1_700_000_020.0)
    assert window({"start": 1_699_999_990.0, "end": None}, records) == (1_699_999_990.0, 1_700_000_012.0)
    with pytest.raises(ValueError, match="does not hold its records"):
        window({"start": 1.0, "end": 1_700_000_020.0}, records)


@fault("gate.goodput", "a run whose objective asks for a goodput gate (TTFT <= 0.5 s at the 99th percentile): one step "
       "serves 97 % of its requests within it; a step that served nothing; a run whose objective asks for no gate",
       "goodput fails GOODPUT_BELOW_OBJECTIVE naming the step; no served request is missing (NO_SERVED_REQUESTS), "
       "never a pass; no gate asked: none", ("gate:goodput=GOODPUT_BELOW_OBJECTIVE", "gate:goodput=NO_SERVED_REQUESTS"))
def test_goodput_below_the_objective_fails_and_nothing_served_is_not_a_pass():
    from analysis.steps import frame, step_table
    slo = {"ttft_s": 0.5, "tpot_s": None, "e2e_s": None, "percentile": 99.0, "gate": True}

    def step(i, start):
        return {"index": i, "step": i, "repetition": 0, "phase": "run", "label": f"concurrency={2 ** i}", "swept": {},
                "target_concurrency": 2 ** i, "target_context_tokens": 256, "start": start, "end": start + 60.0,
                "at_target": start}
    manifest = {"run_id": "g", "hypothesis": "H0", "stack": "stackA", "end": 1180.0, "plan": {"slo": slo},
                "steps": [step(0, 1000.0), step(1, 1060.0), step(2, 1120.0)]}
    rows = [{"step": s, "ok": True, "status": 200, "start_time": 1000.0 + 60 * s + 10 + i * 0.4,
             "ttft_s": 0.8 if (s == 1 and i < 3) else 0.1, "e2e_s": 1.0, "prompt_tokens": 256, "completion_tokens": 8,
             "itl_s": [0.1] * 7} for s in (0, 1) for i in range(100)]
    table = step_table(manifest, frame(rows))
    assert list(table["good_share"][:2]) == [1.0, 0.97] and list(table["meets_slo"][:2]) == [True, False]
    assert table["goodput_rps"][0] == 100 / (60 - 5)                   # good requests over the measured time
    gate = G.goodput(table, slo)
    assert (gate.status, gate.reason) == ("fail", "GOODPUT_BELOW_OBJECTIVE") and "concurrency=2" in gate.detail
    clean = table.iloc[[0]]
    assert G.goodput(clean, slo).status == "pass"
    unserved = G.goodput(table.iloc[[0, 2]], slo)                      # the third step served nothing
    assert (unserved.status, unserved.reason) == ("missing", "NO_SERVED_REQUESTS")
    assert G.goodput(table, {**slo, "gate": False}) is None


@fault("29.H1", "a complete run whose requests.jsonl is empty, or whose every request the client shed or cut: "
       "no request's outcome is the server's",
       "the errors gate is missing NO_SERVED_REQUESTS and the run's verdict fail (it said \"0.0% of requests "
       "failed\" and the run passed)", ("gate:errors=NO_SERVED_REQUESTS",))
def test_no_served_request_is_no_error_rate_of_zero():
    from analysis.steps import error_rate
    manifest = {"status": "complete", "run_id": "r", "steps": []}
    records = pd.DataFrame({"ok": pd.Series(dtype=bool), "error_class": pd.Series(dtype=object),
                            "status": pd.Series(dtype=float), "start_time": pd.Series(dtype=float)})
    rate = error_rate(manifest, records)
    assert math.isnan(rate)
    gates = G.run_state(manifest, rate)
    errors = next(g for g in gates if g.name == "errors")
    assert (errors.status, errors.reason) == ("missing", "NO_SERVED_REQUESTS"), errors
    assert G.verdict(gates) == "fail"
    down = G.run_state({**manifest, "outages": [{"kind": "refused", "start": 0.0, "end": 5.0, "failures": 9}]},
                       math.nan)
    assert next(g for g in down if g.name == "errors").reason == "STACK_OUTAGE"   # an outage says more


@fault("29.H2", "a B1 run under TensorRT-LLM's offload whose engine stopped answering after its first scrapes: "
       "the exporter holds its counters, so rate() reads no disk-tier traffic",
       "b1_disk_off is missing TELEMETRY_MISSING (the target answered too little of the run), never a pass",
       ("gate:b1_disk_off=TELEMETRY_MISSING",))
def test_a_b1_run_whose_kv_target_was_down_is_not_checked():
    held = G.b1_disk_off(0.0, math.nan, kv_up_share=0.1)
    assert (held.status, held.reason) == ("missing", "TELEMETRY_MISSING") and "10%" in held.detail
    assert G.b1_disk_off(0.0, math.nan, kv_up_share=1.0).status == "pass"


@fault("29.H6", "a Stack B run with KV tiers analysed under an overlay whose stackB has none (a fleet's run from "
       "another rig, or the overlay changed after the run)",
       "the run is judged as it recorded itself (its manifest's kv_offload): its disk-tier gates run; it read "
       "`tier2_read_bytes 0` \"by construction\" and skipped them, and could pass",
       ("report:tiered=manifest",))
def test_a_run_is_judged_by_the_tiers_it_recorded():
    from analysis.run import was_tiered
    assert was_tiered({"stack": "stackB", "kv_offload": "kvbm"}, tiered_now=set())
    assert was_tiered({"stack": "stackB", "kv_offload": "trtllm"}, tiered_now=set())
    assert not was_tiered({"stack": "stackB", "kv_offload": None}, tiered_now={"stackB"})
    assert was_tiered({"stack": "stackB"}, tiered_now={"stackB"})        # a run from before the field
    assert not was_tiered({"stack": "stackA"}, tiered_now={"stackB"})
