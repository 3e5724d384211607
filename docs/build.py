"""The generated parts of the documentation, from the one configuration model and vocabulary: the README's
hypothesis table (configs/hypotheses.yaml through the run planner) and docs/metrics.md's tables of every
series, recording rule and alert (configs/vocabulary/). Hand-written text around them is kept.

    python docs/build.py           # rewrite the parts between the <!-- NAME:begin --> / <!-- NAME:end --> marks
    python docs/build.py --check   # exit 1 when a committed file differs from this output (a test runs it)
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configs import load                                     # noqa: E402
from configs.__main__ import hypothesis_table                # noqa: E402
from configs.vocabulary import rules as R                    # noqa: E402
from configs.vocabulary import series as S                   # noqa: E402


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(text: str) -> str:
    return "`" + _cell(text).replace("`", "'") + "`"


def series_table() -> str:
    found = {v.name: v for v in vars(S).values() if isinstance(v, S.Series)}
    rows = ["| series (as PromQL sees it) | type | labels | what it is |", "|---|---|---|---|"]
    for s in sorted(found.values(), key=lambda s: s.name):
        rows.append(f"| {_code(s.total)} | {s.kind} | {', '.join(s.labels) or '—'} | {_cell(s.help)} |")
    return "\n".join(rows)


def prefix_table() -> str:
    rows = ["| family | its names |", "|---|---|"]
    for name, p in sorted(((n, v) for n, v in vars(S).items() if isinstance(v, S.Prefix)), key=lambda x: x[1].prefix):
        fields = ", ".join(f"`{f}`" for f in sorted(p.fields)) if p.fields else \
            "one per field of its source (see the comment at " + name + " in configs/vocabulary/series.py)"
        rows.append(f"| `{p.prefix}*` | {fields} |")
    return "\n".join(rows)


def rules_tables() -> str:
    out = []
    for f in R.FILES:
        out += [f"### `prometheus/rules/{f.stem}.rules.yml` ({f.group})", "", _cell(f.header), "",
                "| record or alert | expression | note |", "|---|---|---|"]
        for r in f.rules:
            if isinstance(r, R.Rule):
                out.append(f"| {_code(r.record)} | {_code(r.expr)} | {_cell(r.comment) or '—'} |")
            else:
                when = f", for {r.for_}" if r.for_ else ""
                out.append(f"| alert {_code(r.alert)} ({r.severity}{when}) | {_code(r.expr)} | {_cell(r.summary)} |")
        out.append("")
    return "\n".join(out).rstrip()


def parts() -> dict[Path, dict[str, str]]:
    os.environ.pop("HARNESS_CONFIG", None)                  # the shipped configuration, not an operator's
    return {ROOT / "README.md": {"hypotheses": hypothesis_table(load(None), {}, markdown=True)},
            ROOT / "docs" / "metrics.md": {"series": series_table(), "families": prefix_table(),
                                           "rules": rules_tables()}}


def splice(text: str, name: str, body: str, path: Path) -> str:
    begin, end = f"<!-- {name}:begin (python docs/build.py) -->", f"<!-- {name}:end -->"
    pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path.relative_to(ROOT)}: no {begin} ... {end} marks")
    return pattern.sub(lambda _m: f"{begin}\n{body}\n{end}", text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with the committed files instead of writing")
    args = ap.parse_args(argv)
    stale = []
    for path, bodies in parts().items():
        text = path.read_text()
        new = text
        for name, body in bodies.items():
            new = splice(new, name, body, path)
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new)
                print(f"wrote {path.relative_to(ROOT)}")
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is not what docs/build.py makes: run python docs/build.py",
                  file=sys.stderr)
        return 1 if stale else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
