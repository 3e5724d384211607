"""JSON that other tools read (verdict.json, comparisons.json): NaN and infinities as null, numpy scalars
as plain numbers."""
from __future__ import annotations

import json
import math

import numpy as np


def json_safe(value):
    """NaN and infinities become null: verdict.json is read by other tools, and bare NaN is not JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


def dumps(doc) -> str:
    return json.dumps(json_safe(doc), indent=1, default=str, allow_nan=False) + "\n"
