"""python -m rig up|down|status|render|demo|sweep|ratesweep|rehydrate|pairs|pack|hygiene|dynamo — the local stand-in for docker compose."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from configs import load
from configs.discovery import prometheus_url
from configs.errors import cli_main
from configs.model import PLAYBOOK_PHASES
from configs.paths import PROJECT_ROOT

from . import local, promconfig
from .procs import StartError, Supervisor

COMPOSE_RULES, COMPOSE_TARGETS = "/etc/prometheus/rules", "/etc/prometheus/targets"


@cli_main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rig", description=__doc__)
    ap.add_argument("--config", help="overlay YAML (default: $HARNESS_CONFIG)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start the exporters and Prometheus as local processes")
    p_up.add_argument("--profile", default="spill", help="profile whose tier2_path and block size the exporters use")
    sub.add_parser("down", help="stop everything `up` (or the demo) started")
    sub.add_parser("status", help="list running processes and their logs")
    p_demo = sub.add_parser("demo", help="the end-to-end demo on simulated stacks (configs/demo.yaml; --config or "
                                          "$HARNESS_CONFIG layered over it)")
    p_demo.add_argument("--quick", action="store_true", help="H0 and H2 only, shorter steps (CI)")
    p_sweep = sub.add_parser("sweep", help="the v3.3 sweep playbook: phases A, B, C and the H9 check")
    p_sweep.add_argument("--phase", action="append", choices=list(PLAYBOOK_PHASES),
                         help="phases to run, in order (default: A B C H9)")
    p_pairs = sub.add_parser("pairs", help="paired AB/BA repeats of the rehydrate replay between two tier modes "
                                           "(default B1 vs B2): deltas, intervals, tests, order check, verdict")
    p_pairs.add_argument("--pairs", type=int, default=6, help="number of pairs (default 6; fewer than 3 give no "
                                                              "interval)")
    p_pairs.add_argument("--modes", default="B1,B2", help="the two tier modes, A then B; deltas are B - A")
    p_pairs.add_argument("--concurrency", type=int, default=4, help="users in every phase (the replay concurrency)")
    p_pairs.add_argument("--context-tokens", type=int, default=4096, help="session prefix length")
    p_pairs.add_argument("--duration-s", type=int, default=30, help="seconds per phase (populate, thrash, replay)")
    p_pairs.add_argument("--no-mechanism-gate", action="store_true",
                         help="go on when the first B2 leg shows no SSD mechanism (then never decision-grade)")
    p_pairs.add_argument("--allow-missing-kvbm", action="store_true",
                         help="go on without KVBM metrics (then never decision-grade: TELEMETRY_MISSING)")
    p_pairs.add_argument("--strict-baseline", action="store_true",
                         help="stop when the replay list differs from the known-good baseline (default: warn)")
    p_pairs.add_argument("--accept-new-baseline", action="store_true",
                         help="make this run's replay list the known-good baseline (an audit line is appended)")
    p_reh = sub.add_parser("rehydrate", help="the fixed-pressure rehydrate sweep: replay concurrency x tier mode, "
                                             "knee tables, a recommended concurrency for `rig pairs`")
    p_reh.add_argument("--modes", default="B0,B1,B2", help="tier modes to sweep (default B0,B1,B2)")
    p_reh.add_argument("--concurrencies", default="1,2,4,8", help="replay concurrencies (default 1,2,4,8)")
    p_reh.add_argument("--context-tokens", type=int, default=4096, help="session prefix length")
    p_reh.add_argument("--duration-s", type=int, default=30, help="seconds per phase (populate, thrash, replay)")
    p_pack = sub.add_parser("pack", help="a results pack from one `rig pairs` experiment: tables, order check, "
                                          "verdict, figures, config snapshot, methodology")
    p_pack.add_argument("pairs", help="the experiment: pairs-<ts> under results_dir, or its path")
    p_pack.add_argument("--name", help="pack name under <results_dir>/publish/ (default from the experiment)")
    p_hyg = sub.add_parser("hygiene", help="archive trial runs (unfinished, empty, damaged) under "
                                           "<results_dir>/trials/; a dry run unless --execute")
    p_hyg.add_argument("--execute", action="store_true", help="move them (default: only list them)")
    p_hyg.add_argument("--keep", action="append", help="a run or experiment to leave alone (repeatable)")
    p_rate = sub.add_parser("ratesweep", help="open-loop rates placed between the synchronous rate and the maximum "
                                              "throughput, both measured first (as guidellm's sweep)")
    p_rate.add_argument("hypothesis", help="a hypothesis with an open-loop workload, e.g. H0")
    p_rate.add_argument("--stack", default="stackB", help="stack to load (default stackB)")
    p_rate.add_argument("--points", type=int, default=6, help="rates in the sweep (default 6)")
    p_rate.add_argument("--max-concurrency", type=int, default=64, help="users of the maximum-throughput run")
    p_rate.add_argument("--calibrate-s", type=int, default=20, help="seconds of each calibration run")
    p_rate.add_argument("--duration-s", type=int, default=30, help="seconds per rate")
    p_dyn = sub.add_parser("dynamo", help="the real NVIDIA Dynamo (frontend + mocker engine) as a local Stack B")
    p_dyn.add_argument("action", choices=["install", "up", "down", "status"],
                       help="install into dynamo.venv; start on loopback and write <dynamo.home>/overlay.yaml; "
                            "stop; list")
    p_render = sub.add_parser("render", help="write Prometheus config and file_sd targets")
    p_render.add_argument("--compose", action="store_true",
                          help=f"write prometheus/prometheus.yml for containers ({COMPOSE_RULES}, {COMPOSE_TARGETS})")
    p_render.add_argument("--targets-dir", help="write only the file_sd targets, into this directory")
    args = ap.parse_args(argv)
    if args.cmd == "demo":
        from . import demo
        return demo.main(quick=args.quick, overlay=args.config)
    if args.cmd == "ratesweep":
        from . import ratesweep
        return ratesweep.main(args)
    if args.cmd == "hygiene":
        from . import hygiene
        return hygiene.main(args)
    if args.cmd == "pack":
        from . import pack
        return pack.main(args)
    if args.cmd == "rehydrate":
        from . import rehydrate
        return rehydrate.main(args)
    if args.cmd == "pairs":
        from . import pairs
        return pairs.main(args)
    if args.cmd == "sweep":
        from . import sweep
        return sweep.main(args.phase or list(PLAYBOOK_PHASES), Path(args.config) if args.config else None)
    cfg = load(args.config)
    if args.cmd == "dynamo":
        from . import dynamo
        try:
            return dynamo.main(args.action, cfg)     # cfg.overlay: the operator's, however it was given
        except StartError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if args.cmd == "up":
        try:
            started = local.up(cfg, args.profile)
        except StartError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        for s in started:
            print(f"started {s.name:<18} pid {s.pid:<7} log {s.log}")
        print(f"Prometheus: {prometheus_url(cfg)}  (stop everything with `make down`)")
    elif args.cmd == "down":
        stopped = local.down(cfg)
        print("stopped " + ", ".join(stopped) if stopped else "nothing was running")
    elif args.cmd == "status":
        sup = Supervisor(local.run_dir(cfg))
        running = sup.running()
        for name, pid in running.items():
            print(f"{name:<18} pid {pid:<7} log {sup.logs / (name + '.log')}")
        if not running:
            print("nothing is running")
    elif args.targets_dir:
        promconfig.check_compose_env(cfg, os.environ)
        for path in promconfig.write_targets(cfg, Path(args.targets_dir)):
            print(f"wrote {path}")
    elif args.compose:
        out = PROJECT_ROOT / "prometheus" / "prometheus.yml"
        out.write_text(promconfig.render(cfg, COMPOSE_RULES, COMPOSE_TARGETS, compose=True))
        print(f"wrote {out}")
    else:
        print(f"wrote {local.write_prometheus_config(cfg)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
