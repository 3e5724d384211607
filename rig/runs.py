"""`sparkrig runs`: the runs under results_dir, one line each, newest last — what `ls results/` cannot say:
which hypothesis and stack, whether the run finished, and the verdict its analysis gave (``-`` before
`sparkrig report` analysed it). A damaged run is listed as damaged, never skipped in silence."""
from __future__ import annotations

import json
from pathlib import Path

from configs import load
from configs.paths import resolve
from configs.runfiles import read_manifest

COLUMNS = ("run", "hypothesis", "stack", "tier", "status", "verdict", "started")


def rows(results: Path) -> list[tuple[str, ...]]:
    out = []
    for manifest in sorted(results.glob("*/manifest.json")):
        d = manifest.parent
        try:
            m = read_manifest(manifest)
        except (ValueError, OSError) as exc:
            out.append((d.name, "?", "?", "?", "damaged", "-", str(exc)[:60]))
            continue
        try:
            verdict = json.loads((d / "analysis" / "verdict.json").read_text()).get("verdict", "-")
        except (OSError, ValueError, AttributeError):
            verdict = "-"
        out.append((m["run_id"], m["hypothesis"], m["stack"], m.get("tier_mode") or "-", m.get("status") or "-",
                    verdict, (m.get("started_at") or "-")[:19]))
    return sorted(out, key=lambda r: (r[4] != "damaged", r[-1]))       # damaged first, then by start


def table(found: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(r[i])) for r in [COLUMNS, *found]) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [COLUMNS, *found])


def register(sub) -> None:
    p = sub.add_parser("runs", help="list the runs under results_dir: id, hypothesis, stack, tier mode, status, "
                                    "verdict and start time")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    results = resolve(load(args.config).results_dir)
    found = rows(results)
    print(table(found) if found else f"no runs under {results}")
    return 0
