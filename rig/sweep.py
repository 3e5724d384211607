"""The v3.3 sweep playbook as one command: `python -m rig sweep` (`make sweep`).

Phase A baselines (H0 on A and B, H2A, H2B, H4A, H4B), Phase B features (H1 with the adapter
proxy, H5, H3 on A and B, H6 tier sizing, H7 telemetry), Phase C hero (H8 on A and B), and the H9
check, which marks itself blocked when the frontend rejects session metadata. Each run uses its
hypothesis' stack, profile and repetitions; after each one the old playbook's post-run checks are
made automatically (run directory and files, analysis without error, expected CSVs) and shown as a
checklist.

Stacks: the embedded simulators (restarted whenever a run needs another profile or tier size), or,
with STACK_A_URL / STACK_B_URL / KVBM_URL set, your real stacks — no simulator is started; when a
run needs Stack B with other tiers, STACK_B_RESTART_CMD is run with the tier variables in its
environment, or the tier variables are printed and the sweep waits for you to restart the worker.
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from configs import load
from configs.model import PLAYBOOK_PHASES, PROFILE_SWEEP_KEYS
from configs.paths import PROJECT_ROOT, resolve

from . import local
from .launch import (Interrupt, Interrupted, end_locust, restart_real_stack_b, run_locust, say, start_simulator,
                     stop_simulator)
from .procs import StartError, Supervisor

def playbook(cfg) -> dict[str, list[tuple[str, str]]]:
    """Each playbook phase's runs, (hypothesis, stack), as configs/hypotheses.yaml places them."""
    return {p: [(hid, stack) for hid, h in cfg.hypotheses.items() if h.phase == p for stack in h.stacks]
            for p in PLAYBOOK_PHASES}


def expected_csv(hypothesis: str) -> str:
    """The table the hypothesis' report section always writes (its registered one), else the summary."""
    from analysis.hypotheses import lookup      # here: the report's sections (matplotlib) load only for a sweep
    h = lookup(hypothesis)
    return h.csv if h is not None else "summary_v3.csv"


@dataclass
class Outcome:
    hypothesis: str
    stack: str
    label: str
    run_id: str = ""
    checks: dict = field(default_factory=dict)
    verdict: str = ""


def real_stack_overlay(base: dict) -> dict:
    """Point the stacks at STACK_A_URL / STACK_B_URL / KVBM_URL when they are set."""
    stacks = {}
    if os.environ.get("STACK_A_URL"):
        url = os.environ["STACK_A_URL"].rstrip("/")
        stacks["stackA"] = {"openai_base": url, "metrics_url": url.rsplit("/v1", 1)[0] + "/prometheus/metrics"}
    if os.environ.get("STACK_B_URL"):
        url = os.environ["STACK_B_URL"].rstrip("/")
        stacks["stackB"] = {"openai_base": url, "metrics_url": url.rsplit("/v1", 1)[0] + "/metrics"}
    if os.environ.get("KVBM_URL"):
        stacks.setdefault("stackB", {})["kvbm_metrics_url"] = os.environ["KVBM_URL"]
    if stacks:
        base.setdefault("stacks", {})
        for name, values in stacks.items():
            base["stacks"].setdefault(name, {}).update(values)
    return base


def tier_splits(cfg, hypothesis: str) -> list[dict]:
    """A hypothesis that sweeps tier sizes or eviction runs once per combination, the stack restarted
    in between: [{key: value}] (one empty dict when it sweeps none)."""
    sweep = cfg.hypotheses[hypothesis].sweep
    keys = [k for k in sweep if k in PROFILE_SWEEP_KEYS and k != "telemetry_cadence_ms"]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(sweep[k] for k in keys))] if keys else [{}]


def write_overlay(base: dict, cfg, directory: Path, hypothesis: str, split: dict, profile: str) -> Path:
    """The run's overlay: the base one, plus for a tier split that profile's values and the
    hypothesis' sweep without the keys this run fixes."""
    doc = json.loads(json.dumps(base))
    if split:
        doc.setdefault("profiles", {}).setdefault(profile, {}).update(split)
        remaining = {k: list(v) for k, v in cfg.hypotheses[hypothesis].sweep.items() if k not in split}
        doc.setdefault("hypotheses", {}).setdefault(hypothesis, {})["sweep"] = remaining
    name = "-".join(f"{k}={v}" for k, v in split.items()) or "default"
    path = directory / f"overlay-{hypothesis}-{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def post_run_checks(cfg, overlay: Path, hypothesis: str, run_id: str) -> dict:
    results = resolve(cfg.results_dir)
    run = results / run_id if run_id else None
    checks = {"run directory": bool(run and run.is_dir()),
              "manifest complete": False, "requests recorded": False, "analysis ran": False,
              f"{expected_csv(hypothesis)} written": False}
    if not checks["run directory"]:
        return checks
    manifest = json.loads((run / "manifest.json").read_text()) if (run / "manifest.json").exists() else {}
    checks["manifest complete"] = manifest.get("status") == "complete"
    checks["requests recorded"] = (run / "requests.jsonl").exists() and (run / "requests.jsonl").stat().st_size > 0
    out = run / "report"
    proc = subprocess.run([sys.executable, "-m", "analysis", "--config", str(overlay), "report", "--run", run_id,
                           "--out", str(out)], cwd=PROJECT_ROOT, capture_output=True, text=True)
    checks["analysis ran"] = proc.returncode == 0
    checks[f"{expected_csv(hypothesis)} written"] = (out / expected_csv(hypothesis)).exists()
    return checks


def main(phases: list[str], config: Path | None = None) -> int:
    if config is None and os.environ.get("HARNESS_CONFIG"):
        config = Path(os.environ["HARNESS_CONFIG"])
    base = yaml.safe_load(config.read_text()) if config else {}
    base = real_stack_overlay(base or {})
    real = any(os.environ.get(v) for v in ("STACK_A_URL", "STACK_B_URL", "KVBM_URL"))
    cfg = load(str(config) if config else None)
    work = local.run_dir(cfg) / "sweep"
    work.mkdir(parents=True, exist_ok=True)
    base_overlay = work / "overlay-base.yaml"
    base_overlay.write_text(yaml.safe_dump(base))
    cfg = load(str(base_overlay))
    sup = Supervisor(local.run_dir(cfg))
    outcomes: list[Outcome] = []
    running: list = []
    sims: dict[str, tuple] = {}
    with Interrupt(running) as stop:
        try:
            say("starting the exporters and Prometheus ...")
            local.up(cfg, "spill")
            for phase in phases:
                say(f"== phase {phase}")
                for hypothesis, stack in playbook(cfg)[phase]:
                    hyp = cfg.hypotheses[hypothesis]
                    for split in tier_splits(cfg, hypothesis):
                        stop.check()
                        overlay = write_overlay(base, cfg, work, hypothesis, split, hyp.profile)
                        run_cfg = load(str(overlay))
                        label = ", ".join(f"{k}={v}" for k, v in split.items())
                        want = (hyp.profile, tuple(sorted(split.items())), hyp.tier_mode)
                        if real:
                            if (split or hyp.tier_mode != "B2") and stack == "stackB":
                                restart_real_stack_b(run_cfg, hyp.profile, hyp.tier_mode)
                        elif sims.get(stack) != want:
                            if stack in sims:
                                stop_simulator(sup, stack)
                            start_simulator(run_cfg, sup, stack, hyp.profile, hyp.tier_mode)
                            time.sleep(1)
                            sims[stack] = want
                        say(f"[{hypothesis} on {stack}{' ' + label if label else ''}] profile {hyp.profile}, "
                            f"{hyp.repetitions} repetition(s)")
                        code, run_id = run_locust(hypothesis, stack, run_cfg, running)
                        o = Outcome(hypothesis, stack, label, run_id)
                        o.checks = post_run_checks(cfg, overlay, hypothesis, run_id)
                        verdict = resolve(cfg.results_dir) / run_id / "report" / "verdict.json" if run_id else None
                        if verdict and verdict.exists():
                            o.verdict = json.loads(verdict.read_text())[run_id]["verdict"]
                        for name, ok in o.checks.items():
                            say(f"    [{'x' if ok else ' '}] {name}")
                        outcomes.append(o)
            stop.check()
        except StartError as exc:
            say(f"error: {exc}")
            return 1
        except (Interrupted, KeyboardInterrupt) as exc:
            say("interrupted: stopping what the sweep started; results so far stay")
            return getattr(exc, "code", 130)
        finally:
            end_locust(running)
            sup.stop_mine()
    say("\nsweep summary")
    for o in outcomes:
        failed = [k for k, ok in o.checks.items() if not ok]
        say(f"  {o.hypothesis:<4} {o.stack:<7} {o.label:<28} {o.run_id or '-':<40} {o.verdict or '-':<8} "
            f"{'checks ok' if not failed else 'missing: ' + ', '.join(failed)}")
    return 0 if all(all(o.checks.values()) for o in outcomes) else 1


def register(sub) -> None:
    p = sub.add_parser("sweep", help="the v3.3 sweep playbook: phases A, B, C and the H9 check")
    p.add_argument("--phase", action="append", choices=list(PLAYBOOK_PHASES),
                   help="phases to run, in order (default: A B C H9)")
    p.set_defaults(func=lambda args: main(args.phase or list(PLAYBOOK_PHASES),
                                          Path(args.config) if args.config else None))
