"""``python -m configs``: validate configuration files, show resolved run plans, list the hypotheses with
how long each runs, print tier env."""
from __future__ import annotations

import argparse
import json
import os
import sys

from . import kvbm_checks, redact, tier_env
from .errors import cli_main
from .loader import load
from .plan import plan_run
from .schema import to_plain


def register(sub, **common) -> None:
    """``validate``, ``show`` and ``tier-env`` on ``sub`` (``common``: add_parser keywords of the caller)."""
    sub.add_parser("validate", help="load and validate; print a one-line summary", **common)
    show = sub.add_parser("show", help="print the merged configuration, or one hypothesis's run plan, as JSON",
                          **common)
    show.add_argument("--hypothesis", help="e.g. H2B: print its plan with the environment overrides applied")
    hy = sub.add_parser("hypotheses", help="each hypothesis: its claim, stacks, profile, steps and how long a run "
                        "takes with the configuration's (and the environment's) settings", **common)
    hy.add_argument("--markdown", action="store_true", help="a Markdown table (the README's)")
    te = sub.add_parser("tier-env", help="same as python -m configs.tier_env", **common)
    te.add_argument("--profile", required=True)
    te.add_argument("--stack", default="stackB")
    te.add_argument("--tier-mode", default="B2", help="B0 (off), B1 (cpu_only) or B2 (cpu_disk)")
    te.add_argument("--offload", choices=("kvbm", "trtllm"), help="default: the stack's kv_offload")
    for name, parser in sub.choices.items():
        if name in ("validate", "show", "hypotheses", "tier-env"):
            parser.set_defaults(func=run, config_cmd=name)


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m configs", description=__doc__)
    ap.add_argument("--config", help="overlay YAML merged over the shipped configs (default: $HARNESS_CONFIG)")
    register(ap.add_subparsers(dest="cmd", required=True))
    args = ap.parse_args(argv)
    return args.func(args)


def run(args) -> int:
    if args.config_cmd == "tier-env":      # before loading: tier_env loads and says its own errors
        return tier_env.main(["--profile", args.profile, "--stack", args.stack, "--tier-mode", args.tier_mode,
                              *(("--offload", args.offload) if args.offload else ()),
                              *(("--config", args.config) if args.config else ())])
    cfg = load(args.config)
    if args.config_cmd == "validate":
        offload = next((s.kv_offload for s in cfg.stacks.values() if s.kv_tiering), "kvbm")
        for name, profile in cfg.profiles.items():
            for line in kvbm_checks.warnings(name, profile, offload=offload):
                print(f"warning: {line}", file=sys.stderr)
        print(f"ok: {len(cfg.stacks)} stacks, {len(cfg.profiles)} profiles, "
              f"{len(cfg.fio_profiles)} fio profiles, {len(cfg.hypotheses)} hypotheses"
              + (f"; overlay {cfg.overlay}" if cfg.overlay else "; no overlay"))
    elif args.config_cmd == "hypotheses":
        print(hypothesis_table(cfg, os.environ, markdown=args.markdown))
    else:
        data = plan_run(cfg, args.hypothesis, os.environ).snapshot() if args.hypothesis else to_plain(cfg)
        print(json.dumps(redact.plain(data), indent=2))
    return 0


def hypothesis_table(cfg, env, markdown: bool = False) -> str:
    """One row per hypothesis: a newcomer's first question is which to run and for how long (#29.4). The time
    is one run's, on each stack it runs on: steps x repetitions (x phases) x step duration, as the console
    announces it."""
    header = ("id", "claim", "stacks", "profile", "one run")
    rows = []
    for hid, hyp in cfg.hypotheses.items():
        plan = plan_run(cfg, hid, {**env, "STACK": hyp.stacks[0]})
        rows.append((hid, hyp.title, ", ".join(hyp.stacks), plan.profile_name,
                     plan.length() + (" each" if len(hyp.stacks) > 1 else "")))
    if markdown:
        return "\n".join("| " + " | ".join(r) + " |" for r in [header, ("---",) * len(header), *rows])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in [header, *rows])


if __name__ == "__main__":
    sys.exit(main())
