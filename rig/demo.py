"""`make demo`: simulated Stack A and B, the exporters, a local Prometheus, the demo sweeps through
Locust, then the report — all from configs/demo.yaml (with $HARNESS_CONFIG or --config layered over it),
all stopped at the end or on Ctrl-C, results kept.

Runs, in order: H0 on A then B (queue knee), an idle pause (the disk's baseline, which H2A's gate
falls back on where Stack A's own reads are not observed), H2A on A and H2B on B (context growth), H4B
(fio contention on the tier2 disk), H8 on A then B (iowait), then each stack's capacity at 4k contexts
under the request objective (`rig capacity`) and 6 paired B1/B2 repeats of the rehydrate replay (`rig
pairs`: deltas with intervals and a verdict). ``--quick`` keeps H0 and H2 with shorter steps (the CI end-to-end test).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from configs import Harness, load
from configs.discovery import prometheus_url
from configs.loader import DEFAULT_FILES, OVERLAY_ENV, merge, read_yaml
from configs.paths import PROJECT_ROOT, resolve

from . import capacity, local
from . import pairs
from .launch import Interrupt, Interrupted, end_locust, run_locust, say, start_simulator
from .procs import StartError, Supervisor

DEMO_CONFIG = PROJECT_ROOT / "configs" / "demo.yaml"
IDLE_PAUSE_S = 35          # > the analysis' 30 s idle window
SETTLE_S = 5
PAIRS = {"pairs": 6, "concurrency": 2, "context_tokens": 1024, "duration_s": 2}   # the full demo's paired block
# and its capacity search: 8 s probes, so 4k-context answers at 32 users finish inside one
CAPACITY = {"hypothesis": "H0", "most": 64, "duration_s": 8, "context_tokens": 4096}


@dataclass(frozen=True)
class Item:
    hypothesis: str
    stack: str
    env: tuple = ()


FULL = (Item("H0", "stackA"), Item("H0", "stackB"), Item("pause", ""), Item("H2A", "stackA"),
        Item("H2B", "stackB"), Item("H4B", "stackB"), Item("H8", "stackA"), Item("H8", "stackB"))
QUICK = (Item("H0", "stackA", (("DURATION_S", "6"),)), Item("H0", "stackB", (("DURATION_S", "6"),)),
         Item("pause", ""), Item("H2A", "stackA", (("DURATION_S", "8"),)),
         Item("H2B", "stackB", (("DURATION_S", "8"),)))


def demo_config(overlay: Optional[str] = None) -> Harness:
    """The demo's configuration — the shipped files, configs/demo.yaml over them, then the operator's overlay
    (``overlay``, else $HARNESS_CONFIG) over that, layered as ``configs.load`` layers them, so a ports-only
    overlay changes the ports and nothing else — loaded from the one overlay file every process the demo
    starts reads (each takes one): demo.yaml and that overlay merged, under the demo's run directory.
    Loaded from the files first, so a mistake names the file that made it."""
    user = overlay or os.environ.get(OVERLAY_ENV) or None
    cfg = load(user, files=(*DEFAULT_FILES, DEMO_CONFIG))
    merged, _ = merge((str(p), read_yaml(p)) for p in (DEMO_CONFIG, *([Path(user)] if user else [])))
    path = local.run_dir(cfg) / "demo-config.yaml"
    path.write_text(yaml.safe_dump(merged, sort_keys=False))
    return load(path)


def main(quick: bool = False, overlay: Optional[str] = None) -> int:
    cfg = demo_config(overlay)
    sup = Supervisor(local.run_dir(cfg))
    running: list[subprocess.Popen] = []
    items = QUICK if quick else FULL
    run_ids: list[str] = []
    t0 = time.monotonic()
    with Interrupt(running) as stop:
        try:
            say("starting the simulated stacks, the exporters and Prometheus ...")
            for name in ("stackA", "stackB"):
                start_simulator(cfg, sup, name)
            for s in local.up(cfg, "spill"):
                say(f"  {s.name} (pid {s.pid}, log {s.log})")
            say(f"  Prometheus: {prometheus_url(cfg)}")
            stop.sleep(SETTLE_S)           # first scrapes in, so the first run's telemetry starts with it
            runs = [i for i in items if i.hypothesis != "pause"]
            n = 0
            for item in items:
                stop.check()
                if item.hypothesis == "pause":
                    say(f"idle {IDLE_PAUSE_S} s: the disk's baseline (H2A's gate falls back on it without Stack A's "
                        "own reads)")
                    stop.sleep(IDLE_PAUSE_S)
                    continue
                n += 1
                say(f"[{n}/{len(runs)}] {item.hypothesis} on {item.stack} ({time.monotonic() - t0:.0f} s elapsed)")
                code, run_id = run_locust(item.hypothesis, item.stack, cfg, running, item.env)
                if run_id:
                    run_ids.append(run_id)
                if code not in (0, 1):
                    say(f"    locust exited with status {code}; going on with the next run")
            stop.check()
            time.sleep(2)          # the last samples reach Prometheus
            if not quick:
                # the largest load meeting the request objective, on the stacks as the demo started them: before
                # the pairs, which restart Stack B in each tier mode and stop it at their end
                for name in ("stackB", "stackA"):
                    stop.check()
                    say(f"capacity of {name} ({time.monotonic() - t0:.0f} s elapsed) ...")
                    capacity.run(cfg, CAPACITY["hypothesis"], name, most=CAPACITY["most"],
                                 duration_s=CAPACITY["duration_s"], context_tokens=CAPACITY["context_tokens"])
                # the paired method in small: 6 pairs of B1 vs B2, deltas with their intervals
                say(f"paired B1/B2 repeats ({time.monotonic() - t0:.0f} s elapsed) ...")
                code = pairs.run(cfg, PAIRS["pairs"], ("B1", "B2"), PAIRS["concurrency"],
                                 PAIRS["context_tokens"], PAIRS["duration_s"], mechanism_gate=True,
                                 allow_missing_kvbm=False)
                if code > 128:     # interrupted there: its own handler had the signal
                    raise Interrupted(code - 128)
            say(f"writing the report ({len(run_ids)} runs) ...")
            out = resolve(cfg.results_dir) / f"demo-report-{time.strftime('%Y%m%dT%H%M%S')}"
            args = [a for r in run_ids for a in ("--run", r)]
            rep = subprocess.run([sys.executable, "-m", "analysis", "--config", cfg.overlay, "report", *args, "--out",
                                  str(out)], cwd=PROJECT_ROOT, capture_output=True, text=True)
            if rep.returncode != 0:
                say(rep.stderr.strip().splitlines()[-1] if rep.stderr.strip() else "analysis failed")
                return 1
            say(rep.stdout.strip())
            say(f"demo finished in {time.monotonic() - t0:.0f} s; results: {resolve(cfg.results_dir)}")
            return 0
        except StartError as exc:
            say(f"error: {exc}")
            return 1
        except (Interrupted, KeyboardInterrupt) as exc:
            say("interrupted: stopping what the demo started; the results recorded so far stay under "
                f"{resolve(cfg.results_dir)}")
            return getattr(exc, "code", 130)
        finally:
            end_locust(running)
            stopped = sup.stop_mine()
            if stopped:
                say("stopped " + ", ".join(stopped))


def register(sub) -> None:
    p = sub.add_parser("demo", help="the end-to-end demo on simulated stacks (configs/demo.yaml; --config or "
                                    "$HARNESS_CONFIG layered over it)")
    p.add_argument("--quick", action="store_true", help="H0 and H2 only, shorter steps (CI)")
    p.set_defaults(func=lambda args: main(quick=args.quick, overlay=args.config))
