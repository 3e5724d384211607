"""Faults of the paired experiments (`rig pairs`, `rig rehydrate`) that need no full experiment: the legs'
rows, KVBM counters that restart mid-leg, and the preflight against a frontend that answers wrongly."""
from __future__ import annotations

import json
import math
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from analysis import paired as P
from conftest import run_module
from faultcase import fault

NAN = math.nan


BLOCK = 64 * 2**10


def b2(onboard=0.0, offload=0.0, tier2=NAN, process=NAN) -> dict:
    """A B2 leg's row: blocks onboarded from and offloaded to disk, their bytes, and the bytes really read."""
    return {"mode": "B2", "onboard_disk_blocks": onboard, "offload_disk_blocks": offload,
            "onboard_disk_bytes": onboard * BLOCK, "offload_disk_bytes": offload * BLOCK, "tier2_read_bytes": tier2,
            "process_read_bytes": process}


@fault("23.B3", "`rig pairs` on a real Stack B: KVBM's counters say blocks came from disk, but the serving process "
       "read nothing (or its reads are not observed)",
       "DISK_READS_NOT_BACKED, or TELEMETRY_MISSING where no reads are observed: not decision-grade",
       ("pairs:DISK_READS_NOT_BACKED", "pairs:TELEMETRY_MISSING"))
def test_kvbm_counters_alone_are_no_mechanism():
    from rig.pairs import mechanism_of
    assert mechanism_of([b2(onboard=300, offload=200, process=0.0)]).reason == "DISK_READS_NOT_BACKED"
    unseen = mechanism_of([b2(onboard=300, offload=200)])
    assert unseen.reason == "TELEMETRY_MISSING" and unseen.rehydrate and unseen.backed is None
    assert mechanism_of([b2(onboard=300, offload=200, process=40e6)]).reason is None
    assert mechanism_of([b2(onboard=300, offload=200, tier2=40e6)]).reason is None     # the simulator's own count
    # bytes read, but under half of the 19.7 MB KVBM claims: the analysis' own gate says not backed (#25.4)
    assert mechanism_of([b2(onboard=300, offload=200, process=1e6)]).reason == "DISK_READS_NOT_BACKED"
    # the serving process's reads come first: a tier2 file count cannot stand in for reads it did not do
    assert mechanism_of([b2(onboard=300, offload=200, tier2=40e6, process=0.0)]).reason == "DISK_READS_NOT_BACKED"
    v = P.verdict([], [], mechanism_of([b2(onboard=300, process=0.0)]))
    assert not v["decision_grade"] and "DISK_READS_NOT_BACKED" in v["reasons"]
    assert v["ssd_rehydrate_signal_present"] and v["ssd_rehydrate_backed_by_reads"] is False


@fault("28.1", "a B2 run with KVBM's disk-offload filter on (its default) moves nothing to or from the disk: "
       "blocks offloaded once never pass the filter", "ssd_mechanism and the pairs verdict say DISK_OFFLOAD_FILTER_ON "
       "with the fix, not a bare GATE_NO_SSD_MECHANISM_SIGNAL; with the filter off, nothing moved is still "
       "GATE_NO_SSD_MECHANISM_SIGNAL", ("gate:ssd_mechanism=DISK_OFFLOAD_FILTER_ON", "pairs:DISK_OFFLOAD_FILTER_ON"))
def test_no_disk_traffic_under_the_offload_filter_names_the_filter():
    from analysis import gates as G
    from rig.pairs import mechanism_of
    on = G.mechanism(0.0, 0.0, G.DiskReads(process=0.0), filter_on=True)
    assert (on.status, on.reason) == ("fail", "DISK_OFFLOAD_FILTER_ON")
    assert "DYN_KVBM_DISABLE_DISK_OFFLOAD_FILTER=true" in on.detail and "disk_offload_filter: false" in on.detail
    assert G.mechanism(0.0, 0.0, G.DiskReads(process=0.0)).reason == "GATE_NO_SSD_MECHANISM_SIGNAL"
    # traffic despite the filter (blocks offloaded twice) is judged as any other
    assert G.mechanism(8e6, 8e6, G.DiskReads(process=8e6), filter_on=True).status == "pass"
    assert mechanism_of([{**b2(), "disk_offload_filter": True}]).reason == "DISK_OFFLOAD_FILTER_ON"
    assert mechanism_of([{**b2(), "disk_offload_filter": None}]).reason == "GATE_NO_SSD_MECHANISM_SIGNAL"


@fault("28.7", "the method itself favours one tier mode: control legs whose working set stays in tier0 (where no "
       "offload can help) differ between B1 and B2", "CONTROL_DIFFERS: not decision-grade, whatever the main deltas; "
       "too few control pairs is a warning (CONTROL_TOO_FEW_PAIRS), a control that left tier0 too "
       "(CONTROL_NOT_IN_TIER0)", ("pairs:CONTROL_DIFFERS", "pairs:CONTROL_TOO_FEW_PAIRS", "pairs:CONTROL_NOT_IN_TIER0"))
def test_a_biased_control_makes_no_finding(tmp_path):
    from rig.pairs import control_flags

    def legs(bias, n=6):
        return [P.Leg(i, order, mode, {"ttfc_p50_ms": 50 + (i % 3) + (bias if mode == "B2" else 0)})
                for i in range(n) for order in (("B1_B2", "B2_B1")[i % 2],) for mode in order.split("_")]
    biased, fair = P.compare(legs(8.0), "ttfc_p50_ms"), P.compare(legs(0.0), "ttfc_p50_ms")
    assert P.control_reason(biased) == "CONTROL_DIFFERS" and P.control_reason(fair) is None
    assert P.control_reason(P.compare(legs(8.0, n=2), "ttfc_p50_ms")) == "CONTROL_TOO_FEW_PAIRS"
    def rows(bias, **over):           # as legs.csv has them: the control legs' rows, whole metrics and all
        return [{"pair": g.pair, "order": g.order, "mode": g.mode, "ttfc_p95_ms": 0.0, "ttfc_p99_ms": 0.0,
                 "throughput_rps": 1.0, **g.metrics, "errors": 0, "metric_used": "ttfc", "control": True,
                 "run_status": "complete", "onboard_disk_blocks": 0.0, **over} for g in legs(bias)]
    assert control_flags(tmp_path, rows(8.0), ("B1", "B2")) == ["CONTROL_DIFFERS"]
    assert json.loads((tmp_path / "control.json").read_text())["mean"] == 8.0
    assert control_flags(tmp_path, rows(0.0, onboard_disk_blocks=3.0), ("B1", "B2")) == ["CONTROL_NOT_IN_TIER0"]
    assert control_flags(tmp_path, rows(8.0, run_status="incomplete"), ("B1", "B2")) == ["CONTROL_TOO_FEW_PAIRS"]
    # an experiment cut short still says it: _write derives the control flags from the rows it keeps
    from rig.pairs import _write
    cut = _write(tmp_path, rows(8.0), [], [], ["INTERRUPTED"], ("B1", "B2"))
    assert "CONTROL_DIFFERS" in cut["reasons"] and (tmp_path / "control.json").exists()
    main = [P.Leg(i, o, m, {"ttfc_p50_ms": 100 + i + (20 if m == "B2" else 0)})
            for i in range(6) for o in (("B1_B2", "B2_B1")[i % 2],) for m in o.split("_")]
    comparisons = [P.compare(main, "ttfc_p50_ms")]
    backed = P.Mechanism(True, True, True)
    assert P.verdict(main, comparisons, backed)["decision_grade"]
    assert not P.verdict(main, comparisons, backed, ("CONTROL_DIFFERS",))["decision_grade"]
    assert P.verdict(main, comparisons, backed, ("CONTROL_TOO_FEW_PAIRS",))["decision_grade"]


class Kvbm:
    """KVBM's exposition on loopback as Dynamo 1.6.1 writes it (counters without ``_total``), its counters set
    by the test (a restart sets them lower)."""

    def __init__(self):
        from configs.vocabulary import stacks as V
        self.values = {}
        counters = self.values

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = "".join(f"# TYPE {V.KVBM}{k} counter\n{V.KVBM}{k} {v}\n" for k, v in counters.items())
                self.send_response(200)
                self.send_header("Content-Length", str(len(body.encode())))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *_a):
                pass
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@fault("23.B5", "KVBM restarts mid-leg and its counters start again from zero (after < before)",
       "the leg counts the growth since the restart (never a negative block count) and says counter_reset",
       ("pairs:GATE_NO_SSD_MECHANISM_SIGNAL",))
def test_a_counter_reset_mid_leg_is_no_negative_count(tmp_path):
    """A leg reads KVBM through the exporter's own collector (#25.4): the vocabulary's names, bytes from the
    block size it resolves, and its Monotonic carrying the counters across KVBM's restart."""
    from configs import load
    from rig.legs import grown, kv_evidence, kv_reader
    from rig.pairs import mechanism_of
    kvbm = Kvbm()
    overlay = tmp_path / "o.yaml"
    overlay.write_text(f"stacks:\n  stackB: {{kvbm_metrics_url: '{kvbm.url}'}}\n")
    kvbm.values.update(onboard_blocks_d2d=5000.0, offload_blocks_h2d=700.0)
    reader = kv_reader(load(str(overlay)), "spill")
    before = kv_evidence(reader)
    kvbm.values.update(onboard_blocks_d2d=1986.0, offload_blocks_h2d=10.0)    # restarted, then moved some
    after = kv_evidence(reader)
    kvbm.server.shutdown()
    leg = grown(before, after)
    assert (leg["onboard_disk_blocks"], leg["offload_disk_blocks"], leg["counter_reset"]) == (1986.0, 10.0, True)
    assert leg["onboard_disk_bytes"] == 1986.0 * after["onboard_disk_bytes"] / (5000.0 + 1986.0)
    assert math.isnan(leg["tier2_read_bytes"])                   # not exposed: unknown, not zero
    assert kv_evidence(reader) is None and math.isnan(grown(before, None)["onboard_disk_blocks"])   # KVBM gone
    # the leg that lost 3014 blocks to a reset onboarded 1986 since: a mechanism, not an early stop
    assert mechanism_of([{**b2(), **leg, "process_read_bytes": leg["onboard_disk_bytes"]}]).reason is None
    assert mechanism_of([b2(onboard=0.0, offload=0.0)]).reason == "GATE_NO_SSD_MECHANISM_SIGNAL"


@fault("pairs.flags", "no metric could be compared; the early gate overridden; legs that replayed other requests",
       "NO_COMPARISON, MECHANISM_GATE_DISABLED and REQUEST_MANIFEST_DIFFERS each keep the verdict from "
       "decision grade", ("pairs:NO_COMPARISON", "pairs:MECHANISM_GATE_DISABLED", "pairs:REQUEST_MANIFEST_DIFFERS"))
def test_flags_block_decision_grade():
    seen = P.Mechanism(True, True, True)
    assert P.verdict([], [], seen)["reasons"] == ["NO_COMPARISON"]
    for flag in ("MECHANISM_GATE_DISABLED", "REQUEST_MANIFEST_DIFFERS"):
        v = P.verdict([], [], seen, (flag,))
        assert flag in v["reasons"] and not v["decision_grade"]


class Frontend:
    """A frontend that answers /health with ``health`` and lists ``models``; KVBM's port is closed."""

    def __init__(self, health: int, models: list[str]):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps({"data": [{"id": m} for m in models]} if self.path.endswith("/models")
                                  else {"status": "x"}).encode()
                self.send_response(health if self.path == "/health" else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_a):
                pass
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stack_b_overlay(tmp_path, base: str):
    """An overlay putting Stack B's frontend at ``base`` and its KVBM metrics on a closed port."""
    overlay = tmp_path / "o.yaml"
    overlay.write_text(f"""results_dir: {tmp_path / 'results'}
run_dir: {tmp_path / 'run'}
stacks:
  stackB: {{openai_base: '{base}/v1', metrics_url: '{base}/metrics',
            kvbm_metrics_url: 'http://127.0.0.1:{closed_port()}/metrics'}}
""")
    return overlay


@fault("pairs.preflight", "a Stack B frontend that says unhealthy, lists no model, and whose KVBM metrics are closed",
       "PREFLIGHT_FRONTEND_UNHEALTHY, PREFLIGHT_MODEL_NOT_REGISTERED and PREFLIGHT_KVBM_METRICS_UNREACHABLE, "
       "before any leg", ("pairs:PREFLIGHT_FRONTEND_UNHEALTHY", "pairs:PREFLIGHT_MODEL_NOT_REGISTERED",
                          "pairs:PREFLIGHT_KVBM_METRICS_UNREACHABLE"))
def test_preflight_says_what_is_wrong(tmp_path, monkeypatch):
    from configs import load
    from rig.legs import LegRunner
    fe = Frontend(503, [])
    overlay = stack_b_overlay(tmp_path, fe.base)
    monkeypatch.delenv("STACK_B_RESTART_CMD", raising=False)
    runner = LegRunner(load(str(overlay)), tmp_path)
    assert runner.preflight(need_kvbm=True) == ["PREFLIGHT_FRONTEND_UNHEALTHY", "PREFLIGHT_MODEL_NOT_REGISTERED",
                                                "PREFLIGHT_KVBM_METRICS_UNREACHABLE"]
    fe.server.shutdown()


@fault("pairs.nostart", "the simulated Stack B cannot start for a leg (its port is taken by something else)",
       "the experiment stops with PREFLIGHT_STACK_DID_NOT_START and says why in one line",
       ("pairs:PREFLIGHT_STACK_DID_NOT_START",))
def test_a_stack_that_cannot_start_stops_the_experiment(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    overlay = stack_b_overlay(tmp_path, f"http://127.0.0.1:{port}")
    try:
        proc = run_module("rig", "--config", str(overlay), "pairs", "--pairs", "1", timeout=120)
    finally:
        busy.close()
    verdicts = list((tmp_path / "results").glob("pairs-*/verdict.json"))
    assert verdicts, proc.stdout + proc.stderr
    assert json.loads(verdicts[0].read_text())["reasons"] == ["PREFLIGHT_STACK_DID_NOT_START"], proc.stdout
    assert "Traceback" not in proc.stderr


def test_a_failing_restart_command_is_one_line(tmp_path):
    """A real Stack B whose STACK_B_RESTART_CMD fails: the same stop, with the command's status, no traceback."""
    overlay = stack_b_overlay(tmp_path, f"http://127.0.0.1:{closed_port()}")
    proc = run_module("rig", "--config", str(overlay), "pairs", "--pairs", "1",
                      env={**os.environ, "STACK_B_RESTART_CMD": "exit 3"}, timeout=60)
    assert proc.returncode == 2 and "STACK_B_RESTART_CMD exited with status 3" in proc.stdout, proc.stdout
    [verdict] = (tmp_path / "results").glob("pairs-*/verdict.json")
    assert json.loads(verdict.read_text())["reasons"] == ["PREFLIGHT_STACK_DID_NOT_START"]
    assert "Traceback" not in proc.stderr


@fault("24.7", "`rig pairs --allow-missing-kvbm` on a frontend without KVBM whose every leg ran blocked "
       "(session_id refused)", "LEG_BLOCKED and MODES_NOT_DISTINCT keep it from decision grade; report.md shows "
       "its deltas as no finding", ("pairs:LEG_BLOCKED", "pairs:MODES_NOT_DISTINCT"))
def test_blocked_legs_between_modes_the_stack_cannot_tell_apart_are_no_finding(tmp_path):
    from rig.pairs import METRICS, _write, leg_flags
    rows, legs = [], []
    for pair in range(8):
        order = ("B1", "B2") if pair % 2 == 0 else ("B2", "B1")
        for position, mode in enumerate(order):
            metrics = {m: 100.0 + pair + (5.6 if mode == "B2" else 0.0) for m in METRICS}
            rows.append({"pair": pair, "order": "_".join(order), "position": position, "mode": mode, **metrics,
                         "errors": 0, "metric_used": "ttfc", "onboard_disk_blocks": NAN, "offload_disk_blocks": NAN,
                         "onboard_disk_bytes": NAN, "offload_disk_bytes": NAN, "tier2_read_bytes": NAN,
                         "process_read_bytes": NAN,
                         "blocked": "Unsupported parameter(s): `session_id`"})
            legs.append(P.Leg(pair, "_".join(order), mode, metrics))
    assert leg_flags(rows) == ["LEG_BLOCKED", "MODES_NOT_DISTINCT"]
    assert leg_flags([{**r, "blocked": "", "onboard_disk_blocks": 0.0} for r in rows]) == []
    comparisons = [P.compare(legs, m, "B1", "B2") for m in METRICS]
    assert comparisons[0].excludes_zero                          # a "clear" 5.6 ms delta, between identical modes
    verdict = _write(tmp_path, rows, legs, comparisons, [], ("B1", "B2"))
    assert not verdict["decision_grade"] and {"LEG_BLOCKED", "MODES_NOT_DISTINCT"} <= set(verdict["reasons"])
    assert "**Not a finding**" in (tmp_path / "report.md").read_text()


@fault("29.H3", "six B2 legs, one of them backed by the serving process's reads and five whose KVBM counters "
       "could not be read (KVBM unreachable at the leg's end)",
       "TELEMETRY_MISSING: one backed leg does not vouch for five unseen (the experiment was decision-grade)",
       ("pairs:TELEMETRY_MISSING",))
def test_one_backed_leg_does_not_vouch_for_legs_nobody_saw():
    from rig.pairs import mechanism_of
    unseen = {**b2(), "onboard_disk_bytes": NAN, "offload_disk_bytes": NAN}
    mech = mechanism_of([b2(onboard=300, offload=200, process=40e6)] + [unseen] * 5)
    assert (mech.rehydrate, mech.backed, mech.reason) == (True, None, "TELEMETRY_MISSING")
    assert mechanism_of([b2(onboard=300, offload=200, process=40e6)] * 6).reason is None
    # a leg whose claim the reads refute still refutes, seen or not the others
    assert mechanism_of([b2(onboard=300, offload=200, process=0.0), unseen]).reason == "DISK_READS_NOT_BACKED"


@fault("29.H5", "a B1 leg whose KV counters could not be read: its disk tier may have been on, nobody saw",
       "TELEMETRY_MISSING among the experiment's reasons (it was ignored: only a B1 leg seen reading the disk "
       "counted), so the experiment is not decision-grade", ("pairs:TELEMETRY_MISSING",))
def test_a_b1_leg_nobody_could_check_is_no_b1():
    from rig.pairs import b1_flag
    assert b1_flag({"onboard_disk_bytes": NAN, "tier2_read_bytes": NAN}) == "TELEMETRY_MISSING"
    assert b1_flag({"onboard_disk_bytes": 0.0, "tier2_read_bytes": NAN}) is None
    assert b1_flag({"onboard_disk_bytes": 4e6, "tier2_read_bytes": NAN}) == "B1_DISK_TIER_NOT_DISABLED"
    verdict = P.verdict([], [], P.Mechanism(True, True, True), overrides=("TELEMETRY_MISSING",))
    assert not verdict["decision_grade"] and "TELEMETRY_MISSING" in verdict["reasons"]
