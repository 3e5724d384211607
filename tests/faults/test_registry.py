"""The fault suite answers for every gate and every reason code: each has a case it must catch, and
docs/faults.md's fault-suite table is the registry's."""
from __future__ import annotations

import re

from analysis import paired as P
from conftest import ROOT
from faultcase import gate_names, pairs_reasons
from table import BEGIN, END, load_all, table


def gates_in_code() -> set[str]:
    return set(re.findall(r'Gate\(\s*"([a-z0-9_]+)"', (ROOT / "analysis" / "gates.py").read_text()))


def test_every_gate_and_reason_has_a_fault_it_must_catch():
    faults = load_all()
    caught_gates = set().union(*(gate_names(f.catches) for f in faults.values()))
    caught_reasons = set().union(*(pairs_reasons(f.catches) for f in faults.values()))
    assert gates_in_code() - caught_gates == set(), "gates without a fault case"
    assert set(P.REASONS) - caught_reasons == set(), "pairs reason codes without a fault case"
    assert caught_reasons - set(P.REASONS) == set(), "fault cases naming reason codes analysis.paired.REASONS lacks"


def test_every_reason_code_the_experiments_use_is_registered():
    used = set()
    for path in ("rig/pairs.py", "rig/legs.py", "rig/rehydrate.py", "analysis/paired.py"):
        used |= set(re.findall(r'"((?:PREFLIGHT|BASELINE|GATE|REHYDRATE|TELEMETRY|METRIC|DISK|LEG|MECHANISM|'
                               r'REQUEST|NO|NOT|TOO|INTERVAL|RUN_ERRORS|B1_DISK)_[A-Z0-9_]+)"', (ROOT / path).read_text()))
    assert used - set(P.REASONS) == set()


def test_the_documented_fault_table_is_the_registry():
    page = (ROOT / "docs" / "faults.md").read_text()
    assert BEGIN in page and END in page, "docs/faults.md lacks the fault-suite table"
    current = page[page.index(BEGIN):page.index(END) + len(END)]
    assert current == table(load_all()), "docs/faults.md's fault-suite table is stale: python tests/faults/table.py"


def test_the_registry_check_can_fail():
    from faultcase import Fault
    assert gate_names(("gate:errors=STACK_OUTAGE", "pairs:OK", "cli:x")) == {"errors"}
    assert pairs_reasons(("pairs:OK", "gate:x")) == {"OK"}
    assert "| x.1 |" in table({"x.1": Fault("x.1", "f", "s", ("gate:g",), "t.t")})
