"""`python -m rig hygiene`: keep the results directory high-signal by archiving trial runs.

A trial is a run that did not finish (manifest ``running`` or ``incomplete``), one without a single
recorded request, one whose manifest is damaged, or a `rig pairs` / `rig rehydrate` experiment that
never reached its verdict (with the legs that belong to it). Dry run by default: it lists what it would
move and why; ``--execute`` moves them under ``<results_dir>/trials/<tag>/``. ``--keep`` names runs to
leave alone. Nothing is ever deleted.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from configs import load
from configs.paths import resolve
from configs.runfiles import read_manifest

from .launch import say

FINISHED = {"pairs": "verdict.json", "rehydrate": "recommendation.json"}
NOT_RUNS = {"trials", "publish", "report"}


def trials(results: Path, keep: set[str]) -> list[tuple[Path, str]]:
    """(directory, reason) for every trial under ``results``."""
    found = []
    experiments = {}
    for d in sorted(p for p in results.iterdir() if p.is_dir() and p.name not in NOT_RUNS):
        kind = d.name.split("-", 1)[0]
        if kind in FINISHED and not (d / "manifest.json").exists():          # an experiment, not a run
            experiments[d.name] = (d / FINISHED[kind]).exists()
            if not experiments[d.name] and d.name not in keep:
                found.append((d, f"{kind} experiment without its {FINISHED[kind]}"))
            continue
        if d.name in keep or not (d / "manifest.json").exists():
            continue
        try:
            m = read_manifest(d / "manifest.json")
        except ValueError as exc:
            found.append((d, f"damaged manifest ({exc})"))
            continue
        requests = d / "requests.jsonl"
        if m.get("status") != "complete":
            found.append((d, f"status {m.get('status')}"))
        elif not requests.exists() or requests.stat().st_size == 0:
            found.append((d, "no request recorded"))
    unfinished = {name for name, done in experiments.items() if not done and name not in keep}
    for d in sorted(p for p in results.iterdir() if p.is_dir()):
        owner = next((e for e in unfinished if d.name.startswith(e + "-")), None)
        if owner and d.name not in keep and all(d != f for f, _ in found):
            found.append((d, f"a leg of the unfinished {owner}"))
    return found


def main(args) -> int:
    cfg = load(args.config)
    results = resolve(cfg.results_dir)
    if not results.is_dir():
        say(f"nothing to do: {results} does not exist")
        return 0
    found = trials(results, set(args.keep or ()))
    if not found:
        say(f"{results}: no trial runs")
        return 0
    target = results / "trials" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for d, reason in found:
        say(f"{'moving' if args.execute else 'would move'} {d.name} ({reason})")
        if args.execute:
            target.mkdir(parents=True, exist_ok=True)
            shutil.move(str(d), str(target / d.name))
    say(f"{len(found)} trial runs {'moved to ' + str(target) if args.execute else 'found; --execute moves them'}")
    return 0
