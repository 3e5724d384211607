"""Read the shipped YAML files (plus an optional user overlay) into one validated :class:`Harness`."""
from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Iterable

import yaml

from .errors import ConfigError
from .model import FIO_SWEEP_KEY, PROFILE_SWEEP_KEYS, Harness, Profile, WorkloadParams
from .schema import build, fail, read

CONFIG_DIR = Path(__file__).resolve().parent
DEFAULT_FILES = (CONFIG_DIR / "harness.yaml", CONFIG_DIR / "hypotheses.yaml")
OVERLAY_ENV = "HARNESS_CONFIG"


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def read_yaml(path: Path) -> dict:
    name = _display(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{name}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read config file: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")            # an editor's byte-order mark is harmless
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{name}{where}: not valid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def merge(layers: Iterable[tuple[str, dict]]) -> tuple[dict, dict]:
    """Deep-merge mappings in order; remember which file last set each key path."""
    merged: dict = {}
    origins: dict[tuple, str] = {}

    def walk(dst: dict, src: dict, path: tuple, name: str) -> None:
        for key, value in src.items():
            p = path + (str(key),)
            if isinstance(value, dict) and isinstance(dst.get(key), dict):
                walk(dst[key], value, p, name)
            else:
                dst[key] = value
                origins[p] = name

    for name, data in layers:
        walk(merged, data, (), name)
    return merged, origins


def _where(origins: dict[tuple, str], fallback: str):
    def where(path: tuple) -> str:
        for n in range(len(path), 0, -1):
            if path[:n] in origins:
                return origins[path[:n]]
        return fallback
    return where


def _check_refs(h: Harness, where) -> Harness:
    def need(kind: str, table: dict, name: str, path: tuple) -> None:
        if name not in table:
            raise fail(where, path, f"unknown {kind} {name!r} (known: {', '.join(sorted(table))})")

    for sname, stack in h.stacks.items():
        need("model", h.models, stack.model, ("stacks", sname, "model"))
    need("model", h.models, h.dynamo.model, ("dynamo", "model"))
    param_types = typing.get_type_hints(WorkloadParams)
    profile_types = typing.get_type_hints(Profile)
    for hname, hyp in h.hypotheses.items():
        base = ("hypotheses", hname)
        for i, s in enumerate(hyp.stacks):
            need("stack", h.stacks, s, base + ("stacks", i))
        need("profile", h.profiles, hyp.profile, base + ("profile",))
        need("model", h.models, hyp.model, base + ("model",))
        if hyp.fio_profile is not None:
            need("fio profile", h.fio_profiles, hyp.fio_profile, base + ("fio_profile",))
        for key, values in hyp.sweep.items():
            path = base + ("sweep", key)
            if key in param_types:
                tp = param_types[key]
            elif key in PROFILE_SWEEP_KEYS:
                tp = profile_types[key]
            elif key == FIO_SWEEP_KEY:
                for i, v in enumerate(values):
                    if v != "none":
                        need("fio profile", h.fio_profiles, v, path + (i,))
                continue
            else:
                allowed = sorted(param_types) + list(PROFILE_SWEEP_KEYS) + [FIO_SWEEP_KEY]
                raise fail(where, path, f"cannot sweep this key (expected one of: {', '.join(allowed)})")
            for i, v in enumerate(values):
                read(tp, v, path + (i,), where)
    return h


def load(overlay: str | os.PathLike | None = None, files: Iterable[Path] = DEFAULT_FILES) -> Harness:
    """The validated configuration: shipped files, then ``overlay`` (or $HARNESS_CONFIG) on top."""
    paths = [Path(f) for f in files]
    overlay = overlay or os.environ.get(OVERLAY_ENV) or None
    if overlay:
        paths.append(Path(overlay))
    merged, origins = merge((_display(p), read_yaml(p)) for p in paths)
    where = _where(origins, _display(paths[-1]))
    cfg = _check_refs(build(Harness, merged, (), where), where)
    object.__setattr__(cfg, "overlay", str(Path(overlay).resolve()) if overlay else None)
    return cfg
