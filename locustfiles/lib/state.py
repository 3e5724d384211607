"""What one Locust process knows about the run, shared by the shape, the users and the event handlers through
Locust's environment (``environment.sparkrig``, as Locust's own examples attach their state): the plan and
its slots, where the run has got to, and two parts of their own: the sink (records, metrics, manifest) and
the side jobs (fio, the adapter proxy, Grafana)."""
from __future__ import annotations

import itertools
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from configs import ConfigError, RunPlan, Step, load, plan_run
from configs.discovery import advertise_host, connect_host, register_loadgen, targets_dir
from configs.paths import make_dir, resolve
from configs.plan import OVERRIDE_VARS, REHYDRATE_SESSIONS_PER_USER, normalise_endpoint
from configs.runfiles import RequestRecord

from . import trace, workloads
from .console import Console
from .metrics import LoadgenMetrics, worker_name
from .outage import OutageTracker
from .prompts import PromptSizer
from .rundir import create_run_dir, run_dir
from .sidejobs import SideJobs
from .sink import Sink

log = logging.getLogger("sparkrig.loadgen")
MSG_RUN, MSG_SLOT = "sparkrig:run", "sparkrig:slot"
# worker -> master: records, a worker's metrics address (gather.py); a run file's line is sink.MSG_RUN_FILE
MSG_RECORDS, MSG_METRICS = "sparkrig:records", "sparkrig:metrics"


@dataclass(frozen=True)
class Slot:
    index: int
    repetition: int
    step: Step
    phase: str


def build_slots(plan: RunPlan) -> list[Slot]:
    combos = itertools.product(range(plan.repetitions), plan.steps, plan.phases)
    return [Slot(i, rep, step, phase) for i, (rep, step, phase) in enumerate(combos)]


class RunState:
    """What one Locust process knows about the run; the shape and the users share it."""

    def __init__(self, hypothesis_id: str, env: dict) -> None:
        self.hypothesis_id = hypothesis_id
        self.cfg = load()
        self.env = {k: v for k, v in env.items()
                    if k in OVERRIDE_VARS or k in ("RUN_ID", "RUN_ID_REUSE", "LORA_ADAPTER_LIST", "SESSION_ID")}
        self.plan = plan_run(self.cfg, hypothesis_id, self.env)
        self.slots = build_slots(self.plan)
        self.slot = 0
        self.completed = False
        self.stop_reason: Optional[str] = None
        self.failed: Optional[str] = None
        self.run_id: Optional[str] = None
        self.sink = Sink(self.cfg, self._stop)
        self.side = SideJobs(self.cfg)
        self.console = Console(self)
        self.announced: list[Path] = []               # file_sd files a master wrote for its workers
        self.workers_pending: set[str] = set()        # a master's workers whose last records have not come
        self.load_target: Optional[int] = None        # the users the shape asked for in this step
        self.worker_names: dict[str, str] = {}        # a master's Locust client ids -> the workers' names
        self.watch = None                             # greenlets of the master / local run: telemetry,
        self.worker_watch = None                      # and the workers' heartbeats (watch.py, gather.py)
        self.sizer = PromptSizer(self._tokenizer())
        self.session_id_refused = False
        self.outages = OutageTracker(self.plan.model_handle)
        self.users = itertools.count()
        self.worker = worker_name()
        self.rehydrate_manifests: dict[int, list[dict]] = {}
        self.adapters = self._adapters()
        first = self.plan.steps[0].params
        self.trace = trace.load(resolve(first.trace_file)) if self.workload == "trace_replay" else []

    def _stop(self, reason: str) -> None:
        self.failed = self.failed or reason

    def _model(self):
        return next((m for m in self.cfg.models.values() if m.handle == self.plan.model_handle), None)

    def _tokenizer(self) -> Optional[Path]:
        """The served model's tokenizer where the config names one (models.<key>.tokenizer)."""
        spec = self._model()
        return resolve(spec.tokenizer) if spec and spec.tokenizer else None

    def model_context_limit(self) -> Optional[int]:
        """The model's own context length (its shape), for endpoints that publish none."""
        spec = self._model()
        return spec.shape.max_position_embeddings if spec and spec.shape else None

    # ---- derived -----------------------------------------------------------------------------
    @property
    def workload(self) -> str:
        return self.plan.hypothesis.workload

    @property
    def sends_session_id(self) -> bool:
        """Session metadata on rehydrate requests: unless the frontend refused it, or the operator (the
        paired legs, which replay prefixes and ask nothing of sessions) said SESSION_ID=off."""
        return self.env.get("SESSION_ID") != "off" and not self.session_id_refused

    def base_url(self, host: Optional[str]) -> str:
        if self.plan.hypothesis.adapter_proxy:
            lg = self.cfg.loadgen
            return f"http://{connect_host(lg.listen)}:{lg.adapter_proxy_port}/v1"
        return normalise_endpoint(host) if host else self.plan.openai_base

    def _adapters(self) -> list[str]:
        listing = self.env.get("LORA_ADAPTER_LIST")
        if listing:
            try:
                names = [n.strip() for n in Path(listing).read_text().splitlines() if n.strip()]
            except OSError as exc:
                raise ConfigError(f"LORA_ADAPTER_LIST={listing}: {exc.strerror}") from None
            return names
        count = max((s.params.adapter_count for s in self.plan.steps), default=0)
        return workloads.adapter_names(count)

    def current(self) -> Slot:
        return self.slots[min(self.slot, len(self.slots) - 1)]

    # ---- lifecycle -----------------------------------------------------------------------------
    def open(self, run_id: str, worker: bool = False) -> None:
        """Every process: the run's records file and metrics (served by serve_metrics). The master (or a
        local run) creates the run directory and holds its writer lock (create_run_dir: ConfigError when
        it exists). A worker, on this host or another, keeps its own copy of its records
        (workers/<name>.jsonl, written as they end) and sends them to the master, which writes the run's
        requests.jsonl (gather.py)."""
        if worker:
            path = make_dir(run_dir(self.cfg, run_id), exist_ok=True) / "workers" / f"{self.worker}.jsonl"
        else:
            directory, self.sink.lock = create_run_dir(self.cfg, run_id, self.env.get("RUN_ID_REUSE") == "1")
            path = self.console.records = directory / "requests.jsonl"
        self.run_id = run_id
        if self.workload == "rehydrate_replay":                # one session list per context size
            sessions: dict[int, int] = {}
            for step in self.plan.steps:
                p = step.params
                sessions[p.context_tokens] = max(sessions.get(p.context_tokens, 0), p.concurrency * REHYDRATE_SESSIONS_PER_USER)
            self.rehydrate_manifests = {size: workloads.rehydrate_manifest(self.plan.seed, n, self.sizer, size)
                                        for size, n in sessions.items()}
        labels = {"run_id": run_id, "hypothesis": self.plan.hypothesis_id, "stack": self.plan.stack_name,
                  "workload": self.workload, "worker": self.worker}
        self.sink.open(run_id, path, LoadgenMetrics(labels), worker)

    def serve_metrics(self, port: int) -> str:
        """Serve this process' metrics and announce them to this host's Prometheus; returns the address
        another host reaches them at."""
        lg, metrics = self.cfg.loadgen, self.sink.metrics
        try:
            served = metrics.serve(lg.listen, port if port < 65536 else 0)
        except OSError as exc:
            log.warning("loadgen metrics not served on %s:%s (%s); retrying on a free port", lg.listen, port,
                        exc.strerror)
            served = metrics.serve(lg.listen, 0)
        address = f"{connect_host(lg.listen)}:{served}"
        if served != lg.metrics_port:                       # the configured port is a static target already
            metrics.sd_file = register_loadgen(targets_dir(self.cfg), address, {"worker": self.worker})
        log.info("loadgen metrics on http://%s/metrics", address)
        return f"{advertise_host(lg.listen)}:{served}"

    def enter_slot(self, index: int) -> None:
        manifest = self.sink.manifest
        if index == self.slot and (manifest is None or manifest.doc["steps"]):
            return
        self.slot = index
        slot = self.current()
        if self.sink.metrics:
            self.sink.metrics.set_step(slot.index, slot.step.params)
        if manifest is not None:                       # master / local: the run's bookkeeping
            notes = self.side.prepare(slot, manifest, self.tier2_path(slot))
            manifest.begin_step({
                "index": slot.index, "repetition": slot.repetition, "step": slot.step.index, "phase": slot.phase,
                "label": slot.step.label(), "swept": slot.step.swept, "fio_profile": slot.step.fio_profile,
                "target_concurrency": slot.step.params.concurrency,
                "target_context_tokens": slot.step.params.context_tokens,
                "target_arrival_rate_rps": slot.step.params.arrival_rate_rps, "at_target": None, **notes})
            self.side.annotate(f"{self.plan.hypothesis_id} {self.plan.stack_name} step {slot.index}: "
                               f"{slot.step.label()} ({slot.phase}, rep {slot.repetition + 1})",
                               [self.plan.hypothesis_id, self.plan.stack_name, self.run_id], manifest)
            if len(manifest.doc["steps"]) > 1:        # the step before ended: its line, once its records are in
                self.console.step_ended(len(manifest.doc["steps"]) - 2, master=self.worker_watch is not None)
            self.console.say(f"step {slot.index + 1}/{len(self.slots)} begins: {slot.step.label()}"
                             f"{'' if slot.phase == 'run' else ' phase ' + slot.phase} (rep {slot.repetition + 1})")

    def note_load(self, running: int, target: int) -> None:
        """The step's load generator reached its target (master / local; the shape's tick and Locust's
        spawning_complete say): the step's warm-up starts from here (``at_target`` in the manifest), so a
        step that began with users left over from the last one, or still spawning, is not measured meanwhile."""
        self.load_target = target
        manifest = self.sink.manifest
        step = manifest.doc["steps"][-1] if manifest is not None and manifest.doc["steps"] else None
        if step is not None and step["at_target"] is None and running == target:
            manifest.mark_step(at_target=time.time())

    def tier2_path(self, slot: Slot) -> Path:
        return resolve(os.environ.get("DYN_KVBM_TIER2_PATH") or slot.step.profile.tier2_path)

    def track(self, rec: RequestRecord) -> float:
        """Seconds this user should wait before its next request: 0 while the stack answers; growing
        when it refuses connections or answers 429/503 request after request (an outage), so a closed
        loop does not hammer a dead or overloaded stack. Outages end up in the manifest."""
        delay, ended = self.outages.observe(rec)
        if ended is not None:
            self._record_outage(ended)
        return delay

    def _record_outage(self, outage: dict) -> None:
        manifest = self.sink.manifest
        if manifest is not None:
            manifest.doc.setdefault("outages", []).append(outage)
            manifest.note(f"outage: {outage['failures']} requests failed ({outage['kind']}) from "
                          f"{outage['started_at']} to {outage['ended_at']}")
        elif self.run_id:                  # a worker process: the master's manifest is not ours to write
            self.sink.run_file_line(f"outages-{self.worker}.jsonl", json.dumps(outage))

    def close(self, complete: bool, reason: Optional[str]) -> None:
        if (open_outage := self.outages.end()) is not None:
            self._record_outage(open_outage)
        self.side.close(self.sink.manifest)
        self.sink.close(complete, reason)
        if self.sink.manifest is not None:
            self.console.finish(self.sink.manifest.path.parent)
        for path in self.announced:
            path.unlink(missing_ok=True)


def of(environment) -> RunState:
    """The run this Locust process serves (attached at init; a worker's is replaced by the master's run)."""
    st = getattr(environment, "sparkrig", None)
    assert st is not None, "experiment() did not attach its run to this environment"
    return st


