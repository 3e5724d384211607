"""`python -m rig rehydrate`: the fixed-pressure rehydrate sweep (the later harness' Phase60).

For each tier mode (default B0, B1, B2) and each replay concurrency (default 1, 2, 4, 8): Stack B restarted
in that mode, one leg (populate → thrash → replay at that concurrency; the same pressure every time).
Per mode a knee table (replay TTFC p50/p99 and throughput by concurrency, the knee by the plan's rule:
p99 > 2 × p50 for two consecutive levels), and a **recommended replay concurrency** for the paired
repeats: where B2 − B1 differs most while both legs ran clean and B2 really read from its disk tier.

Writes ``<results_dir>/rehydrate-<ts>/``: sweep.csv, knees.json, recommendation.json, recommendation.md,
and storage-<run_id>.json per leg.
"""
from __future__ import annotations

import csv
import json
import math

from analysis.knee import find_knee
from configs import Harness, load
from configs.model import tier_mode

from .launch import Interrupt, Interrupted, experiment_dir, say
from .pairs import mechanism_of
from .procs import StartError


def recommend(rows: list[dict], a: str = "B1", b: str = "B2") -> dict:
    """The concurrency with the largest |TTFC p50 of b − a| among those where both ran to the end without
    errors and b read KV back from disk, its claim backed by bytes really read (rig.pairs.mechanism_of: KVBM's
    counters alone count hits whose transfer failed); the smallest such concurrency on a tie. None (with the
    reason) when none qualifies."""
    by = {(r["mode"], r["concurrency"]): r for r in rows}
    candidates = []
    for (mode, c), rb in sorted(by.items()):
        ra = by.get((a, c))
        if mode != b or ra is None:
            continue
        clean = not ra["errors"] and not rb["errors"] and mechanism_of([rb]).reason is None and \
            ra["run_status"] == rb["run_status"] == "complete"
        delta = rb["ttfc_p50_ms"] - ra["ttfc_p50_ms"]
        if clean and not math.isnan(delta):
            candidates.append((abs(delta), -c, c, delta))
    if not candidates:
        return {"replay_concurrency": None, "reason": f"no concurrency where {a} and {b} both ran clean and {b} "
                                                      "read from its disk tier (backed by bytes really read)"}
    _, _, c, delta = max(candidates)
    return {"replay_concurrency": c, "delta_ttfc_p50_ms": delta,
            "reason": f"largest |{b} − {a}| TTFC p50 among {len(candidates)} clean concurrencies"}


def knees(rows: list[dict]) -> dict:
    out = {}
    for mode in sorted({r["mode"] for r in rows}):
        mine = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["concurrency"])
        k = find_knee([r["concurrency"] for r in mine], [r["ttfc_p50_ms"] for r in mine],
                      [r["ttfc_p99_ms"] for r in mine])
        out[mode] = {"knee_concurrency": mine[k.knee_index]["concurrency"] if k.knee_index is not None else None,
                     "u_work": k.u_work, "reason": k.reason}
    return out


def run(cfg: Harness, modes: list[str], concurrencies: list[int], context_tokens: int, duration_s: int) -> int:
    out, ts = experiment_dir(cfg, "rehydrate")
    from .legs import LegError, LegRunner      # here: registering `rig rehydrate` costs none of the legs' imports
    runner = LegRunner(cfg, out)
    rows: list[dict] = []
    say(f"rehydrate sweep: modes {', '.join(modes)} x replay concurrency {', '.join(map(str, concurrencies))}, "
        f"{context_tokens} tokens, {duration_s} s per phase; results in {out}")
    stopped = None
    with Interrupt(runner.running) as stop:
        try:
            for mode in modes:
                for c in concurrencies:
                    stop.check()
                    runner.restart(mode)
                    if not rows:
                        codes = runner.preflight(need_kvbm=mode != "B0")
                        if codes:
                            say(f"error: preflight failed: {', '.join(codes)}")
                            (out / "recommendation.json").write_text(json.dumps({"replay_concurrency": None,
                                                                                 "reason": codes}, indent=2) + "\n")
                            return 2
                    stop.check()
                    say(f"[{mode} at replay concurrency {c}]")
                    rows.append(runner.run(mode, f"rehydrate-{ts}-{mode}-c{c}", c, context_tokens, duration_s))
            stop.check()
        except (StartError, LegError) as exc:         # the legs so far are written below all the same
            say(f"error: {exc}")
            stopped = (2, str(exc))
        except (Interrupted, KeyboardInterrupt) as exc:
            stopped = (getattr(exc, "code", 130), "INTERRUPTED")
        finally:
            runner.close()
    if rows:
        with open(out / "sweep.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    table, rec = knees(rows), recommend(rows)
    if stopped:      # a partial sweep's knee is no knee: what it would say is kept, and no recommendation
        rec = {"replay_concurrency": None, "reason": f"the sweep stopped after {len(rows)} of "
               f"{len(modes) * len(concurrencies)} legs ({stopped[1]}): no recommendation from a partial sweep",
               "partial": rec}
    (out / "knees.json").write_text(json.dumps(table, indent=2) + "\n")
    (out / "recommendation.json").write_text(json.dumps(rec, indent=2) + "\n")
    lines = ["# Rehydrate sweep (fixed pressure)", "",
             "| mode | replay concurrency | TTFC p50 ms | TTFC p99 ms | replay req/s | errors | disk onboards |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['concurrency']} | {r['ttfc_p50_ms']:.1f} | {r['ttfc_p99_ms']:.1f} | "
              f"{r['throughput_rps']:.2f} | {r['errors']} | {r['onboard_disk_blocks']:g} |" for r in rows]
    lines += ["", "| mode | knee at concurrency | U_work | |", "|---|---|---|---|"]
    lines += [f"| {m} | {k['knee_concurrency'] or '-'} | {k['u_work'] or '-'} | {k['reason']} |" for m, k in table.items()]
    lines += ["", f"**Recommended replay concurrency for `rig pairs`**: {rec['replay_concurrency'] or 'none'} "
                  f"({rec['reason']})"]
    (out / "recommendation.md").write_text("\n".join(lines) + "\n")
    say(f"recommended replay concurrency: {rec['replay_concurrency'] or 'none'} ({rec['reason']}); {out}")
    return stopped[0] if stopped else 0


def main(args) -> int:
    try:
        modes = [tier_mode(m, "--modes") for m in args.modes.split(",")]
        concurrencies = [int(c) for c in args.concurrencies.split(",")]
    except ValueError as exc:
        say(f"error: {exc}")
        return 2
    if not concurrencies or min(concurrencies) < 1:
        say(f"error: --concurrencies takes positive integers, got {args.concurrencies!r}")
        return 2
    return run(load(args.config), modes, sorted(set(concurrencies)), args.context_tokens,
               args.duration_s)


def register(sub) -> None:
    p = sub.add_parser("rehydrate", help="the fixed-pressure rehydrate sweep: replay concurrency x tier mode, "
                                         "knee tables, a recommended concurrency for `rig pairs`")
    p.add_argument("--modes", default="B0,B1,B2", help="tier modes to sweep (default B0,B1,B2)")
    p.add_argument("--concurrencies", default="1,2,4,8", help="replay concurrencies (default 1,2,4,8)")
    p.add_argument("--context-tokens", type=int, default=4096, help="session prefix length")
    p.add_argument("--duration-s", type=int, default=30, help="seconds per phase (populate, thrash, replay)")
    p.set_defaults(func=main)
