"""The test plan's hypotheses, one module per hypothesis or family, each registering itself
(``registry.register``); importing the package registers them all, in the report's order."""
from . import h0, h2, h4, h5, h8, h6, h7, h9, h1h3
from .registry import (INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Finding, GateContext, Hypothesis, Out,
                       claims_storage, families, lookup, register)

__all__ = ["h0", "h2", "h4", "h5", "h8", "h6", "h7", "h9", "h1h3", "INCONCLUSIVE", "NOT_SUPPORTED", "SUPPORTED",
           "Finding", "GateContext", "Hypothesis", "Out", "claims_storage", "families", "lookup", "register"]
