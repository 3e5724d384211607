"""`python -m rig pairs`: paired AB/BA repeats of the rehydrate replay between two KVBM tier modes.

Each pair runs mode A and mode B back to back (B1 then B2, or B2 then B1, alternating: counterbalanced),
Stack B restarted with the leg's tier mode before every leg (the simulator with ``--tier-mode``; a real
worker through STACK_B_RESTART_CMD with the tier variables). A leg is one H9 run: populate, thrash,
replay; its replay-phase TTFC (time to the first non-empty chunk) is the primary latency.

Before the first leg: preflight (frontend health, model registered, KVBM metrics reachable) with
``PREFLIGHT_*`` codes. After the first B2 leg: the early mechanism gate (KVBM onboarded blocks from disk
and the tier2 file or disk really read) stops the experiment (``GATE_NO_SSD_MECHANISM_SIGNAL``) unless
``--no-mechanism-gate``, which then marks the verdict not decision-grade. A B1 leg that read from the
disk tier is flagged ``B1_DISK_TIER_NOT_DISABLED``.

Writes ``<results_dir>/pairs-<ts>/``: legs.csv, deltas.csv, comparisons.json, verdict.json, report.md, and
per leg storage-<run_id>.json (the tier2 disk's identity and health log, the serving process's I/O, before
and after).
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from analysis.jsonout import json_safe
from configs import Harness, load, spill
from configs.model import TIER_MODES

from .launch import Interrupt, Interrupted, experiment_dir, say
from .procs import StartError

if TYPE_CHECKING:
    from analysis import paired as P
# The statistics, the gates and the legs are imported where they are used: `python -m rig` registers every
# command at start, and their imports (pandas, the collectors) would cost each command a second.

METRICS = ("ttfc_p50_ms", "ttfc_p95_ms", "ttfc_p99_ms", "throughput_rps")
BASELINE_FILE = "pairs_known_good_baseline.json"       # under results_dir: workload -> replay list hash
BASELINE_AUDIT = "pairs_baseline_audit.jsonl"           # append-only: every change of a known-good hash


def check_baseline(results: Path, key: str, found: str, strict: bool, accept: bool, run: str) -> list[str]:
    """Compare the replay list's hash with the known-good one for this workload ``key``. The first one seen
    is kept; a different one is a warning (``BASELINE_MANIFEST_CHANGED``), a stop in strict mode
    (``BASELINE_MANIFEST_MISMATCH``), or with ``accept`` the new known-good one; every change of the
    known-good hash is a line appended to the audit file."""
    known_path, audit = results / BASELINE_FILE, results / BASELINE_AUDIT
    known = json.loads(known_path.read_text()) if known_path.exists() else {}
    previous = known.get(key)
    if previous == found:
        return []
    if previous is not None and not accept:
        return ["BASELINE_MANIFEST_MISMATCH" if strict else "BASELINE_MANIFEST_CHANGED"]
    known[key] = found
    known_path.write_text(json.dumps(known, indent=2, sort_keys=True) + "\n")
    with open(audit, "a") as f:
        f.write(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "key": key,
                            "previous": previous, "accepted": found, "run": run}) + "\n")
    return []


def run(cfg: Harness, pairs: int, modes: tuple[str, str], concurrency: int, context_tokens: int,
        duration_s: int, mechanism_gate: bool, allow_missing_kvbm: bool, strict_baseline: bool = False,
        accept_baseline: bool = False, control: bool = False) -> int:
    from analysis import gates as G
    from analysis import paired as P
    from .legs import LegError, LegRunner
    a, b = modes
    control_tokens = spill.control_context(cfg, concurrency) if control else None
    out, ts = experiment_dir(cfg, "pairs")
    runner = LegRunner(cfg, out)
    legs: list[P.Leg] = []
    rows: list[dict] = []
    flags: list[str] = []
    baseline = None
    say(f"{pairs} pairs of {a} and {b} (AB/BA alternating), replay concurrency {concurrency}, {context_tokens} "
        f"tokens, {duration_s} s per phase; results in {out}"
        + (f"; each pair with control legs of {control_tokens}-token prefixes and no thrash (they stay in tier0)"
           if control else ""))
    with Interrupt(runner.running) as stop:
        try:
            for pair in range(pairs):
                order = (a, b) if pair % 2 == 0 else (b, a)
                for position, mode in enumerate(order):
                    stop.check()
                    runner.restart(mode)
                    if not rows:
                        codes = runner.preflight(need_kvbm=not allow_missing_kvbm)
                        if codes:
                            return _stop(out, codes, "preflight failed: " + ", ".join(codes))
                    stop.check()
                    say(f"[pair {pair + 1}/{pairs} leg {position + 1}: {mode}]")
                    row = runner.run(mode, f"pairs-{ts}-p{pair}-l{position}-{mode}", concurrency, context_tokens,
                                     duration_s)
                    rows.append({"pair": pair, "order": "_".join(order), "position": position, **row})
                    if row["run_status"] != "complete":     # cut short: kept in legs.csv, compared with nothing
                        continue
                    if not legs:
                        baseline = row["request_manifest_hash"]
                        found = check_baseline(runner.results, f"H9:c{concurrency}:ctx{context_tokens}", baseline,
                                               strict_baseline, accept_baseline, out.name)
                        if "BASELINE_MANIFEST_MISMATCH" in found:
                            return _stop(out, found, "the replay list differs from the known-good baseline "
                                                     "(--accept-new-baseline to accept it)")
                        flags += found
                    elif row["request_manifest_hash"] != baseline and "REQUEST_MANIFEST_DIFFERS" not in flags:
                        flags.append("REQUEST_MANIFEST_DIFFERS")       # the legs did not replay the same requests
                    legs.append(P.Leg(pair, "_".join(order), mode, {m: row[m] for m in METRICS}, row["errors"],
                                      row["metric_used"]))
                    if mode == "B1" and (found := b1_flag(row)) and found not in flags:
                        flags.append(found)
                    gate = mechanism_of(compared(rows)).reason
                    if mode == "B2" and sum(1 for r in compared(rows) if r["mode"] == "B2") == 1 and gate and \
                            gate != "TELEMETRY_MISSING":
                        if mechanism_gate:
                            _write(out, rows, legs, [], flags, modes)
                            hint = f"; {G.FILTER_HINT}" if gate == "DISK_OFFLOAD_FILTER_ON" else ""
                            return _stop(out, [gate], "the first B2 leg read nothing back from its disk tier "
                                         f"({gate}): no SSD mechanism to compare (--no-mechanism-gate to go "
                                         f"on){hint}")
                        flags.append("MECHANISM_GATE_DISABLED")
                for position, mode in enumerate(order if control else ()):
                    stop.check()
                    runner.restart(mode)
                    say(f"[pair {pair + 1}/{pairs} control leg {position + 1}: {mode}]")
                    row = runner.run(mode, f"pairs-{ts}-p{pair}-c{position}-{mode}", concurrency, control_tokens,
                                     duration_s, control=True)
                    rows.append({"pair": pair, "order": "_".join(order), "position": position, **row})
            stop.check()
        except StartError as exc:
            return _stop(out, ["PREFLIGHT_STACK_DID_NOT_START"], str(exc))
        except LegError as exc:                      # what ran stays, with the reason it stopped
            _write(out, rows, legs, [P.compare(legs, m, a, b) for m in METRICS], flags, modes)
            return _stop(out, ["LEG_FAILED"], str(exc))
        except (Interrupted, KeyboardInterrupt) as exc:
            _write(out, rows, legs, [P.compare(legs, m, a, b) for m in METRICS], flags + ["INTERRUPTED"], modes)
            say(f"interrupted: {len(legs)} finished leg(s) of {2 * pairs} kept in {out}; not decision-grade")
            return getattr(exc, "code", 130)
        finally:
            runner.close()
    comparisons = [P.compare(legs, m, a, b) for m in METRICS]
    verdict = _write(out, rows, legs, comparisons, flags, modes)
    say(f"verdict: {'decision-grade' if verdict['decision_grade'] else 'not decision-grade'} "
        f"({', '.join(verdict['reasons'])}); {out}")
    return 0


def compared(rows: list[dict]) -> list[dict]:
    """The legs compared (the control legs apart)."""
    return [r for r in rows if not r.get("control")]


def control_flags(out: Path, rows: list[dict], modes: tuple[str, str]) -> list[str]:
    """What the control legs that ran to the end say of the method (analysis.paired.control_reason), their
    comparison kept in control.json; a control leg that onboarded from disk left tier0 and controls nothing.
    From the rows, so an experiment cut short says it too."""
    from analysis import paired as P
    controls = [P.Leg(r["pair"], r["order"], r["mode"], {m: r[m] for m in METRICS}, r["errors"], r["metric_used"])
                for r in rows if r.get("control") and r["run_status"] == "complete"]
    c = P.compare(controls, METRICS[0], *modes)
    (out / "control.json").write_text(json.dumps(json_safe(asdict(c)), indent=2) + "\n")
    flags = [r for r in (P.control_reason(c),) if r]
    if any(r["onboard_disk_blocks"] > 0 for r in rows if r.get("control")):
        flags.append("CONTROL_NOT_IN_TIER0")
    say(f"control ({METRICS[0]}, {modes[1]} - {modes[0]}): mean {c.mean:.2f} over {len(c.deltas)} pair(s)"
        + (f": {', '.join(flags)}" if flags else ": no difference beyond noise"))
    return flags


def leg_flags(rows: list[dict]) -> list[str]:
    """What the legs themselves say against a comparison: a leg that ran blocked, and legs of which none
    showed KVBM (B1 and B2 are then one and the same stack, whatever their deltas)."""
    flags = ["LEG_BLOCKED"] if any(r.get("blocked") for r in rows) else []
    if rows and all(math.isnan(r["onboard_disk_blocks"]) and math.isnan(r["offload_disk_blocks"]) for r in rows):
        flags.append("MODES_NOT_DISTINCT")
    return flags


def b1_flag(row: dict) -> Optional[str]:
    """What a B1 leg says of its own tier mode: its disk tier off, seen (the analysis' b1_disk_off gate);
    a B1 leg whose KV counters nobody could read is no evidence of a B1 at all."""
    from analysis import gates as G
    status = G.b1_disk_off(row["onboard_disk_bytes"], row["tier2_read_bytes"]).status
    return {"fail": "B1_DISK_TIER_NOT_DISABLED", "missing": "TELEMETRY_MISSING"}.get(status)


def mechanism_of(rows: list[dict]) -> P.Mechanism:
    """What the B2 legs showed: KV written to the disk tier; onboarded from it (KVBM's counters); and each
    claiming leg's claim backed by bytes really read, judged by the analysis' own ssd_mechanism gate (the
    serving process's reads where observed, else the simulator's tier2 file count, and at least half the
    bytes KVBM claims): not backed where any leg's claim is not, unknown where any leg's cannot be checked,
    KVBM's counters unread for a leg included (one backed leg does not vouch for five unseen)."""
    from analysis import gates as G
    from analysis import paired as P
    b2 = [r for r in rows if r["mode"] == "B2"]
    if not b2 or all(math.isnan(r["onboard_disk_bytes"]) for r in b2):
        return P.Mechanism(None, None)
    claimed = [r for r in b2 if r["onboard_disk_bytes"] > 0]
    gates = [G.mechanism(r["offload_disk_bytes"], r["onboard_disk_bytes"],
                         G.DiskReads(process=r.get("process_read_bytes", math.nan), file=r["tier2_read_bytes"]))
             for r in claimed]
    unseen = any(math.isnan(r["onboard_disk_bytes"]) for r in b2)
    backed = False if any(g.reason == "DISK_READS_NOT_BACKED" for g in gates) else \
        True if gates and not unseen and all(g.status == "pass" for g in gates) else None
    # None where no leg's offload counts its disk writes (TensorRT-LLM's counts none): unknown, not "no writes"
    written = None if all(math.isnan(r["offload_disk_bytes"]) for r in b2) else \
        any(r["offload_disk_bytes"] > 0 for r in b2)
    return P.Mechanism(write=written, rehydrate=bool(claimed), backed=backed,
                       filter_on=any(r.get("disk_offload_filter") is True for r in b2))


def _write(out: Path, rows: list[dict], legs: list[P.Leg], comparisons: list, flags: list[str],
           modes: tuple[str, str]) -> dict:
    from analysis import paired as P
    if any(r.get("control") for r in rows):
        flags = flags + control_flags(out, rows, modes)
    verdict = P.verdict(legs, comparisons, mechanism_of(compared(rows)), tuple(flags + leg_flags(compared(rows))))
    if rows:
        with open(out / "legs.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    if comparisons:
        with open(out / "deltas.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["pair", "order"] + [f"delta_{c.metric}" for c in comparisons])
            orders = {leg.pair: leg.order for leg in legs}
            complete = sorted({leg.pair for leg in legs if sum(1 for x in legs if x.pair == leg.pair) == 2})
            for i, pair in enumerate(complete):
                w.writerow([pair, orders[pair]] + [c.deltas[i] if i < len(c.deltas) else "" for c in comparisons])
        (out / "comparisons.json").write_text(json.dumps([json_safe(asdict(c)) for c in comparisons], indent=2) + "\n")
    (out / "verdict.json").write_text(json.dumps(verdict, indent=2) + "\n")
    (out / "report.md").write_text(_report(rows, comparisons, verdict, modes))
    return verdict


def _num(x: float, spec: str = ".2f") -> str:
    return "n/a" if x is None or math.isnan(x) else format(x, spec)


def _report(rows: list[dict], comparisons: list, verdict: dict, modes: tuple[str, str]) -> str:
    from analysis import paired as P
    a, b = modes
    lines = ["# Paired AB/BA repeats", "",
             f"**Verdict**: {'decision-grade' if verdict['decision_grade'] else 'not decision-grade'} "
             f"({', '.join(verdict['reasons'])})", "",
             f"Deltas are {b} − {a} within each pair; intervals are 95 % bootstrap intervals of the mean delta (none "
             f"below {P.MIN_PAIRS} pairs); p-values are exact two-sided Wilcoxon signed-rank and sign tests on the "
             f"pairs; the order effect is the mean delta of {a}-first pairs minus that of {b}-first pairs.", "",
             *([] if verdict["decision_grade"] else
               [f"**Not a finding**: the deltas below are shown for diagnosis only ({', '.join(verdict['reasons'])}).",
                ""]),
             f"| metric | pairs | mean delta | 95 % interval | Wilcoxon p | sign p | order effect ({a}-first − {b}-first) |",
             "|---|---|---|---|---|---|---|"]
    for c in comparisons:
        lines.append(f"| {c.metric} | {len(c.deltas)} | {_num(c.mean)} | [{_num(c.ci[0])}, {_num(c.ci[1])}] | "
                     f"{_num(c.wilcoxon_p, '.3f')} | {_num(c.sign_p, '.3f')} | {_num(c.order_diff)} "
                     f"[{_num(c.order_ci[0])}, {_num(c.order_ci[1])}] |")
    lines += ["", "| pair | order | mode | TTFC p50 ms | TTFC p99 ms | replay req/s | errors | disk onboards |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mode = f"{r['mode']} (control)" if r.get("control") else r["mode"]
        lines.append(f"| {r['pair']} | {r['order']} | {mode} | {_num(r['ttfc_p50_ms'], '.1f')} | "
                     f"{_num(r['ttfc_p99_ms'], '.1f')} | {_num(r['throughput_rps'])} | {r['errors']} | "
                     f"{_num(r['onboard_disk_blocks'], 'g')} |")
    return "\n".join(lines) + "\n"


def _stop(out: Path, codes: list[str], message: str) -> int:
    say(f"error: {message}")
    (out / "verdict.json").write_text(json.dumps({"decision_grade": False, "reasons": codes, "primary_metric": None},
                                                 indent=2) + "\n")
    return 2


def main(argv_args) -> int:
    modes = tuple(m.strip().upper() for m in argv_args.modes.split(","))
    if len(modes) != 2 or any(m not in TIER_MODES for m in modes) or modes[0] == modes[1]:
        say(f"error: --modes takes two different tier modes of {', '.join(TIER_MODES)}, got {argv_args.modes!r}")
        return 2
    return run(load(argv_args.config), argv_args.pairs, modes, argv_args.concurrency,
               argv_args.context_tokens, argv_args.duration_s, not argv_args.no_mechanism_gate,
               argv_args.allow_missing_kvbm, argv_args.strict_baseline, argv_args.accept_new_baseline,
               argv_args.control)


def register(sub) -> None:
    p = sub.add_parser("pairs", help="paired AB/BA repeats of the rehydrate replay between two tier modes "
                                     "(default B1 vs B2): deltas, intervals, tests, order check, verdict")
    p.add_argument("--pairs", type=int, default=6, help="number of pairs (default 6; fewer than 3 give no interval)")
    p.add_argument("--modes", default="B1,B2", help="the two tier modes, A then B; deltas are B - A")
    p.add_argument("--concurrency", type=int, default=4, help="users in every phase (the replay concurrency)")
    p.add_argument("--context-tokens", type=int, default=4096, help="session prefix length")
    p.add_argument("--duration-s", type=int, default=30, help="seconds per phase (populate, thrash, replay)")
    p.add_argument("--no-mechanism-gate", action="store_true",
                   help="go on when the first B2 leg shows no SSD mechanism (then never decision-grade)")
    p.add_argument("--allow-missing-kvbm", action="store_true",
                   help="go on without KVBM metrics (then never decision-grade: TELEMETRY_MISSING)")
    p.add_argument("--strict-baseline", action="store_true",
                   help="stop when the replay list differs from the known-good baseline (default: warn)")
    p.add_argument("--control", action="store_true",
                   help="each pair also runs control legs: short prefixes, no thrash, inside tier0, where no tier "
                        "mode can help; a difference there is the method's bias (CONTROL_DIFFERS)")
    p.add_argument("--accept-new-baseline", action="store_true",
                   help="make this run's replay list the known-good baseline (an audit line is appended)")
    p.set_defaults(func=main)
