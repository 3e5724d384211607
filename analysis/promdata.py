"""Telemetry for a run window, from Prometheus or from files exported beside the run.

Range queries go through prometheus-api-client (``PrometheusConnect.custom_query_range``, its
``MetricRangeDataFrame`` into pandas), cut into chunks so no series exceeds Prometheus's 11,000 points per
query (a 3-hour run at a 200 ms step is 54,000 points), retried with backoff on connection errors and 5xx,
and stitched back. The client rounds start and end to whole seconds, so every chunk edge is a whole second
on the step grid and rounding moves nothing. A frame holds each point's time, value, series key and its
labels as columns. A missing series is an empty frame, reported by the gates, not an error; an unreachable
Prometheus is one line naming the URL.
"""
from __future__ import annotations

import ast
import gzip
import json
import math
import os
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
import requests
from prometheus_api_client import MetricRangeDataFrame, PrometheusApiClientException, PrometheusConnect
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from configs.paths import make_dir, open_file, write_file

MAX_POINTS = 11_000
COLUMNS = ["time", "series", "value"]


class TelemetryError(Exception):
    """Prometheus cannot be asked at all; the message is one line."""


def chunks(start: float, end: float, step: float, max_points: int = MAX_POINTS) -> list[tuple[int, int]]:
    """[start, end] widened to whole seconds (start floored, end ceiled onto the grid) and cut into windows
    of at most max_points samples each. Every edge is a whole second and on the step grid from the start, so
    a client that rounds them to whole seconds moves nothing; neighbouring windows share their edge (that
    point is asked twice and kept once)."""
    unit = math.lcm(round(step * 1000), 1000) // 1000          # whole seconds that are whole steps
    a = math.floor(start)
    z = a + math.ceil((end - a) / unit) * unit
    span = max(unit, (int(step * (max_points - 1)) // unit) * unit)
    out, t = [], a
    while True:
        out.append((t, min(z, t + span)))
        if t + span >= z:
            return out
        t += span


def to_frame(result: Iterable[dict]) -> pd.DataFrame:
    """A range result as time, value, series (its labels as one key) and each label as a column."""
    result = list(result)
    if not result:
        return pd.DataFrame(columns=COLUMNS)
    with warnings.catch_warnings():     # prometheus-api-client 0.7 calls set_index(inplace=True), which pandas 3
        warnings.filterwarnings("ignore", message="The inplace keyword")      # deprecates: ours is not to fix
        d = pd.DataFrame(MetricRangeDataFrame(result, ts_as_datetime=False)).reset_index()
    d = d.rename(columns={"timestamp": "time"}).drop(columns="__name__", errors="ignore")
    names = sorted(c for c in d.columns if c not in ("time", "value"))
    d[names] = d[names].fillna("")                  # a label a series lacks
    keys: dict[tuple, str] = {}

    def key(row: tuple) -> str:
        if row not in keys:
            keys[row] = json.dumps({n: v for n, v in zip(names, row) if v != ""}, separators=(",", ":"))
        return keys[row]
    d["series"] = [key(row) for row in d[names].itertuples(index=False, name=None)]
    return d.astype({"time": float, "value": float})


class Source:
    """What the analysis reads: named PromQL range results for one window."""

    def range(self, name: str, query: str, start: float, end: float, step: float) -> pd.DataFrame:
        raise NotImplementedError

    def samples(self, name: str, selector: str, start: float, end: float) -> pd.DataFrame:
        """The raw samples of ``selector`` in [start, end], each at the time it was scraped or evaluated:
        what was really there, where a range query repeats the last value for 5 minutes of lookback."""
        raise NotImplementedError


class PrometheusSource(Source):
    max_points = MAX_POINTS        # per series and query: Prometheus' limit (VictoriaMetrics allows 30,000)

    def __init__(self, url: str, retries: int = 4, backoff_s: float = 0.5, timeout_s: int = 60,
                 progress: Callable[[str], None] | None = None) -> None:
        retry = Retry(total=retries, backoff_factor=backoff_s, status_forcelist=(500, 502, 503, 504),
                      allowed_methods=("GET", "POST"))
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = requests.Session()
        for scheme in ("http://", "https://"):
            self.session.mount(scheme, HTTPAdapter(max_retries=retry))
        self.prom = PrometheusConnect(self.url, retry=retry, session=self.session, timeout=timeout_s, method="POST")
        self.progress = progress or (lambda _m: None)
        self.frames: dict[str, pd.DataFrame] = {}

    def check(self) -> None:
        try:
            requests.get(f"{self.url}/-/ready", timeout=5).raise_for_status()
        except requests.RequestException as exc:
            raise TelemetryError(f"Prometheus at {self.url} is not reachable ({type(exc).__name__}); start it "
                                 "(`make up`) or use `report --offline` with telemetry exported earlier") from None

    def range(self, name, query, start, end, step):
        parts = []
        for a, b in chunks(start, end, step, self.max_points):
            try:
                result = self.prom.custom_query_range(query, _utc(a), _utc(b), f"{round(step * 1000)}ms")
            except requests.RequestException as exc:
                raise TelemetryError(f"Prometheus at {self.url} stopped answering ({type(exc).__name__})") from None
            except PrometheusApiClientException as exc:
                raise TelemetryError(f"query {name!r} failed: {client_error(exc)}") from None
            parts.append(to_frame(result))
        frame = self._stitch(name, [p[(p["time"] >= start) & (p["time"] <= end)] for p in parts])
        self.progress(f"  {name}: {frame['series'].nunique()} series, {len(frame)} points")
        return frame

    # raw samples per instant query: an hour of a 250 ms series is 14,400 samples, far under the query limit
    SAMPLES_SPAN_S = 3600.0

    def samples(self, name, selector, start, end):
        parts, t = [], start
        while t < end:
            b = min(end, t + self.SAMPLES_SPAN_S)
            parts.append(self._ask(name, "query", {"query": f"{selector}[{round((b - t) * 1000)}ms]",
                                                   "time": f"{b:.3f}"}))
            t = b
        return self._stitch(name, parts)

    def _ask(self, name: str, api: str, form: dict) -> pd.DataFrame:
        """One query API call as a frame; a Prometheus that fails it is one line."""
        try:
            resp = self.session.post(f"{self.url}/api/v1/{api}", data=form, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise TelemetryError(f"Prometheus at {self.url} stopped answering ({type(exc).__name__})") from None
        if resp.status_code != 200:
            raise TelemetryError(f"query {name!r} failed: HTTP {resp.status_code}: {api_error(resp)}")
        return to_frame(resp.json()["data"]["result"])

    def _stitch(self, name: str, parts: list[pd.DataFrame]) -> pd.DataFrame:
        """Chunks into one frame, one dtype whatever came back empty, each point once."""
        parts = [p for p in parts if not p.empty] or [pd.DataFrame(columns=COLUMNS)]
        frame = pd.concat(parts, ignore_index=True).astype({"time": float, "series": str, "value": float})
        frame = frame.drop_duplicates(["time", "series"]).sort_values("time", ignore_index=True)
        self.frames[name] = frame
        return frame


def _utc(t: int) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


def client_error(exc: PrometheusApiClientException) -> str:
    """prometheus-api-client's "HTTP Status Code 400 (b'{...}')" as "HTTP 400: <the query API's words>"."""
    text = str(exc)
    code, _, body = text.removeprefix("HTTP Status Code ").partition(" (")
    try:
        words = json.loads(ast.literal_eval(body.removesuffix(")"))).get("error")
    except (ValueError, SyntaxError, AttributeError):
        words = None
    return f"HTTP {code}: {str(words)[:200]}" if words and code.isdigit() else text[:200]


def api_error(resp: requests.Response) -> str:
    """The query API's own words ({"error": ...}), or the start of the body."""
    try:
        return str(resp.json().get("error"))[:200]
    except ValueError:
        return resp.text.strip().splitlines()[0][:200] if resp.text.strip() else "no body"


class FileSource(Source):
    """Telemetry exported by `analysis export` (one gzipped CSV per named query)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        if not (directory / "meta.json").exists():
            raise TelemetryError(f"no exported telemetry in {directory}; run `python -m analysis export` first")

    def range(self, name, query, start, end, step):
        path = self.directory / f"{name}.csv.gz"
        if not path.exists():
            return pd.DataFrame(columns=COLUMNS)
        frame = pd.read_csv(path)
        return frame[(frame["time"] >= start) & (frame["time"] <= end)].reset_index(drop=True)

    def samples(self, name, selector, start, end):
        return self.range(name, selector, start, end, 0.0)


def export(frames: dict[str, pd.DataFrame], directory: Path, meta: dict) -> None:
    make_dir(directory, exist_ok=True)
    for name, frame in frames.items():
        with os.fdopen(open_file(directory / f"{name}.csv.gz"), "wb") as raw, gzip.open(raw, "wt") as f:
            frame.to_csv(f, index=False)
    write_file(directory / "meta.json", json.dumps({**meta, "exported_at": time.time(), "series": sorted(frames)},
                                                   indent=1) + "\n")


def labels(series_key: str) -> dict:
    return json.loads(series_key)
