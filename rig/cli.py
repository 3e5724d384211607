"""sparkrig — one command for the storage-aware LLM-inference benchmarking rig.

Every verb is also reachable the way it always was (python -m rig|analysis|configs, locust -f
locustfiles/<hyp>.py --headless); this is one door to all of them, with --config before or after the verb.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from importlib import metadata

from configs.errors import cli_main
from configs.loader import OVERLAY_ENV
from configs.paths import PROJECT_ROOT

from . import capacity, demo, doctor, dynamo, hygiene, local, pack, pairs, ratesweep, rehydrate, runs, sweep

PACKAGE = "spark-storage-harness"
LOCUSTFILES = PROJECT_ROOT / "locustfiles"
# how the rig modules' help names a verb (`rig pairs`, python -m rig capacity …), never prose ("the rig serves")
MODULE_VERB = re.compile(r"(`?)(?:python -m rig|(?<=`)rig) (?=[a-z])")
# one example per verb: `sparkrig <verb> --help` ends with it
EXAMPLES = {
    "up": "sparkrig up --config my-rig.yaml            # exporters + Prometheus on loopback",
    "down": "sparkrig down",
    "status": "sparkrig status",
    "render": "sparkrig render --compose",
    "demo": "sparkrig demo                              # simulated stacks, Prometheus, Locust, report (~14 min)",
    "sweep": "sparkrig sweep --config my-rig.yaml",
    "pairs": "sparkrig pairs --pairs 6 --concurrency 4",
    "rehydrate": "sparkrig rehydrate --concurrency 1,2,4",
    "pack": "sparkrig pack --experiment pairs-20261203T074222Z",
    "hygiene": "sparkrig hygiene                           # lists trial runs; --archive moves them",
    "ratesweep": "sparkrig ratesweep H0",
    "capacity": "sparkrig capacity --hypothesis H0",
    "dynamo": "sparkrig dynamo install && sparkrig dynamo up",
    "run": "sparkrig run H2B -- --run-time 5m          # locust -f locustfiles/h2b.py --headless --run-time 5m",
    "report": "sparkrig report --run H2B-stackB-20261203T080000Z-ab12",
    "export": "sparkrig export --run H2B-stackB-20261203T080000Z-ab12",
    "runs": "sparkrig runs",
    "doctor": "sparkrig doctor --config my-rig.yaml --profile spill --worker-pid \"$(pgrep -of dynamo.trtllm)\"",
    "config": "sparkrig config tier-env --profile spill --offload trtllm",
    "validate": "sparkrig config validate --config my-rig.yaml",
    "show": "sparkrig config show --hypothesis H2B",
    "hypotheses": "DURATION_S=60 sparkrig config hypotheses   # what each takes with one-minute steps",
    "tier-env": "eval \"$(sparkrig config tier-env --profile spill)\"",
}


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults beside each option, examples kept as written."""


class Verbs:
    """A subparsers action that gives every verb registered through it --config, its help as description,
    shown defaults and its example, so the rig modules register once for `python -m rig` and here alike."""

    def __init__(self, sub, common: argparse.ArgumentParser) -> None:
        self.sub, self.common = sub, common
        self.choices = sub.choices

    def add_parser(self, name: str, **kw):
        kw.setdefault("description", kw.get("help"))
        kw.setdefault("formatter_class", Formatter)
        if name in EXAMPLES:
            kw.setdefault("epilog", f"example:\n  {EXAMPLES[name]}")
        for key in ("help", "description", "epilog"):  # a module's own words, as this door spells the verbs
            if kw.get(key):
                kw[key] = MODULE_VERB.sub(lambda m: m.group(1) + "sparkrig ", kw[key])
        kw["parents"] = [*kw.get("parents", ()), self.common]
        return self.sub.add_parser(name, **kw)


def version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:       # a checkout run without `pip install -e .`
        return "unknown (not installed)"


def _run(args) -> int:
    """`sparkrig run H2B [locust options]`: the hypothesis' locustfile, headless, with the overlay in
    $HARNESS_CONFIG as every locustfile reads it; Locust replaces this process (its signals, its exit status)."""
    path = LOCUSTFILES / f"{args.hypothesis.lower()}.py"
    known = sorted(p.stem.upper() for p in LOCUSTFILES.glob("h*.py")) + ["TR"]
    if args.hypothesis.lower() not in {k.lower() for k in known} or not path.is_file():
        print(f"error: no hypothesis {args.hypothesis!r} (known: {', '.join(known)})", file=sys.stderr)
        return 2
    extra = [a for a in args.locust if a != "--"]
    env = {**os.environ, **({OVERLAY_ENV: os.path.abspath(args.config)} if args.config else {})}
    argv = [sys.executable, "-m", "locust", "-f", str(path), "--headless", *extra]
    os.execve(sys.executable, argv, env)
    return 1                                      # not reached


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS,
                        help=f"overlay YAML merged over the shipped configs (default: ${OVERLAY_ENV})")
    ap = argparse.ArgumentParser(prog="sparkrig", description=__doc__, formatter_class=Formatter,
                                 epilog="examples:\n  sparkrig demo\n  sparkrig up --config my-rig.yaml\n"
                                        "  sparkrig run H2B\n  sparkrig report --all\n  sparkrig <verb> --help")
    ap.add_argument("--version", action="version", version=f"sparkrig {version()}")
    ap.add_argument("--config", help=f"overlay YAML merged over the shipped configs (default: ${OVERLAY_ENV})",
                    default=argparse.SUPPRESS)
    verbs = Verbs(ap.add_subparsers(dest="cmd", required=True, metavar="VERB"), common)
    for module in (local, demo, sweep, pairs, rehydrate, pack, hygiene, ratesweep, capacity, dynamo, runs,
                   doctor):
        module.register(verbs)
    from analysis import __main__ as analysis_cli
    analysis_cli.register(verbs)
    p = verbs.add_parser("run", help="run one hypothesis with Locust, headless (the rest goes to locust)")
    p.add_argument("hypothesis", help="H0 … H9, H2A, H2B, H4A, H4B, TR")
    p.add_argument("locust", nargs=argparse.REMAINDER, help="Locust options, e.g. --run-time 5m (after --)")
    p.set_defaults(func=_run)
    p = verbs.add_parser("config", help="validate the configuration, show it or a run plan, print tier setup")
    from configs import __main__ as configs_cli
    configs_cli.register(Verbs(p.add_subparsers(dest="config_cmd", required=True, metavar="ACTION"), common))
    return ap


@cli_main
def main(argv=None) -> int:
    args = parser().parse_args(argv)
    args.config = getattr(args, "config", None)   # before or after the verb, or neither
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
