"""`rig capacity`: the search on its own (a probe whose answer is known), and end to end against a simulator
whose capacity under the objective is known: four batch slots, so a fifth closed-loop user always waits a
whole answer (~0.5 s) for one and misses a 0.2 s TTFT bound."""
import json
import math
import os

import psutil
import pytest

from conftest import Sim, pairs_overlay, run_module, stack_a_overlay
from faultcase import fault
from rig.capacity import Probe, search


def known(capacity: float):
    seen = []

    def probe(load):
        seen.append(load)
        return Probe(load, f"run-{load:g}", load <= capacity, "")
    return probe, seen


def test_the_search_grows_bisects_and_confirms():
    probe, seen = known(5)
    result = search(probe, 1, 64, integer=True)
    assert seen == [1, 2, 4, 8, 6, 5, 5]                      # x2 until a fail, bisect, the answer once more
    assert (result["capacity"], result["interval"], result["confirmed"]) == (5, [5, 6], True)
    probe, seen = known(3.3)
    rate = search(probe, 1, 64, integer=False)
    low, high = rate["interval"]
    assert low <= 3.3 < high and high - low <= 0.05 * low and rate["confirmed"]
    probe, _ = known(500)
    assert search(probe, 1, 64, integer=True)["interval"] == [64, None]      # never failed: at least the most
    probe, _ = known(0.5)
    nothing = search(probe, 1, 64, integer=True)
    assert nothing["capacity"] is None and nothing["interval"] == [None, 1] and not nothing["confirmed"]

    flaky = iter([True, True, False, True, False])             # 1, 2, 4 fails, 3 passes, its repeat fails
    result = search(lambda load: Probe(load, "", next(flaky), ""), 1, 64, integer=True)
    assert (result["capacity"], result["confirmed"]) == (3, False)


@fault("29.C1", "a capacity probe with nothing to judge: its Locust run never started (the stack was down: the full "
       "demo once searched a Stack B its pairs had stopped), or no request finished inside its window",
       "the search stops there; capacity.json holds `unjudged` and the sentence says `capacity not measured: … could "
       "not be judged (why)`, never `meets no tested load: already 1 users fail`; `sparkrig capacity` exits 1",
       ("cli:capacity=not measured",))
def test_a_probe_with_nothing_to_judge_is_not_a_failure():
    """A probe whose run never started (the stack was down) or served nothing in its window says nothing
    about the objective: the search stops there and the answer says the capacity was not measured, instead
    of "meets no tested load: already 1 users fail" (what the full demo said of a Stack B it had stopped)."""
    from rig.capacity import sentence
    slo = {"ttft_s": 2.0, "tpot_s": 0.1, "e2e_s": None, "percentile": 99.0}
    down = search(lambda load: Probe(load, "", False, "the probe's run did not start (locust exit 2)",
                                     judged=False), 1, 64, integer=True)
    assert down["capacity"] is None and down["unjudged"]["load"] == 1 and len(down["probes"]) == 1
    said = sentence(down, "stackB (B2)", "users", slo, 4096)
    assert said == ("stackB (B2): capacity not measured: the probe at 1 users could not be judged (the probe's "
                    "run did not start (locust exit 2))")
    assert "fail" not in said.replace("could not", "")
    served = iter([True, True, None])                         # 1 and 2 meet it; at 4 nothing finished
    late = search(lambda load: Probe(load, "r", bool(v := next(served)), "no step served a request to judge",
                                     judged=v is not None), 1, 64, integer=True)
    assert late["capacity"] == 2 and late["interval"] == [2, None] and not late["confirmed"]
    assert sentence(late, "stackA", "users", slo, 4096).startswith(
        "stackA: capacity not measured: it served 2 users at TTFT <= 2000 ms, TPOT <= 100 ms; the probe at 4 users")
    assert search(known(5)[0], 1, 64, integer=True)["unjudged"] is None


@pytest.mark.timeout(400)
def test_capacity_finds_the_simulators_batch_slots(tmp_path):
    with Sim(tmp_path, "A", overlay="engine: {max_batch_size: 4}\n", time_scale=1.0) as sim:
        overlay = stack_a_overlay(tmp_path, sim, "hypotheses:\n  H0: {repetitions: 1, params: {context_tokens: 256, "
                                                 "max_tokens: 64, think_time_s: 0, nonce_per_user: true}}\n")
        env = {**os.environ, "SLO_TTFT_S": "0.2", "SLO_PERCENTILE": "90", "MODEL": "l70b"}
        proc = run_module("rig", "--config", str(overlay), "capacity", "H0", "--stack", "stackA", "--start", "3",
                          "--max", "16", "--duration-s", "3", env=env, timeout=380)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [found] = (tmp_path / "results").glob("capacity-*/capacity.json")
    result = json.loads(found.read_text())
    assert result["capacity"] == 4 and result["interval"] == [4, 5] and result["confirmed"], result
    assert result["slo"]["ttft_s"] == 0.2 and result["slo"]["percentile"] == 90
    assert [p["load"] for p in result["probes"]] == [3, 6, 4, 5, 4]       # x2, bisect, the answer again
    five = next(p for p in result["probes"] if p["load"] == 5)
    assert not five["meets"] and five["good_share"] < 0.9 and not math.isnan(five["ttft_p99_s"])
    assert "stackA serves 4 users, below 5 at TTFT <= 200 ms, TPOT <= 100 ms (90th percentile) with 256-token " \
           "contexts; confirmed by a repeat" in proc.stdout
    from analysis.document import Document
    from analysis.report import capacities, capacity_section
    doc = Document()
    capacity_section(capacities([found.parent], doc), doc)     # the report shows it, with its bracketing runs
    md = doc.markdown(tmp_path)
    assert result["said"] in md and "| [4, 5) |" in md
    assert all(p["run_id"] in md for p in result["probes"] if p["load"] in (4, 5))


@pytest.mark.timeout(200)
def test_capacity_per_tier_mode_restarts_stack_b_in_each(tmp_path):
    """`--tier-mode B0,B2`: one search per mode, each with Stack B (the simulator this command starts) restarted
    in that mode, each answer in its own directory; the simulator is gone afterwards."""
    overlay = pairs_overlay(tmp_path)
    overlay.write_text(overlay.read_text() + "  H0: {profile: stress, repetitions: 1, params: {context_tokens: 256, "
                                             "max_tokens: 8, think_time_s: 0}}\n")
    env = {**os.environ, "SLO_TTFT_S": "5", "SLO_PERCENTILE": "50", "MODEL": "l70b"}
    proc = run_module("rig", "--config", str(overlay), "capacity", "H0", "--tier-mode", "off,B2", "--start", "2",
                      "--max", "2", "--duration-s", "2", env=env, timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "simulated stackB (stress, B0)" in out and "simulated stackB (stress, B2)" in out
    found = {json.loads(p.read_text())["tier_mode"]: p for p in (tmp_path / "results").glob("capacity-*/capacity.json")}
    assert set(found) == {"B0", "B2"} and all(p.parent.name.endswith("-" + m) for m, p in found.items())
    for mode, path in found.items():
        result = json.loads(path.read_text())
        assert result["capacity"] == 2 and result["said"].startswith(f"stackB ({mode}) serves 2 users")
        runs = [json.loads((tmp_path / "results" / p["run_id"] / "manifest.json").read_text()) for p in result["probes"]]
        assert {m["tier_mode"] for m in runs} == {mode}
    assert "capacity per tier mode: stackB (B0) serves 2 users" in out
    left = [p for p in psutil.process_iter(["cmdline"]) if str(overlay) in " ".join(p.info["cmdline"] or ())]
    assert not left, left                                     # the simulator it started is stopped


def test_tier_modes_are_for_stack_b_only(tmp_path):
    proc = run_module("rig", "--config", str(pairs_overlay(tmp_path)), "capacity", "H0", "--stack", "stackA",
                      "--tier-mode", "B1")
    assert proc.returncode != 0 and "--tier-mode: only Stack B has tier modes" in proc.stderr
    proc = run_module("rig", "--config", str(pairs_overlay(tmp_path)), "capacity", "H0", "--tier-mode", "B9")
    assert proc.returncode != 0 and "--tier-mode: expected one of B0, B1, B2" in proc.stderr


@fault("29.H4", "a capacity probe whose every served step met the objective but one step served no request in "
       "its window (it never reached its target load, say)",
       "not judged (`… served no request to judge`): the search never brackets a load the stack was not seen "
       "to fail (it counted the step as the worst, `nan% good`, a failure)", ("cli:capacity=not measured",))
def test_a_step_with_nothing_to_judge_is_not_the_probes_failure():
    import pandas as pd
    from rig.capacity import verdict_of
    complete = {"status": "complete"}
    steps = pd.DataFrame([{"label": "concurrency=8", "good_share": 1.0, "meets_slo": True, "ttft_p99_s": 0.1,
                           "tpot_p99_s": 0.01},
                          {"label": "concurrency=8 rep 2", "good_share": math.nan, "meets_slo": math.nan,
                           "ttft_p99_s": math.nan, "tpot_p99_s": math.nan}])
    meets, why, numbers = verdict_of(steps, complete)
    assert (meets, numbers) == (False, {}) and why.startswith("concurrency=8 rep 2 served no request"), why
    failed = steps.copy()
    failed.loc[0, ["good_share", "meets_slo"]] = [0.5, False]     # a step seen to fail: the probe failed
    meets, why, numbers = verdict_of(failed, complete)
    assert not meets and numbers["good_share"] == 0.5 and why.startswith("50.0% good at concurrency=8 ")
    meets, _, numbers = verdict_of(steps.iloc[:1], complete)
    assert meets and numbers["good_share"] == 1.0
