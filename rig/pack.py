"""`python -m rig pack`: a results pack from one `rig pairs` experiment, ready to hand on.

Writes ``<results_dir>/publish/<name>/`` with the summary tables (legs, per-pair deltas, comparisons),
the order check, the verdict, figures (each pair's delta with the interval; the CDF of replay TTFC per
tier mode), the configuration snapshot and a methodology text generated from what was run — so the
pack says what it is without the harness beside it.

Every path it builds — from ``--name``, the experiment argument, or what legs.csv says (the default name's
concurrency, the legs' run ids) — must lie under ``results_dir``, or the pack is refused with one
``error:`` line (exit 2). A pack of the same name is replaced only when the rig made it (its marker file):
any other directory there is left as it is.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from configs import load
from configs.paths import fresh_owned_dir, inside, make_dir, resolve, safe_join, write_file
from configs.runfiles import read_manifest, read_records

from .launch import say

COPIED = ("legs.csv", "deltas.csv", "comparisons.json", "verdict.json", "report.md")


def methodology(legs: list[dict], comparisons: list[dict], verdict: dict, manifest: dict) -> str:
    modes = sorted({r["mode"] for r in legs})
    pairs = sorted({int(r["pair"]) for r in legs})
    plan = manifest.get("plan", {})
    step = (plan.get("steps") or [{}])[0].get("params", {})
    return "\n".join([
        "# Methodology", "",
        f"Stack B in two KVBM tier modes ({' vs '.join(modes)}: B0 KVBM off, B1 CPU tier only, B2 CPU + SSD tiers), "
        f"compared in {len(pairs)} pairs. Each pair ran both modes back to back, the order alternating "
        f"({', '.join(sorted({r['order'] for r in legs}))}); Stack B was restarted with the leg's tier mode before "
        "every leg.", "",
        f"A leg is one rehydrate-replay run (hypothesis {manifest.get('hypothesis')}, model {manifest.get('model')}): "
        f"populate a fixed list of session prefixes, thrash with unique prompts until those prefixes leave the "
        f"fast tiers, replay the list. Replay concurrency {step.get('concurrency')}, context "
        f"{step.get('context_tokens')} tokens, {plan.get('step_duration_s')} s per phase, seed {manifest.get('seed')}; "
        f"every leg replayed the same deterministic list (request manifest hash "
        f"{manifest.get('request_manifest_hash')}).", "",
        "The latency is TTFC, the time to the first non-empty output chunk of the replay requests, as the load "
        "generator measured it on the client; throughput is replayed requests per second of the replay phase.", "",
        "Per metric, the delta of each pair (second mode − first mode) and their mean with a 95 % percentile "
        "bootstrap interval (10 000 resamples, fixed seed); exact two-sided Wilcoxon signed-rank and sign tests on "
        "the pairs; the order effect as the mean delta of pairs run in one order minus the other's, with its own "
        "bootstrap interval.", "",
        "Decision-grade requires the primary metric's interval to exclude zero, no order effect, no errors, the SSD "
        "mechanism seen in the B2 legs (KVBM onboarded from disk and the tier2 storage really read) and at least "
        f"three pairs. This experiment: **{'decision-grade' if verdict['decision_grade'] else 'not decision-grade'}** "
        f"({', '.join(verdict['reasons'])}).", "",
        f"Harness revision {_revision(manifest.get('git'))}, Locust {manifest.get('host', {}).get('locust', '?')}, "
        f"Python {manifest.get('host', {}).get('python', '?')}, host {manifest.get('host', {}).get('hostname', '?')}.",
        ""])


def _revision(git) -> str:
    if not isinstance(git, dict) or not git.get("commit"):
        return "unknown"
    return git["commit"][:12] + (" with uncommitted changes" if git.get("dirty") else "")


def pack(results: Path, experiment: Path, name: str) -> Path:
    from analysis import figures          # here: matplotlib loads only for a pack, not for every `rig` command
    legs = list(csv.DictReader(open(experiment / "legs.csv")))
    runs = {r["run_id"]: safe_join(results, r["run_id"]) for r in legs}        # before anything is written
    comparisons = json.loads((experiment / "comparisons.json").read_text())
    verdict = json.loads((experiment / "verdict.json").read_text())
    out = fresh_owned_dir(safe_join(results / "publish", name))
    make_dir(out / "figures")
    for f in [experiment / f for f in COPIED] + sorted(experiment.glob("storage-*.json")):
        write_file(out / f.name, f.read_bytes())
    write_file(out / "order_check.json", json.dumps(
        [{"metric": c["metric"], "order_diff": c["order_diff"], "order_ci": c["order_ci"],
          "order_effect": f"ORDER_EFFECT_{c['metric'].upper()}" in c["reasons"]} for c in comparisons], indent=2) + "\n")
    manifest = read_manifest(runs[legs[0]["run_id"]] / "manifest.json")
    write_file(out / "config.json", json.dumps({"plan": manifest.get("plan"), "config": manifest.get("config")},
                                               indent=1) + "\n")
    orders = {int(r["pair"]): r["order"] for r in legs}
    for c in comparisons:
        ci = tuple(float("nan") if x is None else x for x in c["ci"])
        figures.pair_deltas(c["deltas"], [orders[p] for p in sorted(orders)][:len(c["deltas"])],
                            c["mean"] if c["mean"] is not None else float("nan"), ci, c["metric"],
                            out / "figures" / f"deltas_{c['metric']}.png")
    by_mode: dict[str, list[float]] = {}
    for r in legs:
        for rec in read_records(runs[r["run_id"]] / "requests.jsonl", ("phase", "ok", "ttft_s")):
            if rec["phase"] == "replay" and rec["ok"] and rec["ttft_s"] is not None:
                by_mode.setdefault(r["mode"], []).append(rec["ttft_s"] * 1000)
    figures.ttfc_cdf(by_mode, out / "figures" / "ttfc_cdf.png")
    write_file(out / "methodology.md", methodology(legs, comparisons, verdict, manifest))
    return out


def main(args) -> int:
    cfg = load(args.config)
    results = resolve(cfg.results_dir)
    experiment = inside(results, Path(args.pairs) if "/" in args.pairs else results / args.pairs)
    if not (experiment / "legs.csv").exists() or not (experiment / "comparisons.json").exists():
        say(f"error: {experiment} is not a finished `rig pairs` experiment (no legs.csv or comparisons.json)")
        return 2
    legs = list(csv.DictReader(open(experiment / "legs.csv")))
    concurrency = legs[0].get("concurrency", "")
    name = args.name or f"{experiment.name}_pairs{len({r['pair'] for r in legs})}_c{concurrency}"
    out = pack(results, experiment, name)
    say(f"results pack: {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("pack", help="a results pack from one `rig pairs` experiment: tables, order check, "
                                    "verdict, figures, config snapshot, methodology")
    p.add_argument("pairs", help="the experiment: pairs-<ts> under results_dir, or its path")
    p.add_argument("--name", help="pack name under <results_dir>/publish/ (default from the experiment)")
    p.set_defaults(func=main)
