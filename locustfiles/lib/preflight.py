"""Before any load: what the endpoint serves (the model, its context length) and prompt sizes that fit.

Runs in the master (or the single local process) before the run directory exists, so an endpoint
that is not ready, or a plan whose prompts cannot fit the served context, costs one error line and
leaves no empty run behind.
"""
from __future__ import annotations

import json
from typing import Callable, Optional

import requests

from configs import ConfigError, RunPlan

from . import trace
from .prompts import PromptSizer


def served_card(base: str, model: str) -> dict:
    """The /v1/models entry of ``model`` (Dynamo adds ``context_window``, vLLM ``max_model_len``)."""
    try:
        data = requests.get(f"{base}/models", timeout=5).json().get("data", [])
    except (requests.RequestException, ValueError, AttributeError):
        return {}
    return next((m for m in data if isinstance(m, dict) and m.get("id") == model), {})


def context_limit(card: dict) -> Optional[int]:
    for key in ("context_window", "max_model_len", "context_length"):
        value = card.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def prompt_sizes(plan: RunPlan) -> list[int]:
    """The token sizes the plan's prompts are built at: whole contexts, or one chat turn."""
    if plan.hypothesis.workload == "sessioned_chat":
        return sorted({max(1, s.params.context_tokens // s.params.session_turns) for s in plan.steps})
    return sorted({s.params.context_tokens for s in plan.steps})


def context_problem(plan: RunPlan, limit: Optional[int], entries: list = ()) -> Optional[str]:
    """A step whose prompt plus answer cannot fit the served context, in one line; None when all fit. A trace
    replay's prompts are its ``entries``' (the trace loaded), so each is checked instead, naming its line."""
    if not limit:
        return None
    for step in plan.steps:
        p = step.params
        if entries:
            e = trace.too_long(entries, limit, p.max_tokens)
            if e is not None:
                return (f"trace {p.trace_file}:{e.line}: input_length {e.input_length} + "
                        f"{min(e.output_length, p.max_tokens)} answer tokens exceed the context length {limit} of "
                        f"{plan.model_handle}; shorten or drop that entry")
            continue
        answers = p.max_tokens * (p.session_turns if plan.hypothesis.workload == "sessioned_chat" else 1)
        if p.context_tokens + answers > limit:
            return (f"step {step.index} ({step.label()}): context_tokens {p.context_tokens} + {answers} answer tokens "
                    f"exceed the context length {limit} of {plan.model_handle}; lower CONTEXT_TOKENS or "
                    "max_tokens")
    return None


def prober(base: str, model: str) -> Callable[[str], Optional[int]]:
    """Send a text as a one-token streamed completion (what every OpenAI server answers, streaming-only
    ones too) and return the server's ``usage.prompt_tokens``."""
    def probe(text: str) -> Optional[int]:
        body = {"model": model, "prompt": text, "max_tokens": 1, "stream": True,
                "stream_options": {"include_usage": True}}
        try:
            with requests.post(f"{base}/completions", json=body, timeout=60, stream=True) as r:
                if r.status_code != 200:
                    return None
                for line in r.iter_lines():
                    if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
                        continue
                    usage = json.loads(line[5:]).get("usage")
                    if isinstance(usage, dict) and usage.get("prompt_tokens"):
                        return int(usage["prompt_tokens"])
        except (requests.RequestException, ValueError, TypeError, AttributeError):
            return None
        return None
    return probe


def size_prompts(plan: RunPlan, sizer: PromptSizer, base: str, model_limit: Optional[int],
                 entries: list = ()) -> tuple[Optional[str], str]:
    """(problem, manifest note): check the plan (a trace replay: its ``entries``) against the context the
    endpoint serves — or, where it publishes none, the model's own (``model_limit``, its
    max_position_embeddings), so an absurd CONTEXT_TOKENS or input_length never builds gigabytes of
    prompt — and calibrate the sizer."""
    served = context_limit(served_card(base, plan.model_handle))
    problem = context_problem(plan, served or model_limit, entries)
    if problem:
        return problem, ""
    try:
        note = sizer.calibrate(prober(base, plan.model_handle), prompt_sizes(plan))
    except ConfigError as exc:
        return str(exc), ""
    return None, f"{note}; served context length {served or 'not published'}"


UNKNOWN_FIELD = "sparkrig_made_up_field"


def unknown_fields_ignored(base: str, model: str) -> Optional[bool]:
    """Does the frontend answer 200 to a request carrying a field nobody defines? Then it drops fields it
    does not know, and its acceptance of ``session_id`` says nothing (Dynamo with
    DYN_IGNORE_OPENAI_FE_UNSUPPORTED_FIELDS=true). None when the probe got no clear answer."""
    try:
        r = requests.post(f"{base}/completions", json={"model": model, "prompt": "probe", "max_tokens": 1,
                                                       UNKNOWN_FIELD: 1}, timeout=30)
    except requests.RequestException:
        return None
    if r.status_code == 200:
        return True
    return False if r.status_code == 400 else None
