"""Prints docs/faults.md's fault-suite table from the registry: `python tests/faults/table.py`."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- fault-suite:begin (python tests/faults/table.py) -->", "<!-- fault-suite:end -->"


def load_all() -> dict:
    """Every test module imported once (pytest's own import names: tests/ and tests/faults/ on sys.path)."""
    for folder in (TESTS, TESTS / "faults"):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    sys.path.insert(0, str(TESTS.parent))
    for path in sorted(TESTS.glob("test_*.py")) + sorted((TESTS / "faults").glob("test_*.py")):
        importlib.import_module(path.stem)
    from faultcase import FAULTS
    return FAULTS


def table(faults: dict) -> str:
    rows = [BEGIN, "| case | fault | what the rig says | caught by | test |", "|---|---|---|---|---|"]
    for f in sorted(faults.values(), key=lambda f: f.id):
        cell = lambda text: text.replace("|", "\\|")          # noqa: E731
        rows.append(f"| {f.id} | {cell(f.fault)} | {cell(f.says)} | {', '.join(f'`{c}`' for c in f.catches)} "
                    f"| `{f.test}` |")
    return "\n".join(rows + [END])


if __name__ == "__main__":
    print(table(load_all()))
