"""What a person watching a headless run reads (master / local process, on stderr): what is about to run
and for how long, one line per step as it ends, and at the end a table of the steps and the command that
turns the run into a report.

A step's numbers are the analysis' own (analysis.steps.step_table over the step's records, read back from
the run's requests.jsonl, warm-up excluded): the console and the report cannot disagree. On a tiered stack
the line adds the kv_tier2 disk's reads per second and the share of onboarded blocks that came from disk,
averaged over the step from Prometheus (analysis.telemetry's queries), or ``n/a`` when Prometheus cannot
say. The line is computed near the end of the next step's warm-up, which the analysis leaves out anyway,
so the requests still streaming when the step ended have ended too (one longer than that warm-up is in the
report, not in the line; the last step's line waits for every record)."""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Optional

import gevent
import pandas as pd

from analysis import telemetry
from analysis.promdata import PrometheusSource, TelemetryError
from analysis.steps import FIELDS, frame, step_table, warmup_s
from configs.discovery import prometheus_url
from configs.loader import DEFAULT_FILES
from configs.runfiles import parse_records
from configs.sizes import format_duration
from configs.spill import prediction

# seconds a master waits after a step's end for its workers' last records of it (they flush twice a second)
WORKER_LAG_S = 1.0
COLUMNS = ("step", "label", "ok", "ttft p50/p99 ms", "itl p50/p99 ms", "tpot p50/p99 ms", "out tok/s", "good",
           "errors", "cut", "shed")
TIERED = ("kv_tier2 r/s", "disk onboard")


def ms(seconds: float) -> str:
    """Milliseconds to a resolution that shows a difference: 0.1 ms under 10 ms (inter-token gaps), 1 ms above."""
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f}" if seconds < 0.01 else f"{seconds * 1000:.0f}"


def _ms(a: float, b: float) -> str:
    return "n/a" if math.isnan(a) else f"{ms(a)}/{ms(b)}"


def good(row: dict) -> str:
    """The share of served requests within the request objective, and whether the step meets it (the
    objective's percentile): "97% ok", "80% MISS"."""
    share = row["good_share"]
    if share is None or math.isnan(share):
        return "n/a"
    return f"{share:.0%} {'ok' if row['meets_slo'] else 'MISS'}"


class Console:
    def __init__(self, st) -> None:
        self.st = st
        self.rows: list[dict] = []
        self._offset = 0                              # how far requests.jsonl has been read
        self._records: dict[int, list[dict]] = {}     # records of steps whose line is not printed yet
        self._pending: list[gevent.Greenlet] = []
        self.records: Optional[Path] = None           # the run's requests.jsonl (master / local)
        self.done = False
        self.tiered = st.plan.stack.kv_tiering and st.plan.tier_mode == "B2"

    def say(self, line: str) -> None:
        print(f"[{self.st.plan.hypothesis_id}] {line}", file=sys.stderr, flush=True)

    # ---- the start --------------------------------------------------------------------------------
    def banner(self, target: str, results: Path, run_time: Optional[float], sizing: str) -> None:
        st, plan = self.st, self.st.plan
        files = [str(Path(f).relative_to(Path(f).parents[1])) for f in DEFAULT_FILES] + \
            ([st.cfg.overlay] if st.cfg.overlay else [])
        mode = f", tier mode {plan.tier_mode}" if plan.tier_mode else ""
        self.say(f"run {st.run_id}: {plan.stack_name} at {target} ({plan.model_handle}), profile "
                 f"{plan.profile_name}{mode}")
        self.say(f"configuration: {' + '.join(files)}; Prometheus {prometheus_url(st.cfg)}; results in {results}")
        planned = plan.planned_s
        expected = min(planned, run_time) if run_time else planned
        cut = f", cut to {format_duration(expected)} by -t" if run_time and run_time < planned else ""
        self.say(f"{plan.length()} expected{cut}; {sizing}")
        if (spill := prediction(plan)) is not None:
            self.say(spill)

    # ---- each step ----------------------------------------------------------------------------------
    def step_ended(self, index: int, master: bool) -> None:
        """Step ``index`` ended (its manifest entry has its end): its line once its records are in."""
        lag = 0.8 * warmup_s(self.st.plan.step_duration_s) + (WORKER_LAG_S if master else 0.0)
        self._pending.append(gevent.spawn_later(lag, self._line, index))

    def _read(self) -> None:
        path = self.records
        if path is None or not path.exists():
            return
        with open(path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        whole = chunk[:chunk.rfind(b"\n") + 1]
        self._offset += len(whole)
        if not whole:
            return
        for rec in parse_records(whole.splitlines(keepends=True), FIELDS):
            self._records.setdefault(rec.get("step"), []).append(rec)

    def _line(self, index: int) -> None:
        manifest = self.st.sink.manifest
        if manifest is None or index >= len(manifest.doc["steps"]):
            return
        doc = manifest.doc
        step = doc["steps"][index]
        try:
            self._read()
            records = frame(self._records.pop(index, []))
            row = step_table({**doc, "steps": [step]}, records).iloc[0].to_dict()
        except (OSError, ValueError, KeyError, TypeError) as exc:     # the line, never the run
            self.say(f"step {index + 1}/{len(self.st.slots)} done, {step['label']}: no summary "
                     f"({type(exc).__name__}: {exc}); the records are in {self.records}")
            return
        if self.tiered:
            start, end = step["start"] + row["warmup_s"], row["end"]
            row["kv_tier2 r/s"], row["disk onboard"] = self._telemetry(doc, start, end)
        self.rows.append(row)
        self.say(f"step {index + 1}/{len(self.st.slots)} done, {step['label']}: " + "  ".join(
            f"{name} {value}" for name, value in zip(self._columns()[2:], self._cells(row)[2:])))

    def _telemetry(self, doc: dict, start: float, end: float) -> tuple[str, str]:
        if end <= start:
            return "n/a", "n/a"
        source = PrometheusSource(prometheus_url(self.st.cfg), retries=0, timeout_s=3)
        names = {"run_id": telemetry.quote(doc["run_id"]), "stack": telemetry.quote(doc["stack"]),
                 "scope": telemetry.scope(doc)}
        out = []
        for name, form in (("nvme_reads", "{:.0f}"), ("kv_onboard_share_disk", "{:.0%}")):
            try:
                series = source.range(name, telemetry.QUERIES[name][0].format(**names), start, end, 1.0)
            except TelemetryError:
                out.append("n/a")
                continue
            value = telemetry.window_mean(series, start, end)
            out.append("n/a" if math.isnan(value) else form.format(value))
        return out[0], out[1]

    def _columns(self) -> tuple[str, ...]:
        return COLUMNS + (TIERED if self.tiered else ())

    def _cells(self, row: dict) -> list[str]:
        cells = [str(row["slot"] + 1), row["label"], str(row["ok"]), _ms(row["ttft_p50_s"], row["ttft_p99_s"]),
                 _ms(row["itl_p50_s"], row["itl_p99_s"]), _ms(row["tpot_p50_s"], row["tpot_p99_s"]),
                 "n/a" if math.isnan(row["output_tokens_per_s"]) else f"{row['output_tokens_per_s']:.0f}",
                 good(row), str(row["errors"]), str(row["cancelled_by_step"]), str(row["shed_by_client"])]
        return cells + ([row["kv_tier2 r/s"], row["disk onboard"]] if self.tiered else [])

    # ---- the end ------------------------------------------------------------------------------------
    def finish(self, results: Path) -> None:
        """After the run closed: every step's line not printed yet, the table and the next command."""
        manifest = self.st.sink.manifest
        if manifest is None or self.done:
            return
        self.done = True
        for greenlet in self._pending:
            greenlet.kill()
        printed = {r["slot"] for r in self.rows}
        for index, step in enumerate(manifest.doc["steps"]):
            if step["index"] not in printed:
                self._line(index)
        if self.rows:
            table = pd.DataFrame([self._cells(r) for r in self.rows], columns=self._columns())
            print(table.to_string(index=False), file=sys.stderr, flush=True)
        config = f" --config {self.st.cfg.overlay}" if self.st.cfg.overlay else ""
        self.say(f"{manifest.doc['status']}: {len(self.rows)} of {len(self.st.slots)} steps in {results}; next: "
                 f"sparkrig report{config} --run {self.st.run_id}")

