"""python -m rig up|down|status|render|demo|sweep|ratesweep|capacity|rehydrate|pairs|pack|hygiene|dynamo|doctor — the
local stand-in for docker compose."""
from __future__ import annotations

import argparse

from configs.errors import cli_main

from . import capacity, demo, doctor, dynamo, hygiene, local, pack, pairs, ratesweep, rehydrate, sweep

# each registers its own subcommands (add_parser + set_defaults(func=...)), in the order --help lists them
COMMANDS = (local, demo, sweep, pairs, rehydrate, pack, hygiene, ratesweep, capacity, dynamo, doctor)


@cli_main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rig", description=__doc__)
    ap.add_argument("--config", help="overlay YAML (default: $HARNESS_CONFIG)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for module in COMMANDS:
        module.register(sub)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
