"""Build frozen dataclasses from parsed YAML, failing with the file, the key and what was expected.

A tiny typed reader rather than a validation framework: the set of types in our
configuration is small, and owning it lets every message read like
``configs/harness.yaml: profiles.spill.tier1_bytes: expected a size ... got '-1GiB'``.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Callable, Literal, Union, get_args, get_origin

from . import redact
from .errors import ConfigError
from .sizes import parse_size


class ByteSize(int):
    """Marker type: a field read with :func:`parse_size`."""


Where = Callable[[tuple], str]


def dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def fail(where: Where, path: tuple, message: str) -> ConfigError:
    return ConfigError(f"{where(path)}: {dotted(path)}: {message}")


def _shown(value: Any) -> str:
    """A value as a message quotes it: credentials in URLs masked."""
    return repr(redact.plain(value))


def _type_name(tp: Any) -> str:
    if tp is ByteSize:
        return "a size such as 8GiB, 512MiB or plain bytes"
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin is list:
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of name to {_type_name(get_args(tp)[1])}"
    if origin is Union:
        inner = [a for a in get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in inner) + " (or null)"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp))


def read(tp: Any, value: Any, path: tuple, where: Where) -> Any:
    """Convert one parsed YAML value to ``tp`` or raise ConfigError."""
    origin = get_origin(tp)
    if tp is ByteSize:
        try:
            return ByteSize(parse_size(value))
        except ValueError as exc:
            raise fail(where, path, str(exc)) from None
    if origin is Union:
        if value is None and type(None) in get_args(tp):
            return None
        inner = [a for a in get_args(tp) if a is not type(None)]
        errors = []
        for alt in inner:
            try:
                return read(alt, value, path, where)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0] if len(inner) == 1 else fail(where, path, f"expected {_type_name(tp)}, got {_shown(value)}")
    if origin is Literal:
        allowed = get_args(tp)
        if isinstance(value, str):
            for a in allowed:
                if a.lower() == value.lower():
                    return a
        raise fail(where, path, f"expected {_type_name(tp)}, got {_shown(value)}")
    if origin is list:
        if not isinstance(value, list):
            raise fail(where, path, f"expected {_type_name(tp)}, got {_shown(value)}")
        (item,) = get_args(tp)
        return tuple(read(item, v, path + (i,), where) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise fail(where, path, f"expected {_type_name(tp)}, got {_shown(value)}")
        _, item = get_args(tp)
        return {str(k): read(item, v, path + (str(k),), where) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):          # YAML's .nan and .inf: never a meaningful setting
                raise fail(where, path, f"expected a finite number, got {_shown(value)}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a schema bug, not a user error
        raise TypeError(f"unsupported schema type {tp!r}")
    raise fail(where, path, f"expected {_type_name(tp)}, got {_shown(value)}")


def build(cls: type, data: Any, path: tuple, where: Where) -> Any:
    """Instantiate dataclass ``cls`` from mapping ``data``; unknown and missing keys are errors."""
    if not isinstance(data, dict):
        raise fail(where, path, f"expected a mapping, got {_shown(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        raise fail(where, path + (unknown[0],),
                   f"unknown key (expected one of: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = read(hints[name], data[name], path + (name,), where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise fail(where, path + (name,), f"missing key (expected {_type_name(hints[name])})")
    try:
        return cls(**kwargs)
    except ValueError as exc:  # __post_init__ range checks; a FieldError names the key it is about
        raise fail(where, path + getattr(exc, "path", ()), getattr(exc, "message", str(exc))) from None


def to_plain(obj: Any) -> Any:
    """Dataclass tree back to YAML/JSON-friendly data (for run manifests and ``show``), as a file would say
    it: what no file sets (``init=False``) is left out, so the result loads again."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, ByteSize):
        return int(obj)
    return obj
