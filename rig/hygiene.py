"""`python -m rig hygiene`: keep the results directory high-signal by archiving trial runs.

A trial is a run that did not finish (manifest ``running`` or ``incomplete``), one without a single
recorded request, one whose manifest is damaged, or a `rig pairs` / `rig rehydrate` experiment that
never reached its verdict (with the legs that belong to it). Dry run by default: it lists what it would
move and why; ``--execute`` moves them under ``<results_dir>/trials/<tag>/``. ``--keep`` names runs to
leave alone. Nothing is ever deleted.

A run or experiment whose writer is alive is no trial however it looks (``running`` is what a live run's
manifest says): its writer holds the directory's writer lock, and hygiene skips it, and every leg of a live
experiment, with a line saying so. A directory is moved while hygiene holds that lock itself, so no writer
can start in it meanwhile.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from configs import load
from configs.paths import make_dir, resolve
from configs.runfiles import WRITER_LOCK, claim, read_manifest

from .launch import say

FINISHED = {"pairs": "verdict.json", "rehydrate": "recommendation.json"}
NOT_RUNS = {"trials", "publish", "report"}


def _live(d: Path) -> bool:
    with claim(d) as free:
        return not free


def trials(results: Path, keep: set[str]) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """(directory, reason) for every trial under ``results``, and (directory, why) for those that look like
    trials but are held by a live writer: a live run or experiment, and the legs of a live experiment."""
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
    live = {e for e in unfinished if _live(results / e)}
    movable, held = [], []
    for d, reason in found:
        owner = next((e for e in live if d.name.startswith(e + "-")), None)
        if d.name in live or _live(d):
            held.append((d, f"live: its writer holds {WRITER_LOCK}"))
        elif owner:
            held.append((d, f"a leg of the live {owner}"))
        else:
            movable.append((d, reason))
    return movable, held


def main(args) -> int:
    cfg = load(args.config)
    results = resolve(cfg.results_dir)
    if not results.is_dir():
        say(f"nothing to do: {results} does not exist")
        return 0
    found, held = trials(results, set(args.keep or ()))
    for d, why in held:
        say(f"skipping {d.name} ({why})")
    if not found:
        say(f"{results}: no trial runs")
        return 0
    target = results / "trials" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for d, reason in found:
        with claim(d) as free:            # held while moving: no writer starts in it meanwhile
            if not free:
                say(f"skipping {d.name} (live: its writer started meanwhile)")
                continue
            say(f"{'moving' if args.execute else 'would move'} {d.name} ({reason})")
            if args.execute:
                make_dir(target, exist_ok=True)
                shutil.move(str(d), str(target / d.name))
    say(f"{len(found)} trial runs {'moved to ' + str(target) if args.execute else 'found; --execute moves them'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("hygiene", help="archive trial runs (unfinished, empty, damaged) under "
                                       "<results_dir>/trials/; a dry run unless --execute")
    p.add_argument("--execute", action="store_true", help="move them (default: only list them)")
    p.add_argument("--keep", action="append", help="a run or experiment to leave alone (repeatable)")
    p.set_defaults(func=main)
