"""The fault registry: every fault case names what the rig must say when it happens.

A case is a test decorated with ``@fault(...)``. ``catches`` lists what must answer it: a gate of
``analysis/gates.py`` as ``"gate:<name>"`` (with ``=<REASON>`` for the reason it must give), a reason code
of the paired experiments as ``"pairs:<REASON>"``, or any other outcome the rig owes (``"manifest:…"``,
``"exporter:…"``, ``"cli:…"``). ``tests/faults/test_registry.py`` fails when a gate or a pairs reason has no case, and
when docs/faults.md's fault-suite table is not the one ``python tests/faults/table.py`` prints.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Fault:
    id: str            # issue reference, e.g. "23.B1"
    fault: str         # what goes wrong, as a user would see it happen
    says: str          # what the rig must say or do
    catches: tuple     # "gate:<name>[=<REASON>]", "pairs:<REASON>", or "<area>:<outcome>"
    test: str = ""


FAULTS: dict[str, Fault] = {}


def fault(id: str, fault: str, says: str, catches: tuple | list | str):
    """Register the decorated test as fault case ``id``; the test is marked ``fault`` for ``-m fault``."""
    catches = (catches,) if isinstance(catches, str) else tuple(catches)

    def mark(fn):
        if id in FAULTS:
            raise ValueError(f"fault case {id} registered twice")
        if not fn.__name__.startswith("test_"):      # a helper put between a case and its test
            raise ValueError(f"fault case {id} decorates {fn.__name__}, which pytest does not run")
        FAULTS[id] = Fault(id, fault, says, catches, f"{fn.__module__}.{fn.__name__}")
        return pytest.mark.fault(fn)
    return mark


def gate_names(catches) -> set[str]:
    return {c.split(":", 1)[1].split("=")[0] for c in catches if c.startswith("gate:")}


def pairs_reasons(catches) -> set[str]:
    return {c.split(":", 1)[1] for c in catches if c.startswith("pairs:")}
