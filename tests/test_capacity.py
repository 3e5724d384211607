"""`rig capacity`: the search on its own (a probe whose answer is known), and end to end against a simulator
whose capacity under the objective is known: four batch slots, so a fifth closed-loop user always waits a
whole answer (~0.5 s) for one and misses a 0.2 s TTFT bound."""
import json
import math
import os

import pytest

from conftest import Sim, run_module, stack_a_overlay
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
    from analysis.report import capacity_section
    doc = Document()
    capacity_section([found.parent], doc)                      # the report shows it, with its bracketing runs
    md = doc.markdown(tmp_path)
    assert result["said"] in md and "| [4, 5) |" in md
    assert all(p["run_id"] in md for p in result["probes"] if p["load"] in (4, 5))
