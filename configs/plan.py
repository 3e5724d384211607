"""Turn a hypothesis plus the operator's environment into the concrete steps of one run.

The environment variables are the ones the v3.3 playbook's operators already use
(STACK, PROFILE, CONCURRENCY, CONTEXT_TOKENS, DURATION_S, ENDPOINT, SEED), plus MODEL
to pick the 8B dev variant.
"""
from __future__ import annotations

import dataclasses
import itertools
import re
import typing
from dataclasses import dataclass
from typing import Mapping, Optional

from . import checks, redact
from .errors import ConfigError
from .checks import FieldError
from .model import (FIO_SWEEP_KEY, MAX_CONCURRENCY, MAX_RATE_RPS, OPEN_LOOP_WORKLOADS, PROFILE_SWEEP_KEYS, Harness,
                    Hypothesis, Profile, Slo, StackSpec, WorkloadParams, tier_mode)
from .schema import read, to_plain
from .sizes import format_duration

SLO_VARS = {"SLO_TTFT_S": "ttft_s", "SLO_TPOT_S": "tpot_s", "SLO_E2E_S": "e2e_s", "SLO_PERCENTILE": "percentile"}
OVERRIDE_VARS = ("STACK", "PROFILE", "CONCURRENCY", "CONTEXT_TOKENS", "DURATION_S", "ENDPOINT", "SEED", "MODEL",
                 "TIER_MODE", "RATE_RPS", "TRACE_FILE", "PHASES", *SLO_VARS)
# a rehydrate replay's phases, in order: PHASES=populate,replay leaves the thrash out (rig pairs' control
# legs: the prefixes stay in tier0, where no offload tier can help)
REHYDRATE_PHASES = ("populate", "thrash", "replay")
REHYDRATE_SESSIONS_PER_USER = 4          # prefixes in a rehydrate replay's list, per user of its step


@dataclass(frozen=True)
class Step:
    index: int
    params: WorkloadParams
    profile: Profile
    fio_profile: Optional[str]
    swept: dict

    def label(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.swept.items()) or "single"


@dataclass(frozen=True)
class RunPlan:
    hypothesis_id: str
    hypothesis: Hypothesis
    stack_name: str
    stack: StackSpec
    profile_name: str
    model_handle: str
    openai_base: str
    seed: int
    step_duration_s: int
    repetitions: int
    steps: tuple[Step, ...]
    tier_mode: Optional[str] = None          # Stack B's KVBM tiers; None on a stack without tiering
    slo: Slo = Slo()                         # the request objective goodput is judged against
    phases: tuple[str, ...] = ("run",)       # each step's phases: a rehydrate replay's, else one

    @property
    def slots(self) -> int:
        """Steps x repetitions x phases: how many step_duration_s the run lasts."""
        return len(self.steps) * self.repetitions * len(self.phases)

    @property
    def planned_s(self) -> int:
        return self.slots * self.step_duration_s

    def length(self) -> str:
        """``5 steps x 3 repetitions x 300 s = 1h15m00s``: what the console announces and the hypothesis
        table lists."""
        times = "".join(f" x {n} {what}" for n, what in ((self.repetitions, "repetitions"),
                                                         (len(self.phases), "phases")) if n > 1)
        return (f"{len(self.steps)} step{'s' * (len(self.steps) != 1)}{times} x {self.step_duration_s} s = "
                f"{format_duration(self.planned_s)}")

    def snapshot(self) -> dict:
        """JSON-friendly record of everything that shaped the run, for the run manifest."""
        return to_plain({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})


def _env_error(var: str, value: str, expected: str) -> ConfigError:
    return ConfigError(f"environment {var}={redact.plain(value)!r}: expected {expected}")


def _int_list(var: str, value: str, most: int = 10**9) -> list[int]:
    try:
        items = [int(v) for v in re.split(r"[,\s]+", value.strip()) if v]
    except ValueError:
        items = []
    if not items or any(not 0 < v <= most for v in items):
        raise _env_error(var, value, f"a positive integer up to {most} or a comma-separated list of them")
    return items


def _float_list(var: str, value: str, most: float) -> list[float]:
    try:
        items = [float(v) for v in re.split(r"[,\s]+", value.strip()) if v]
    except ValueError:
        items = []
    if not items or any(not 0 < v <= most for v in items):     # nan and inf fail this too
        raise _env_error(var, value, f"a positive number up to {most:g} or a comma-separated list of them")
    return items


def stack_name(cfg: Harness, value: str) -> str:
    """Accept ``stackA``, ``A`` or ``a`` as operators write them."""
    for name in cfg.stacks:
        if value.lower() in (name.lower(), name.lower().removeprefix("stack")):
            return name
    raise _env_error("STACK", value, f"one of {', '.join(cfg.stacks)}")


def normalise_endpoint(url: str) -> str:
    """Operators pass either the OpenAI base (``.../v1``) or a full completions URL; keep the base."""
    try:
        checks.http_url(url, "ENDPOINT")
    except checks.FieldError as exc:
        raise _env_error("ENDPOINT", url, f"an http(s) URL such as http://127.0.0.1:9000/v1 ({exc.message})") \
            from None
    url = url.rstrip("/")
    for suffix in ("/chat/completions", "/completions"):
        if url.endswith(suffix):
            return url[: -len(suffix)]
    return url if url.endswith("/v1") else url + "/v1"


def _steps(cfg: Harness, hyp: Hypothesis, params: WorkloadParams, profile: Profile,
           sweep: dict[str, list]) -> tuple[Step, ...]:
    param_types = typing.get_type_hints(WorkloadParams)
    profile_types = typing.get_type_hints(Profile)
    keys = list(sweep)
    steps = []
    for i, combo in enumerate(itertools.product(*(sweep[k] for k in keys)) if keys else [()]):
        swept = dict(zip(keys, combo))
        p_over = {k: read(param_types[k], v, ("sweep", k), lambda _: "sweep") for k, v in swept.items()
                  if k in param_types}
        prof_over = {k: read(profile_types[k], v, ("sweep", k), lambda _: "sweep") for k, v in swept.items()
                     if k in PROFILE_SWEEP_KEYS}
        fio = swept.get(FIO_SWEEP_KEY, hyp.fio_profile)
        steps.append(Step(
            index=i,
            params=dataclasses.replace(params, **p_over),
            profile=dataclasses.replace(profile, **prof_over),
            fio_profile=None if fio in (None, "none") else fio,
            swept=swept,
        ))
    return tuple(steps)


def plan_run(cfg: Harness, hypothesis_id: str, env: Mapping[str, str] | None = None) -> RunPlan:
    """Resolve ``hypothesis_id`` against the config and the override variables in ``env``."""
    env = {k: v for k, v in (env or {}).items() if k in OVERRIDE_VARS and v != ""}
    key = hypothesis_id.upper()
    if key not in cfg.hypotheses:
        raise ConfigError(f"unknown hypothesis {hypothesis_id!r} (known: {', '.join(cfg.hypotheses)})")
    hyp = cfg.hypotheses[key]

    sname = stack_name(cfg, env["STACK"]) if "STACK" in env else hyp.stacks[0]
    if sname not in hyp.stacks:
        raise ConfigError(f"environment STACK={env['STACK']!r}: hypothesis {key} runs on "
                          f"{' and '.join(hyp.stacks)} only")
    stack = cfg.stacks[sname]

    pname = env.get("PROFILE", hyp.profile).lower()
    if pname not in cfg.profiles:
        raise _env_error("PROFILE", env["PROFILE"], f"one of {', '.join(cfg.profiles)}")

    model_key = env.get("MODEL", stack.model)          # what the rig serves wins over the hypothesis' default
    handle = cfg.models[model_key].handle if model_key in cfg.models else model_key

    sweep = {k: list(v) for k, v in hyp.sweep.items()}
    params = hyp.params
    for var, field, most in (("CONCURRENCY", "concurrency", MAX_CONCURRENCY),
                             ("CONTEXT_TOKENS", "context_tokens", 10**9)):
        if var in env:
            values = _int_list(var, env[var], most)
            if field in sweep or len(values) > 1:
                sweep[field] = values
            else:
                params = dataclasses.replace(params, **{field: values[0]})

    if "TRACE_FILE" in env:
        params = dataclasses.replace(params, trace_file=env["TRACE_FILE"])
    if hyp.workload == "trace_replay" and not params.trace_file:
        raise ConfigError(f"hypothesis {key}: trace_replay needs params.trace_file (or TRACE_FILE): a Mooncake "
                          "JSONL trace, e.g. locustfiles/traces/synthetic.jsonl")
    if "RATE_RPS" in env:
        rates = _float_list("RATE_RPS", env["RATE_RPS"], MAX_RATE_RPS)
        if "arrival_rate_rps" in sweep or len(rates) > 1:
            sweep["arrival_rate_rps"] = rates
        else:
            params = dataclasses.replace(params, arrival_rate_rps=rates[0])
    open_loop = params.arrival_rate_rps > 0 or any(v > 0 for v in sweep.get("arrival_rate_rps", []))
    if open_loop and hyp.workload not in OPEN_LOOP_WORKLOADS:
        raise ConfigError(f"hypothesis {key}: open-loop arrivals (arrival_rate_rps, RATE_RPS) drive only "
                          f"{', '.join(OPEN_LOOP_WORKLOADS)} workloads; {hyp.workload} waits for each answer")
    if open_loop:             # the rate sets the load; a concurrency sweep of closed-loop users means nothing here
        if "CONCURRENCY" in env:
            raise ConfigError("environment CONCURRENCY and RATE_RPS: an open loop has no users to count; "
                              "set one of them")
        sweep.pop("concurrency", None)

    duration = hyp.step_duration_s
    if "DURATION_S" in env:
        duration = _int_list("DURATION_S", env["DURATION_S"])[0]
    seed = hyp.seed
    if "SEED" in env:
        try:
            seed = int(env["SEED"])
        except ValueError:
            raise _env_error("SEED", env["SEED"], "an integer") from None

    base = normalise_endpoint(env["ENDPOINT"]) if "ENDPOINT" in env else stack.openai_base
    mode = None
    if stack.kv_tiering:
        try:
            mode = tier_mode(env["TIER_MODE"], "TIER_MODE") if "TIER_MODE" in env else hyp.tier_mode
        except FieldError as exc:
            raise ConfigError(f"environment TIER_MODE: {exc.message}") from None
    slo = hyp.slo.over(cfg.objectives.requests)
    for var, name in SLO_VARS.items():
        if var in env:
            try:
                slo = dataclasses.replace(slo, **{name: float(env[var])})
            except (ValueError, FieldError):
                raise _env_error(var, env[var], "a positive number (a percentile: up to 100)") from None
    phases = ("run",)
    if hyp.workload == "rehydrate_replay":
        phases = REHYDRATE_PHASES
        if "PHASES" in env:
            wanted = [p.strip() for p in env["PHASES"].split(",") if p.strip()]
            if not wanted or any(p not in REHYDRATE_PHASES for p in wanted) or "replay" not in wanted:
                raise _env_error("PHASES", env["PHASES"], f"some of {', '.join(REHYDRATE_PHASES)}, replay among them")
            phases = tuple(p for p in REHYDRATE_PHASES if p in wanted)
    elif "PHASES" in env:
        raise _env_error("PHASES", env["PHASES"], f"nothing: {key} is no rehydrate replay")
    return RunPlan(
        hypothesis_id=key, hypothesis=hyp, stack_name=sname, stack=stack, profile_name=pname,
        model_handle=handle, openai_base=base, seed=seed, step_duration_s=duration,
        repetitions=hyp.repetitions, steps=_steps(cfg, hyp, params, cfg.profiles[pname], sweep), tier_mode=mode,
        slo=slo, phases=phases,
    )
