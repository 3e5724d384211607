"""Is a stack serving the model? One readiness probe for the load generator's start, `rig dynamo up` and
the paired legs' preflight: the OpenAI ``/models`` list, with the reason in one line when it is not."""
from __future__ import annotations

import time
from typing import Optional

import requests

from . import redact


def served_models(base: str) -> tuple[Optional[list], str]:
    """The model ids ``base``/models lists, or None and why not."""
    shown = redact.url(base)
    try:
        r = requests.get(f"{base}/models", timeout=5)
        if r.status_code != 200:
            return None, f"{shown}/models answered HTTP {r.status_code}"
        return [m.get("id") for m in r.json().get("data", [])], ""
    except requests.RequestException as exc:
        return None, f"cannot reach {shown}/models ({type(exc).__name__})"
    except (ValueError, AttributeError):
        return None, f"{shown}/models did not answer JSON"


def wait_for_model(base: str, model: str, timeout_s: float) -> Optional[str]:
    """None when ``base``/models lists ``model`` within the timeout, else the one-line reason."""
    deadline = time.monotonic() + timeout_s
    while True:
        ids, reason = served_models(base)
        if ids is not None and model in ids:
            return None
        if ids is not None:
            reason = f"{redact.url(base)}/models does not list {model!r} (it lists " \
                     f"{', '.join(map(str, ids[:5])) or 'none'})"
        if time.monotonic() >= deadline:
            return f"{reason}; waited {timeout_s:g} s"
        time.sleep(1)
