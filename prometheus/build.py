"""Recording rules and alerts as files, from the one vocabulary (configs/vocabulary/rules.py).

    python prometheus/build.py           # rewrite prometheus/rules/*.rules.yml
    python prometheus/build.py --check   # exit 1 when the committed files differ from this output

`make test` runs the check and `promtool test rules` on the result.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from configs.vocabulary import rules as R

OUT = Path(__file__).resolve().parent / "rules"


def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}# {line}".rstrip() for line in text.splitlines()]


def _expr(expr: str, indent: str) -> list[str]:
    if "\n" not in expr:
        return [f"{indent}expr: {expr}"]
    return [f"{indent}expr: |"] + [f"{indent}  {line}" for line in expr.splitlines()]


def render(f: R.RuleFile) -> str:
    lines = _comment(f.header, "") + ["groups:", f"  - name: {f.group}", "    rules:"]
    for r in f.rules:
        if isinstance(r, R.Rule):
            lines += _comment(r.comment, "      ")
            lines += [f"      - record: {r.record}"] + _expr(r.expr, "        ")
        else:
            lines += [f"      - alert: {r.alert}"] + _expr(r.expr, "        ")
            if r.for_:
                lines.append(f"        for: {r.for_}")
            lines += [f"        labels: {{severity: {r.severity}}}", "        annotations:",
                      f"          summary: {json.dumps(r.summary)}"]
    return "\n".join(lines) + "\n"


def files() -> dict[Path, str]:
    return {OUT / f"{f.stem}.rules.yml": render(f) for f in R.FILES}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with the committed files instead of writing")
    args = ap.parse_args(argv)
    out = files()
    if args.check:
        stale = [p.name for p, text in out.items() if not p.exists() or p.read_text() != text]
        extra = sorted(p.name for p in OUT.glob("*.rules.yml") if p not in out)
        for name in stale + extra:
            print(f"{name} is not what prometheus/build.py makes: run python prometheus/build.py", file=sys.stderr)
        return 1 if stale or extra else 0
    for path, text in out.items():
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
