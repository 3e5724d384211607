"""python -m analysis report|export — PromQL-driven offline reports of runs under results/."""
from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

from configs import ConfigError, load
from configs.errors import cli_main
from configs.paths import check_name, resolve
from configs.runfiles import read_manifest



def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def shown(name: str) -> str:
    """A run directory's name on one line: quoted where it holds a newline or another unprintable character."""
    return name if name.isprintable() else repr(name)


def select_runs(results: Path, run_ids: list[str], all_runs: bool, since: str | None) -> list[Path]:
    if run_ids:
        dirs = [results / check_name(r, "run id") for r in run_ids]
        missing = [d.name for d in dirs if not (d / "manifest.json").exists()]
        if missing:
            raise ConfigError(f"no run {missing[0]!r} under {results} (a run directory holds manifest.json)")
        return dirs
    starts = {}
    for d in sorted(results.glob("*")):
        if (d / "manifest.json").exists():
            try:
                starts[d] = float(read_manifest(d / "manifest.json")["start"])
            except (ValueError, TypeError) as exc:          # one damaged run never blocks the others
                progress(f"skipped {shown(d.name)}: {exc}")
    dirs = sorted(starts, key=starts.get)
    if since:
        try:
            cutoff = datetime.fromisoformat(since).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            raise ConfigError(f"--since {since!r}: expected a date or time such as 2026-11-24 or 2026-11-24T18:00")
        dirs = [d for d in dirs if starts[d] >= cutoff]
    if not dirs:
        raise ConfigError(f"no runs to report under {results}")
    if not (all_runs or since):
        raise ConfigError("name runs with --run, or use --all / --since")
    return dirs


def of_fleet(runs: list[Path], rigs: list[str], sites: list[str]) -> list[Path]:
    """The runs whose manifest names one of ``rigs`` (when given) and one of ``sites`` (when given)."""
    wanted = {"rig": {check_name(r, "rig") for r in rigs}, "site": {check_name(s, "site") for s in sites}}
    kept = []
    for d in runs:
        try:
            m = read_manifest(d / "manifest.json")
        except (ValueError, TypeError, OSError) as exc:     # one damaged run never blocks the others
            progress(f"skipped {shown(d.name)}: {exc}")
            continue
        if all(not names or m.get(key) in names for key, names in wanted.items()):
            kept.append(d)
    if not kept:
        asked = "; ".join(f"{key} {', '.join(sorted(names))}" for key, names in wanted.items() if names)
        raise ConfigError(f"no runs of {asked} among the {len(runs)} selected (a run's rig and site are in its "
                          "manifest.json)")
    return kept


PROMETHEUS_HELP = ("Prometheus API URL: the rig's own (default, from configs) or a fleet's store such as "
                   "VictoriaMetrics (http://store:8428)")


def register(sub, **common) -> None:
    """``report`` and ``export`` on ``sub`` (``common``: add_parser keywords of the caller, e.g. parents); each
    takes --prometheus too, so it may follow the verb as well as precede it."""
    rep = sub.add_parser("report", help="CSVs, figures, verdict.json, report.md and report.html", **common)
    rep.add_argument("--run", action="append", default=[], help="run id (repeatable)")
    rep.add_argument("--all", action="store_true", help="every run under results/")
    rep.add_argument("--since", help="runs started at or after this UTC date/time")
    rep.add_argument("--rig", action="append", default=[],
                     help="only runs of this rig (repeatable; without --run/--since: all of its runs); two or more "
                          "put the same hypothesis side by side across rigs")
    rep.add_argument("--site", action="append", default=[], help="only runs of rigs at this site (repeatable)")
    rep.add_argument("--offline", action="store_true", help="read telemetry exported beside each run")
    rep.add_argument("--out", help="directory of the combined report (default results/report-<UTC time>)")
    exp = sub.add_parser("export", help="save a run's telemetry beside it, for report --offline", **common)
    exp.add_argument("--run", action="append", required=True, help="run id (repeatable)")
    for p in (rep, exp):
        p.add_argument("--prometheus", "--prometheus-url", dest="prometheus", default=argparse.SUPPRESS,
                       help=PROMETHEUS_HELP)
        p.set_defaults(func=run)


@cli_main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    ap.add_argument("--config", help="overlay YAML (default: $HARNESS_CONFIG)")
    ap.add_argument("--prometheus", "--prometheus-url", dest="prometheus", help=PROMETHEUS_HELP)
    sub = ap.add_subparsers(dest="cmd", required=True)
    register(sub)
    args = ap.parse_args(argv)
    return args.func(args)


def run(args) -> int:
    # here, not at the top: registering the verbs (sparkrig --help) must not import pandas and matplotlib
    from . import report as cross
    from .promdata import FileSource, PrometheusSource, TelemetryError, export
    from .run import analyse, was_tiered, window, write
    from .steps import load_run
    from .telemetry import pull
    args.prometheus = getattr(args, "prometheus", None)
    cfg = load(args.config)
    results = resolve(cfg.results_dir)
    url = args.prometheus or f"http://{cfg.prometheus.listen}:{cfg.prometheus.port}"
    step = cfg.prometheus.fast_interval_ms / 1000
    tiered = {name for name, s in cfg.stacks.items() if s.kv_tiering}
    try:
        if args.cmd == "export":
            source = PrometheusSource(url, progress=progress)
            source.check()
            for run_dir in select_runs(results, args.run, False, None):
                manifest, records = load_run(run_dir)
                start, end = window(manifest, records)
                progress(f"exporting {run_dir.name} ...")
                frames = pull(source, manifest, start - 30, end, step, progress)
                export(frames, run_dir / "telemetry", {"run_id": manifest["run_id"], "prometheus": url,
                                                       "start": start - 30, "end": end, "step_s": step})
                print(f"exported {run_dir / 'telemetry'}")
            return 0
        fleet = bool(args.rig or args.site)
        runs = select_runs(results, args.run, args.all or fleet, args.since)
        if fleet:
            runs = of_fleet(runs, args.rig, args.site)
        online = None
        if not args.offline:
            online = PrometheusSource(url, progress=progress)
            online.check()
        analyses = []
        for i, run_dir in enumerate(runs, 1):
            progress(f"[{i}/{len(runs)}] analysing {run_dir.name}")
            try:
                source = FileSource(run_dir / "telemetry") if args.offline else online
                manifest = read_manifest(run_dir / "manifest.json")
                a = analyse(run_dir, source, step, was_tiered(manifest, tiered), progress)
            except (ValueError, KeyError, TypeError) as exc:       # this run's files, not the tool
                progress(f"not analysed {run_dir.name}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                continue
            except TelemetryError as exc:
                if not args.offline:                               # Prometheus itself: no run can be done
                    raise
                progress(f"not analysed {run_dir.name}: {exc}")
                continue
            write(a, run_dir / "analysis")
            analyses.append(a)
        if not analyses:
            raise ConfigError(f"none of the {len(runs)} run(s) could be analysed (see the lines above)")
        # a report never replaces an earlier one: each in its own directory, named by when it was made
        out = Path(args.out) if args.out else results / f"report-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
        progress(f"writing the report to {out}")
        experiments = tuple(sorted(d for kind, done in (("pairs", "verdict.json"), ("capacity", "capacity.json"))
                                   for d in results.glob(f"{kind}-*") if (d / done).is_file()))
        written = cross.build(analyses, out, progress, experiments)
    except TelemetryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for a in analyses:
        print(f"{a.run_id}: {a.verdict}")
    print(f"report: {written['report.md']}")
    print(f"html:   {written['report.html']}")
    print(f"figures: {out / 'figures'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
