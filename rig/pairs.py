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

Writes ``<results_dir>/pairs-<ts>/``: legs.csv, deltas.csv, comparisons.json, verdict.json, report.md.
"""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from analysis import gates as G
from analysis import pairs as P
from configs import Harness, load
from configs.model import TIER_MODES
from configs.paths import resolve
from configs.runfiles import CANCELLED_BY_STEP, read_manifest, read_records
from configs.tier_env import tier_env
from configs.vocabulary import series as S
from configs.vocabulary import stacks as V

from . import local
from .demo import run_locust, say, start_simulator, stop_simulator
from .procs import StartError, Supervisor

METRICS = ("ttfc_p50_ms", "ttfc_p95_ms", "ttfc_p99_ms", "throughput_rps")
BASELINE_FILE = "pairs_known_good_baseline.json"       # under results_dir: workload -> replay list hash
BASELINE_AUDIT = "pairs_baseline_audit.jsonl"           # append-only: every change of a known-good hash


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else math.nan


def kvbm_counters(url: str | None) -> dict | None:
    """Blocks onboarded from disk and bytes read from the tier2 file, now; None when unreachable."""
    if not url:
        return None
    try:
        text = requests.get(url, timeout=5).text
    except requests.RequestException:
        return None
    out = {"onboard_disk_blocks": 0.0, "tier2_read_bytes": math.nan}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in (V.KVBM + "onboard_blocks_d2d", V.KVBM + "onboard_blocks_d2d_total"):
                out["onboard_disk_blocks"] = s.value
            if s.name == S.SIM_TIER2_IO.total and s.labels.get("direction") == "read":
                out["tier2_read_bytes"] = s.value
    return out


def leg_metrics(results: Path, run_id: str) -> tuple[dict, int, str]:
    """Replay-phase TTFC percentiles and throughput, errors of the whole leg, and the metric used."""
    run = results / run_id
    manifest = read_manifest(run / "manifest.json")
    records = read_records(run / "requests.jsonl")
    blocked = (manifest.get("blocked") or {}).get("reason") or ""
    errors = sum(1 for r in records if not r["ok"] and r.get("error_class") != CANCELLED_BY_STEP
                 and not (r.get("status") == 400 and r.get("error") and r["error"] in blocked))
    replay = [r for r in records if r["phase"] == "replay" and r["ok"]]
    ttfc = [r["ttft_s"] * 1000 for r in replay if r.get("ttft_s") is not None]
    used = "ttfc"
    if not ttfc:                       # no chunk carried text: end-to-end time stands in, and it is said
        ttfc, used = [r["e2e_s"] * 1000 for r in replay if r.get("e2e_s") is not None], "ttft"
    steps = [s for s in manifest.get("steps", []) if s.get("phase") == "replay"]
    span = sum((s.get("end") or s["start"]) - s["start"] for s in steps) or math.nan
    return ({"ttfc_p50_ms": _pct(ttfc, .5), "ttfc_p95_ms": _pct(ttfc, .95), "ttfc_p99_ms": _pct(ttfc, .99),
             "throughput_rps": len(replay) / span, "replay_requests": len(replay)}, errors, used)


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


def preflight(cfg: Harness, need_kvbm: bool) -> list[str]:
    stack = cfg.stacks["stackB"]
    base = stack.openai_base.rsplit("/v1", 1)[0]
    codes = []
    try:
        if requests.get(base + "/health", timeout=5).status_code != 200:
            codes.append("PREFLIGHT_FRONTEND_UNHEALTHY")
    except requests.RequestException:
        return ["PREFLIGHT_FRONTEND_UNREACHABLE"]
    try:
        ids = [m.get("id") for m in requests.get(stack.openai_base + "/models", timeout=5).json().get("data", [])]
    except (requests.RequestException, ValueError):
        ids = []
    if cfg.models[cfg.hypotheses["H9"].model].handle not in ids and cfg.models[stack.model].handle not in ids:
        codes.append("PREFLIGHT_MODEL_NOT_REGISTERED")
    if need_kvbm and kvbm_counters(stack.kvbm_metrics_url) is None:
        codes.append("PREFLIGHT_KVBM_METRICS_UNREACHABLE")
    return codes


def _restart(cfg: Harness, sup: Supervisor, config: Path, mode: str, real: bool) -> None:
    if real:
        env = tier_env(cfg, cfg.hypotheses["H9"].profile, tier_mode=mode)
        command = os.environ["STACK_B_RESTART_CMD"]
        say(f"  restarting Stack B in {mode}: {command}")
        kept = {k: v for k, v in os.environ.items() if env.get(k, "") is not None}
        subprocess.run(command, shell=True, check=True, env={**kept, **{k: v for k, v in env.items() if v is not None}})
        return
    stop_simulator(sup, "stackB")
    start_simulator(cfg, sup, config, "stackB", cfg.hypotheses["H9"].profile, tier_mode=mode)


def run(config: Path | None, pairs: int, modes: tuple[str, str], concurrency: int, context_tokens: int,
        duration_s: int, mechanism_gate: bool, allow_missing_kvbm: bool, strict_baseline: bool = False,
        accept_baseline: bool = False) -> int:
    cfg = load(str(config) if config else None)
    real = bool(os.environ.get("STACK_B_RESTART_CMD"))
    a, b = modes
    ts = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = resolve(cfg.results_dir) / f"pairs-{ts}"
    out.mkdir(parents=True)
    sup = Supervisor(local.run_dir(cfg))
    legs: list[P.Leg] = []
    rows: list[dict] = []
    flags: list[str] = []
    running: list = []
    kvbm_url = cfg.stacks["stackB"].kvbm_metrics_url
    say(f"{pairs} pairs of {a} and {b} (AB/BA alternating), replay concurrency {concurrency}, {context_tokens} "
        f"tokens, {duration_s} s per phase; results in {out}")
    try:
        for pair in range(pairs):
            order = (a, b) if pair % 2 == 0 else (b, a)
            for position, mode in enumerate(order):
                _restart(cfg, sup, config, mode, real)
                if not legs:
                    codes = preflight(cfg, need_kvbm=not allow_missing_kvbm)
                    if codes:
                        return _stop(out, codes, "preflight failed: " + ", ".join(codes))
                before = kvbm_counters(kvbm_url)
                run_id = f"pairs-{ts}-p{pair}-l{position}-{mode}"
                say(f"[pair {pair + 1}/{pairs} leg {position + 1}: {mode}]")
                code, _ = run_locust("H9", "stackB", config or Path(os.environ.get("HARNESS_CONFIG", "")), running,
                                     (("CONCURRENCY", str(concurrency)), ("CONTEXT_TOKENS", str(context_tokens)),
                                      ("DURATION_S", str(duration_s)), ("TIER_MODE", mode), ("RUN_ID", run_id)))
                after = kvbm_counters(kvbm_url)
                metrics, errors, used = leg_metrics(resolve(cfg.results_dir), run_id)
                replay_hash = read_manifest(resolve(cfg.results_dir) / run_id / "manifest.json")[
                    "request_manifest_hash"]
                if not legs:
                    baseline = replay_hash
                    found = check_baseline(resolve(cfg.results_dir), f"H9:c{concurrency}:ctx{context_tokens}",
                                           replay_hash, strict_baseline, accept_baseline, out.name)
                    if "BASELINE_MANIFEST_MISMATCH" in found:
                        return _stop(out, found, "the replay list differs from the known-good baseline "
                                                 "(--accept-new-baseline to accept it)")
                    flags += found
                elif replay_hash != baseline and "REQUEST_MANIFEST_DIFFERS" not in flags:
                    flags.append("REQUEST_MANIFEST_DIFFERS")       # the legs did not replay the same requests
                onboard = (after["onboard_disk_blocks"] - before["onboard_disk_blocks"]) if before and after \
                    else math.nan
                read = (after["tier2_read_bytes"] - before["tier2_read_bytes"]) if before and after else math.nan
                leg = P.Leg(pair, "_".join(order), mode, metrics, errors, used)
                legs.append(leg)
                rows.append({"pair": pair, "order": leg.order, "position": position, "mode": mode, "run_id": run_id,
                             "request_manifest_hash": replay_hash,
                             **metrics, "errors": errors, "metric_used": used, "onboard_disk_blocks": onboard,
                             "tier2_read_bytes": read, "locust_exit": code})
                say(f"    TTFC p50 {metrics['ttfc_p50_ms']:.1f} ms, p99 {metrics['ttfc_p99_ms']:.1f} ms, "
                    f"{metrics['replay_requests']} replayed, {errors} errors, {onboard:g} blocks onboarded from disk")
                if mode == "B1" and G.b1_disk_off(onboard, read).status == "fail" \
                        and "B1_DISK_TIER_NOT_DISABLED" not in flags:
                    flags.append("B1_DISK_TIER_NOT_DISABLED")
                if mode == "B2" and sum(1 for r in rows if r["mode"] == "B2") == 1 and _mechanism(rows) is False:
                    if mechanism_gate:
                        _write(out, rows, legs, [], flags, modes)
                        return _stop(out, ["GATE_NO_SSD_MECHANISM_SIGNAL"], "the first B2 leg onboarded nothing "
                                     "from disk: no SSD mechanism to compare (--no-mechanism-gate to go on)")
                    flags.append("MECHANISM_GATE_DISABLED")
    except StartError as exc:
        return _stop(out, ["PREFLIGHT_STACK_DID_NOT_START"], str(exc))
    except KeyboardInterrupt:
        say("interrupted: the legs so far stay")
        _write(out, rows, legs, [P.compare(legs, m, a, b) for m in METRICS], flags, modes)
        return 130
    finally:
        for p in running:
            p.wait(timeout=30)
        if not real:
            sup.stop_all()
    comparisons = [P.compare(legs, m, a, b) for m in METRICS]
    verdict = _write(out, rows, legs, comparisons, flags, modes)
    say(f"verdict: {'decision-grade' if verdict['decision_grade'] else 'not decision-grade'} "
        f"({', '.join(verdict['reasons'])}); {out}")
    return 0


def _mechanism(rows: list[dict]) -> bool | None:
    b2 = [r for r in rows if r["mode"] == "B2"]
    if not b2 or all(math.isnan(r["onboard_disk_blocks"]) for r in b2):
        return None
    read = [r["tier2_read_bytes"] for r in b2 if not math.isnan(r["tier2_read_bytes"])]
    return any(r["onboard_disk_blocks"] > 0 for r in b2) and (not read or any(x > 0 for x in read))


def _write(out: Path, rows: list[dict], legs: list[P.Leg], comparisons: list, flags: list[str],
           modes: tuple[str, str]) -> dict:
    verdict = P.verdict(legs, comparisons, _mechanism(rows), tuple(flags))
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
        (out / "comparisons.json").write_text(json.dumps([_plain(asdict(c)) for c in comparisons], indent=2) + "\n")
    (out / "verdict.json").write_text(json.dumps(verdict, indent=2) + "\n")
    (out / "report.md").write_text(_report(rows, comparisons, verdict, modes))
    return verdict


def _plain(obj):
    """JSON without NaN: a value that could not be computed is null."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _num(x: float, spec: str = ".2f") -> str:
    return "n/a" if x is None or math.isnan(x) else format(x, spec)


def _report(rows: list[dict], comparisons: list, verdict: dict, modes: tuple[str, str]) -> str:
    a, b = modes
    lines = ["# Paired AB/BA repeats", "",
             f"**Verdict**: {'decision-grade' if verdict['decision_grade'] else 'not decision-grade'} "
             f"({', '.join(verdict['reasons'])})", "",
             f"Deltas are {b} − {a} within each pair; intervals are 95 % bootstrap intervals of the mean delta (none "
             f"below {P.MIN_PAIRS} pairs); p-values are exact two-sided Wilcoxon signed-rank and sign tests on the "
             f"pairs; the order effect is the mean delta of {a}-first pairs minus that of {b}-first pairs.", "",
             f"| metric | pairs | mean delta | 95 % interval | Wilcoxon p | sign p | order effect ({a}-first − {b}-first) |",
             "|---|---|---|---|---|---|---|"]
    for c in comparisons:
        lines.append(f"| {c.metric} | {len(c.deltas)} | {_num(c.mean)} | [{_num(c.ci[0])}, {_num(c.ci[1])}] | "
                     f"{_num(c.wilcoxon_p, '.3f')} | {_num(c.sign_p, '.3f')} | {_num(c.order_diff)} "
                     f"[{_num(c.order_ci[0])}, {_num(c.order_ci[1])}] |")
    lines += ["", "| pair | order | mode | TTFC p50 ms | TTFC p99 ms | replay req/s | errors | disk onboards |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['pair']} | {r['order']} | {r['mode']} | {_num(r['ttfc_p50_ms'], '.1f')} | "
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
    return run(Path(argv_args.config) if argv_args.config else None, argv_args.pairs, modes, argv_args.concurrency,
               argv_args.context_tokens, argv_args.duration_s, not argv_args.no_mechanism_gate,
               argv_args.allow_missing_kvbm, argv_args.strict_baseline, argv_args.accept_new_baseline)
