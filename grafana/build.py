"""Grafana dashboards as code: plain Python data written as JSON, no extra dependency.

    python grafana/build.py           # rewrite grafana/dashboards/*.json
    python grafana/build.py --check   # exit 1 when the committed JSON differs from this file's output

Every panel query uses recording rules or raw series our exporters, the stacks and the load
generator publish; the test suite runs each one against a real Prometheus that has scraped them.
Panels that can only have data on particular hardware say so with ``needs`` (kept in NEEDS, not in
the JSON), so that test can tell "no GPU here" from a broken query.
"""
from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from pathlib import Path

from configs import load
from configs.vocabulary import rules as R
from configs.vocabulary import series as S
from configs.vocabulary import stacks as V

OUT = Path(__file__).resolve().parent / "dashboards"
# Every panel reads the dashboard's datasource variable, whose default is the import's input: Grafana's
# import asks which Prometheus DS_PROMETHEUS is; a provisioned copy falls back to the default datasource.
INPUT = "DS_PROMETHEUS"
DS = {"type": "prometheus", "uid": "${datasource}"}
DASHBOARD_TAG = "sparkrig"                    # every board carries it; the links between boards follow it
NEEDS: dict[tuple[str, str], str] = {}        # (dashboard uid, panel title) -> hardware it needs
# the fleet's labels (Prometheus external_labels): a rig's own Prometheus stores none, and "All" (.*) also
# matches a series without them, so one dashboard serves a rig and a fleet's store alike
FLEET = 'rig=~"$rig", site=~"$site"'
FLEET_LABELS = ("rig", "site")


def var(name: str, query: str, label: str, multi: bool = True) -> dict:
    return {"name": name, "label": label, "type": "query", "datasource": DS, "query": {"query": query,
            "refId": f"var-{name}"}, "definition": query, "refresh": 2, "includeAll": True, "multi": multi,
            "allValue": ".*", "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1}


DATASOURCE_VAR = {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
                  "current": {"text": f"${{{INPUT}}}", "value": f"${{{INPUT}}}"}, "hide": 0, "refresh": 1}
FLEET_VARS = [var("rig", "label_values(up, rig)", "rig"), var("site", 'label_values(up{rig=~"$rig"}, site)', "site")]
RUN_VARS = [
    var("run_id", f"label_values({S.LOADGEN_STEP.name}{{{FLEET}}}, run_id)", "run"),
    var("stack", f'label_values({S.LOADGEN_STEP.name}{{{FLEET}, run_id=~"$run_id"}}, stack)', "stack"),
]
HOST_VARS = [var("instance", f'label_values(up{{role="exporter", {FLEET}}}, instance)', "exporter")]
DISK_VARS = HOST_VARS + [var("device", f"label_values({S.DISK_INFO.name}{{{FLEET}}}, device)", "device")]

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
             "offset"}
_AGGREGATIONS = {"sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
                 "count_values", "group"}
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\{[^}]*\}|\[[^\]]*\]|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|[A-Za-z_:][\w:]*|\s+|.',
                    re.S)


def scoped(expr: str, matchers: str = FLEET) -> str:
    """``expr`` with ``matchers`` in every selector: a metric name gets them in its braces (added where it
    has none); a label list after by/without/on/ignoring and a function's name are left alone. Our
    expressions are this module's and the vocabulary's, so a small scanner suffices."""
    tokens = _TOKEN.findall(expr)
    out, i, labels_next = [], 0, False
    while i < len(tokens):
        t = tokens[i]
        j = i + 1
        while j < len(tokens) and tokens[j].isspace():
            j += 1
        nxt = tokens[j] if j < len(tokens) else ""
        if t.startswith("{"):                                   # a selector without a name ({__name__=~…})
            out.append("{" + matchers + (", " + t[1:] if t[1:-1].strip() else "}"))
        elif re.fullmatch(r"[A-Za-z_:][\w:]*", t) and not labels_next:
            if t in _KEYWORDS:
                labels_next = t not in ("and", "or", "unless", "bool", "offset") and nxt == "("
                out.append(t)
            elif nxt == "(" or t in _AGGREGATIONS:              # a function or an aggregation
                out.append(t)
            elif nxt.startswith("{"):
                out.append(t + "{" + matchers + (", " + nxt[1:] if nxt[1:-1].strip() else "}"))
                out.extend(tokens[i + 1:j])
                i = j + 1
                continue
            else:
                out.append(t + "{" + matchers + "}")
        else:
            if labels_next and t == ")":
                labels_next = False
            out.append(t)
        i += 1
    return "".join(out)


class Board:
    def __init__(self, uid: str, title: str, variables: list, description: str) -> None:
        self.uid, self.title, self.description = uid, title, description
        self.variables = [DATASOURCE_VAR, *FLEET_VARS, *variables]
        self.panels: list[dict] = []
        self.annotations: list[dict] = [{
            "name": "Load generator (steps it posted)", "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "iconColor": "purple",
            "target": {"type": "tags", "tags": [S.ANNOTATION_TAG], "matchAny": False, "limit": 200}}]
        self._x = self._y = 0
        self._row_height = 8

    def panel(self, title: str, exprs: list[tuple[str, str]], unit: str = "short", width: int = 12,
              description: str = "", needs: str = "", overrides: list | None = None, kind: str = "timeseries",
              max_: float | None = None, threshold: float | None = None, height: int = 8,
              bad_below: bool = False) -> None:
        """A panel; ``threshold``: the value where a number turns bad (drawn as a line, red beyond on a stat;
        ``bad_below``: red under it, as a share that must reach a percentile)."""
        if self._x + width > 24:
            self._x, self._y = 0, self._y + self._row_height
        self._row_height = height if self._x == 0 else max(self._row_height, height)
        defaults = {"unit": unit, **({"max": max_} if max_ is not None else {})}
        if threshold is not None:
            low, high = ("red", "green") if bad_below else ("green", "red")
            defaults["thresholds"] = {"mode": "absolute", "steps": [{"color": low, "value": None},
                                                                   {"color": high, "value": threshold}]}
            if kind == "timeseries":
                defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
        options = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                   "tooltip": {"mode": "multi"}} if kind == "timeseries" else \
            {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "background",
             "graphMode": "area", "textMode": "value_and_name"} if kind == "stat" else {}
        self.panels.append({
            "id": len(self.panels) + 1, "type": kind, "title": title, "datasource": DS,
            "description": description + (f" Needs {needs}; empty without it." if needs else ""),
            "gridPos": {"x": self._x, "y": self._y, "w": width, "h": height},
            "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
            "options": options,
            "targets": [{"datasource": DS, "refId": chr(65 + i), "expr": scoped(e), "legendFormat": legend}
                        for i, (e, legend) in enumerate(exprs)],
        })
        if needs:
            NEEDS[(self.uid, title)] = needs
        self._x += width

    def step_annotations(self) -> None:
        """Step boundaries of Locust runs, from the step gauge the load generator publishes."""
        run = '{run_id=~"$run_id"}' if any(v["name"] == "run_id" for v in self.variables) else ""
        self.annotations.append({
            "name": "Steps", "datasource": DS, "enable": True, "iconColor": "orange",
            "expr": scoped(f'changes({S.LOADGEN_STEP.name}{run}[5s]) > 0'),
            "step": "5s", "titleFormat": "step {{step}}", "textFormat": "{{run_id}} {{stack}}",
            "tagKeys": "stack,hypothesis",
        })

    def json(self) -> dict:
        return {
            "__inputs": [{"name": INPUT, "label": "Prometheus", "description": "the rig's Prometheus (or a fleet's "
                          "store)", "type": "datasource", "pluginId": "prometheus", "pluginName": "Prometheus"}],
            "uid": self.uid, "title": self.title, "description": self.description, "tags": [DASHBOARD_TAG],
            "editable": True, "schemaVersion": 39, "version": 1, "refresh": "5s", "timezone": "browser",
            "time": {"from": "now-30m", "to": "now"}, "graphTooltip": 1,
            "links": [{"title": "sparkrig", "type": "dashboards", "tags": [DASHBOARD_TAG], "asDropdown": False,
                       "includeVars": True, "keepTime": True}],
            "templating": {"list": self.variables},
            "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                      "enable": True, "hide": True, "name": "Annotations & Alerts",
                                      "type": "dashboard"}] + self.annotations},
            "panels": self.panels,
        }


KV_TIER2 = [{"matcher": {"id": "byRegexp", "options": ".*kv_tier2.*"},
             "properties": [{"id": "custom.lineWidth", "value": 3}, {"id": "color",
                                                                     "value": {"mode": "fixed", "fixedColor": "red"}}]}]
SEL_RUN = 'run_id=~"$run_id", stack=~"$stack"'
SEL_DISK = 'instance=~"$instance", device=~"$device"'


@functools.cache
def r_await_objective_s() -> float:
    """The kv_tier2 disk's read-latency line (objectives.nvme_r_await_ms), from the configuration in effect."""
    return load().objectives.nvme_r_await_ms / 1000


def home() -> Board:
    """The question a user watching a run asks: is the NVMe tier shaping p99 right now?"""
    objective = r_await_objective_s()
    b = Board("sparkrig-home", "Is the NVMe tier shaping p99?", RUN_VARS,
              "TTFT p99 beside what the kv_tier2 disk and KVBM's disk tier do: when p99 rises with r_await and "
              "with KV onboarded from disk, storage is shaping latency. Links above go to the detail boards.")
    b.step_annotations()
    b.panel("TTFT p99", [(f'max({R.TTFT_P99}{{{SEL_RUN}}})', "p99")], unit="s", width=4, kind="stat", height=5)
    b.panel("TTFT p99 / p50", [(f'max({R.TTFT_P99_OVER_P50}{{{SEL_RUN}}})', "p99/p50")], unit="none", width=4,
            kind="stat", height=5, threshold=R.KNEE_RATIO,
            description=f"Over {R.KNEE_RATIO:g}: the test plan's knee (queueing or storage)")
    b.panel("kv_tier2 r_await", [(f'max({R.DISK_READ_AWAIT}{{role="kv_tier2"}})', "r_await")], unit="s", width=4,
            kind="stat", height=5, threshold=objective,
            description="Read latency of the disk holding the KV tier2 directory; red over objectives.nvme_r_await_ms")
    b.panel("Onboarded from disk", [(f'max({R.KV_ONBOARD_SHARE}{{from_tier="disk"}})', "disk share")],
            unit="percentunit", width=4, kind="stat", height=5, max_=1,
            description="Share of the KV blocks onboarded in the last 30 s that came from the disk tier",
            needs="KV blocks onboarded from host or disk in the last 30 s")
    b.panel("kv_tier2 read MB/s", [(f'sum({R.DISK_READ_BYTES_RATE}{{role="kv_tier2"}})', "read")], unit="Bps",
            width=4, kind="stat", height=5)
    b.panel("CPU iowait", [(f"avg({R.CPU_IOWAIT_RATIO})", "iowait")], unit="percentunit", width=4, kind="stat",
            height=5)
    right = [{"matcher": {"id": "byRegexp", "options": "r_await.*"},
              "properties": [{"id": "custom.axisPlacement", "value": "right"}, {"id": "unit", "value": "s"}]}]
    b.panel("TTFT p99 over kv_tier2 r_await", [
        (f'max by (stack) ({R.TTFT_P99}{{{SEL_RUN}}})', "{{stack}} TTFT p99"),
        (f'max({R.DISK_READ_AWAIT}{{role="kv_tier2"}})', "r_await kv_tier2"),
        (f"vector({objective:g})", "r_await objective")], unit="s", overrides=right,
        description="p99 (left) and the kv_tier2 disk's read latency (right) on one time axis, the objective dashed")
    b.panel("KV onboarded from disk vs bytes read from the kv_tier2 disk", [
        (f'sum({R.KV_TRANSFER_BYTES_RATE}{{direction="onboard",from_tier="disk"}})',
         "onboarded from disk (KV counters)"),
        (f'sum({R.DISK_READ_BYTES_RATE}{{role="kv_tier2"}})', "read from the kv_tier2 disk")], unit="Bps",
        description="The KV counters' claim beside the disk's reads: a claim with no reads under it is not storage")
    return b


def run_overview() -> Board:
    b = Board("sparkrig-run", "Run overview", RUN_VARS, "Latency, throughput and load of Locust runs, "
              "Stack A vs Stack B side by side; orange marks are step boundaries.")
    b.step_annotations()
    for name, rules in (("TTFT", (R.TTFT_P50, R.TTFT_P95, R.TTFT_P99)), ("E2E", (R.E2E_P50, R.E2E_P95, R.E2E_P99))):
        b.panel(f"{name} p50 / p95 / p99 by stack", [
            (f'max by (stack) ({rule}{{{SEL_RUN}}})', f"{{{{stack}}}} {q}")
            for rule, q in zip(rules, ("p50", "p95", "p99"))], unit="s")
    b.panel(f"TTFT p99 / p50 (knee when > {R.KNEE_RATIO:g})", [
        (f'max by (stack) ({R.TTFT_P99_OVER_P50}{{{SEL_RUN}}})', "{{stack}}")], unit="none", threshold=R.KNEE_RATIO)
    b.panel("Requests per second by HTTP status and error class", [
        (f'sum by (stack, status, error_class) (rate({S.REQUESTS.total}{{{SEL_RUN}}}[30s]))',
         "{{stack}} {{status}} {{error_class}}")], unit="reqps",
        description="error_class tells apart failures that arrive with HTTP 200, such as an SSE error event "
                    "mid-stream (stream_error)")
    b.panel("Dynamo frontend outcomes (its own counters)", [
        (f'sum by (status, error_type) (rate({V.FE_REQUESTS}_total[30s]))', "{{status}} {{error_type}}"),
        (f'sum by (class, reason) (rate({V.FE_FAILURES}_total[30s]))', "failed: {{class}} {{reason}}")],
        unit="reqps", description="A 400 (e.g. an unsupported session_id) is counted only in failures_total, "
                                  "never in requests_total; cancelled streams are requests_total "
                                  "error_type=cancelled")
    b.panel("Active users", [(f'sum by (stack) ({S.LOADGEN_USERS.name}{{{SEL_RUN}}})', "{{stack}}")])
    b.panel("Step target: concurrency and context", [
        (f'max by (stack) ({S.LOADGEN_CONCURRENCY.name}{{{SEL_RUN}}})', "{{stack}} concurrency"),
        (f'max by (stack) ({S.LOADGEN_CONTEXT.name}{{{SEL_RUN}}})', "{{stack}} context tokens")])
    b.panel("Inter-token latency (gaps between chunks) p50 / p99", [
        (f'max by (stack) ({rule}{{{SEL_RUN}}})', f"{{{{stack}}}} {q}")
        for rule, q in ((R.ITL_P50, "p50"), (R.ITL_P99, "p99"))], unit="s")
    b.panel("Time per output token p50 / p99", [
        (f'max by (stack) ({rule}{{{SEL_RUN}}})', f"{{{{stack}}}} {q}")
        for rule, q in ((R.TPOT_P50, "p50"), (R.TPOT_P99, "p99"))], unit="s",
        description="(E2E - TTFT) / (output tokens - 1) per request, as vLLM's benchmark and aiperf define it")
    objective_shares(b)
    b.panel("Output tokens per joule (GPUs' energy counter)", [
        (f'max by (stack) ({R.OUTPUT_TOKENS_PER_JOULE}{{{SEL_RUN}}})', "{{stack}}")], unit="short",
        description="Served output tokens/s over the GPUs' power from NVML's energy counter; empty where NVML has "
                    "no energy counter (GB10 may not): never a 0",
        needs="NVML's energy counter (nvmlDeviceGetTotalEnergyConsumption)")
    fe = [f"{x:g}" for x in V.FE_TTFT_BUCKETS if x > 0]
    widest = max(b / a for a, b in zip(V.FE_TTFT_BUCKETS[1:], V.FE_TTFT_BUCKETS[2:]))
    b.panel("Stack-side TTFT p99 (frontend's own histograms)", [
        (f'histogram_quantile(0.99, sum by (le) (rate({V.FE_TTFT}_bucket[30s])))', "Stack B (Dynamo frontend)"),
        ('histogram_quantile(0.99, sum by (le) (rate({__name__=~"'
         + V.TRTLLM_TTFT.replace("_", "[_:]", 1) + '_bucket"}[30s])))', "Stack A (trtllm-serve)")], unit="s",
        description=f"Coarse: Dynamo {V.DYNAMO_RELEASE} serves TTFT buckets {', '.join(fe[:10])} … s, up to "
                    f"{widest:.1f}x apart, so this p99 can be off by that factor. The TTFT panels above use the "
                    "load generator's own histograms (buckets at most 1.2x apart); the report's exact "
                    "percentiles come from the request records.")
    return b


def objective_shares(b: Board) -> None:
    """Per bound of the request objective (objectives.requests), the share of served requests within it, read
    from the load generator's histogram at the largest bucket edge not over the bound: a share that can only
    understate, never a pass the records would not give. Goodput needs every bound at once, which separate
    histograms cannot say: the report's good_share and goodput_rps come from the records."""
    from prometheus_client.utils import floatToGoString
    slo = load().objectives.requests
    targets, said = [], []
    for name, series, buckets, bound in (("TTFT", S.REQUEST_TTFT, S.LATENCY_BUCKETS, slo.ttft_s),
                                         ("TPOT", S.REQUEST_TPOT, S.GAP_BUCKETS, slo.tpot_s),
                                         ("E2E", S.REQUEST_E2E, S.LATENCY_BUCKETS, slo.e2e_s)):
        edges = [x for x in buckets if bound is not None and x <= bound]
        if not edges:
            continue
        le = floatToGoString(edges[-1])
        targets.append((f'sum by (stack) (rate({series.name}_bucket{{{SEL_RUN}, le="{le}"}}[30s])) / '
                        f'sum by (stack) (rate({series.name}_count{{{SEL_RUN}}}[30s]))', f"{{{{stack}}}} {name} <= {le} s"))
        said.append(f"{name} <= {bound:g} s read at the bucket edge {le} s")
    if targets:
        b.panel(f"Requests within the objective's bounds (line: {slo.percentile:g} %)", targets,
                unit="percentunit", max_=1, threshold=slo.percentile / 100, bad_below=True,
                description="Share of served requests within each bound of objectives.requests (" + "; ".join(said)
                            + "): it can only understate. A hypothesis' own slo is not drawn here; goodput "
                            "(every bound at once) is in the report, from the request records.")


def kv_tiers() -> Board:
    b = Board("sparkrig-kv", "KV tiers", [], "Stack B's KV tier movement (KVBM's counters, or TensorRT-LLM's "
              "offload counters under kv_offload: trtllm), normalised by the kvbm exporter: hit ratios, "
              "blocks and bytes per tier and direction, occupancy, matched tokens. Its series carry no run: open it "
              "from a run's board (the links keep the time range).")
    b.step_annotations()
    b.panel("Tier hit ratio (KVBM sliding window)", [(R.KV_HIT_RATIO, "{{tier}}")],
            unit="percentunit", max_=1)
    b.panel("Share of onboarded blocks by source tier", [
        (R.KV_ONBOARD_SHARE, "{{from_tier}}")], unit="percentunit", max_=1,
        description="Empty while nothing is onboarded: a share of nothing is no signal",
        needs="KV blocks onboarded from host or disk in the last 30 s")
    b.panel("Requests waiting on KV onboarding", [(f"max({S.KV_ONBOARDING_REQUESTS.name})", "onboarding")],
            unit="short", description="KVBM's scheduler_onboarding: requests whose onboard transfers are pending, "
                                      "the queue a first token waits behind; published by releases after 1.6.1",
            needs=f"a KVBM release after 1.6.1 ({V.KVBM}{V.KVBM_SCHEDULER_ONBOARDING})")
    b.panel("Blocks per second by tier and direction", [
        (R.KV_TRANSFER_BLOCKS_RATE, "{{direction}} {{from_tier}}→{{to_tier}}")], unit="short")
    b.panel("Bytes per second by tier and direction", [
        (R.KV_TRANSFER_BYTES_RATE, "{{direction}} {{from_tier}}→{{to_tier}}")], unit="Bps")
    b.panel("Disk tier: the KV counters' claim vs bytes really read", [
        (f'{R.KV_TRANSFER_BYTES_RATE}{{direction="onboard",from_tier="disk"}}',
         "onboarded from disk (KV counters)"),
        (f'{R.KV_TIER2_FILE_BYTES_RATE}{{direction="read"}}', "read from the tier2 file"),
        (f'sum({R.DISK_READ_BYTES_RATE}{{role="kv_tier2"}})', "read from the kv_tier2 disk")], unit="Bps",
        description="The KV counters (KVBM's or the engine's) are what it believes it moved; the file and disk "
                    "lines are bytes that were really read. A claim above both is not backed by storage (the "
                    "ssd_mechanism gate fails it).")
    b.panel("Tier occupancy", [(f"{S.KV_TIER_OCCUPANCY.name} / {S.KV_TIER_CAPACITY.name}", "{{tier}}")],
            unit="percentunit", max_=1)
    b.panel("Matched tokens per second", [(f"rate({S.KV_MATCHED_TOKENS.total}[30s])", "matched")])
    b.panel("Engine KV usage and prefix-cache hit share", [
        (S.KV_TIER_USAGE.name, "{{tier}} KV usage (worker)"),
        (R.KV_PREFIX_HIT_RATIO, "prompt tokens from the prefix cache (frontend)")],
        unit="percentunit", max_=1)
    b.panel("KV metrics scrape health (KVBM or the engine)", [(S.KVBM_UP.name, "{{target}} up"),
                                   (f"rate({S.KVBM_SCRAPE_ERRORS.total}[1m])", "{{target}} {{reason}} errors/s")])
    b.panel("Tier2 read latency vs NVMe r_await (kv_tier2 disk)", [
        (f'{R.DISK_READ_AWAIT}{{role="kv_tier2"}}', "{{device}} r_await"),
        (f'histogram_quantile(0.95, sum by (le) (rate({S.SIM_FETCH.name}_bucket{{tier="disk"}}[30s])))',
         "tier2 fetch p95 (simulator)")], unit="s", threshold=r_await_objective_s())
    return b


def nvme() -> Board:
    b = Board("sparkrig-nvme", "NVMe", DISK_VARS, "iostat -x equivalents from recording rules; the disk holding "
              "the KV tier2 directory (role=kv_tier2) is drawn thick and red; the line is the r_await objective.")
    b.step_annotations()
    objective = r_await_objective_s()
    for title, rule, unit in (("r/s and w/s", None, "iops"),
                              ("Read MB/s", R.DISK_READ_BYTES_RATE, "Bps"),
                              ("r_await", R.DISK_READ_AWAIT, "s"),
                              ("w_await", R.DISK_WRITE_AWAIT, "s"),
                              ("aqu-sz", R.DISK_QUEUE_SIZE, "none"),
                              ("%util", R.DISK_UTIL, "percentunit")):
        if rule is None:
            exprs = [(f"{R.DISK_READS_RATE}{{{SEL_DISK}}}", "{{device}} {{role}} r/s"),
                     (f"{R.DISK_WRITES_RATE}{{{SEL_DISK}}}", "{{device}} {{role}} w/s")]
        else:
            exprs = [(f"{rule}{{{SEL_DISK}}}", "{{device}} {{role}}")]
        b.panel(title, exprs, unit=unit, overrides=KV_TIER2,
                threshold=objective if rule == R.DISK_READ_AWAIT else None)
    b.panel("Tier2 filesystem free", [
        (f"{S.TIER2_FS_AVAIL.name} / {S.TIER2_FS_SIZE.name}", "free")],
        unit="percentunit", max_=1)
    b.panel("NVMe temperature vs warning threshold", [
        (f"{S.NVME('temperature_celsius')}{{{SEL_DISK}}}", "{{device}}"),
        (f"{S.NVME('temperature_warning_celsius')}{{{SEL_DISK}}}", "{{device}} warning")],
        unit="celsius", needs="an NVMe device and smartctl or nvme-cli")
    b.panel("NVMe wear and errors", [
        (f"{S.NVME('percentage_used_ratio')}{{{SEL_DISK}}}", "{{device}} endurance used"),
        (f"rate({S.NVME('media_errors')}_total{{{SEL_DISK}}}[5m])", "{{device}} media errors/s")],
        unit="percentunit", needs="an NVMe device and smartctl or nvme-cli")
    b.panel("Health log readable", [(S.NVME_SMART_UP.name, "{{device}}")],
            needs="an NVMe device")
    return b


def uma_host() -> Board:
    b = Board("sparkrig-uma", "UMA & host", HOST_VARS, "Unified memory and host pressure: on GB10 this memory is "
              "also the GPU's, so MemAvailable, Cached, PSI and major faults carry the UMA story; iowait for H8.")
    b.step_annotations()
    sel = '{instance=~"$instance"}'
    b.panel("Memory", [(f"{S.MEM_AVAILABLE.name}{sel}", "MemAvailable"),
                       (f"{S.MEM_CACHED.name}{sel}", "Cached"),
                       (f"{S.MEM_DIRTY.name}{sel}", "Dirty"),
                       (f"{R.MEMORY_USED}{sel}", "used")], unit="bytes")
    b.panel("Available share", [(f"{R.MEMORY_AVAILABLE_RATIO}{sel}", "available")],
            unit="percentunit", max_=1)
    b.panel("Pressure stall (PSI, share of time)", [
        (f"rate({S.PRESSURE(r + '_waiting_seconds')}_total{sel}[30s])", f"{r} some") for r in S.PSI_RESOURCES],
        unit="percentunit")
    b.panel("CPU iowait share", [(f"{R.CPU_IOWAIT_RATIO}{sel}", "iowait")], unit="percentunit")
    b.panel("Major faults and refaults per second", [
        (f"rate({S.VM_MAJOR_FAULTS.total}{sel}[30s])", "major faults"),
        (f"rate({S.VM_REFAULTS.total}{sel}[30s])", "file refaults")])
    b.panel("Serving processes: RSS", [(f"{S.PROCESS_RSS.name}{sel}", "{{process}}")],
            unit="bytes")
    b.panel("Serving processes: GPU memory (NVML)", [(f"{S.PROCESS_GPU_MEMORY.name}{sel}", "{{process}}")],
            unit="bytes", needs="an NVIDIA GPU")
    return b


def gpu() -> Board:
    b = Board("sparkrig-gpu", "GPU", HOST_VARS, "NVML through the gpu exporter; fields NVML does not support on "
              "this GPU (GB10: device memory, PCIe) are listed in the last panel.")
    b.step_annotations()
    sel = '{instance=~"$instance"}'
    g = "an NVIDIA GPU"
    b.panel("NVML up", [(f"{S.GPU_UP.name}{sel}", "up")])
    b.panel("Utilisation", [(f"{S.GPU_UTILIZATION.name}{sel}", "GPU {{gpu}}"),
                            (f"{S.GPU_MEMORY_UTILIZATION.name}{sel}", "memory {{gpu}}")],
            unit="percentunit", needs=g)
    b.panel("Power", [(f"{S.GPU_POWER.name}{sel}", "GPU {{gpu}}")], unit="watt", needs=g)
    b.panel("Temperature", [(f"{S.GPU_TEMPERATURE.name}{sel}", "GPU {{gpu}}")], unit="celsius", needs=g)
    b.panel("Clocks", [(f"{S.GPU_SM_CLOCK.name}{sel}", "SM {{gpu}}"),
                       (f"{S.GPU_MEMORY_CLOCK.name}{sel}", "memory {{gpu}}")], unit="hertz", needs=g)
    b.panel("Throttle reasons active", [(f"{S.GPU_THROTTLE.name}{sel} == 1", "{{reason}}")], needs=g)
    b.panel("Process GPU memory", [(f"{S.GPU_PROCESS_MEMORY.name}{sel}", "pid {{pid}}")], unit="bytes",
            needs=g)
    b.panel("Fields NVML does not support", [(f"{S.GPU_FIELD_SUPPORTED.name}{sel} == 0", "{{field}}")], needs=g)
    return b


BOARDS = (home, run_overview, kv_tiers, nvme, uma_host, gpu)


def render_all() -> dict[str, str]:
    """File name -> JSON text for every dashboard."""
    NEEDS.clear()
    out = {}
    for make in BOARDS:
        board = make()
        out[f"{board.uid}.json"] = json.dumps(board.json(), indent=2, ensure_ascii=False) + "\n"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare with the committed JSON")
    args = ap.parse_args()
    rendered = render_all()
    stale = [name for name, text in rendered.items()
             if not (OUT / name).exists() or (OUT / name).read_text() != text]
    if args.check:
        for name in stale:
            print(f"stale: grafana/dashboards/{name} (run python grafana/build.py)")
        return 1 if stale else 0
    OUT.mkdir(exist_ok=True)
    for name, text in rendered.items():
        (OUT / name).write_text(text)
        print(f"wrote grafana/dashboards/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
