"""One validated configuration model for every component of the harness.

    import configs
    cfg = configs.load()                       # shipped YAML + $HARNESS_CONFIG overlay
    plan = configs.plan_run(cfg, "H2B", os.environ)
"""
from .errors import ConfigError
from .loader import load
from .model import EngineParams, FioProfile, Harness, Hypothesis, ModelSpec, Profile, StackSpec, WorkloadParams
from .plan import OVERRIDE_VARS, RunPlan, Step, plan_run
from .sizes import format_size, parse_size

__all__ = [
    "ConfigError", "load", "EngineParams", "Harness", "Hypothesis", "ModelSpec", "Profile", "StackSpec", "FioProfile",
    "WorkloadParams", "RunPlan", "Step", "plan_run", "OVERRIDE_VARS", "parse_size", "format_size",
]
