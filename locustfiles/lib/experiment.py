"""``experiment("H2B")`` gives a locustfile its User and LoadTestShape for one hypothesis.

The plan (stack, profile, steps, durations, seed) comes from configs and the operator's
environment (STACK, PROFILE, CONCURRENCY, CONTEXT_TOKENS, DURATION_S, ENDPOINT, SEED, MODEL).
The shape walks the plan's steps (x repetitions, x phases for rehydrate_replay); at each boundary
the master (or the single local process) updates the manifest, the step gauges, the fio job and
tells the workers. Every process writes its records to the run's requests.jsonl and serves its
own Prometheus metrics.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import gevent
from gevent import GreenletExit
from locust import LoadTestShape, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.runners import MasterRunner, WorkerRunner

from configs import ConfigError, RunPlan, Step, load, plan_run
from configs.paths import check_name, resolve
from configs.run import OVERRIDE_VARS, normalise_endpoint
from configs.runfiles import (CANCELLED_BY_STEP, REQUEST_MANIFEST, SHED_BY_CLIENT, Manifest, RecordWriter, RequestRecord,
                              request_hash, write_request_manifest)
from rig import local, promconfig

from . import arrivals, cache, trace, workloads
from .arrivals import OpenLoop
from .fio import FioJob
from .metrics import LoadgenMetrics, worker_name
from .outage import OutageTracker
from .preflight import UNKNOWN_FIELD, size_prompts, unknown_fields_ignored
from .prompts import PromptSizer
from .run import GrafanaAnnotator, new_run_id, run_dir, start_manifest, wait_for_model
from .stream import send

log = logging.getLogger("sparkrig.loadgen")
MSG_RUN, MSG_SLOT = "sparkrig:run", "sparkrig:slot"


@dataclass(frozen=True)
class Slot:
    index: int
    repetition: int
    step: Step
    phase: str


def build_slots(plan: RunPlan) -> list[Slot]:
    phases = workloads.REHYDRATE_PHASES if plan.hypothesis.workload == "rehydrate_replay" else ("run",)
    combos = itertools.product(range(plan.repetitions), plan.steps, phases)
    return [Slot(i, rep, step, phase) for i, (rep, step, phase) in enumerate(combos)]


class RunState:
    """What one Locust process knows about the run; the shape and the users share it."""

    def __init__(self, hypothesis_id: str, env: dict) -> None:
        self.hypothesis_id = hypothesis_id
        self.cfg = load()
        self.env = {k: v for k, v in env.items() if k in OVERRIDE_VARS or k in ("RUN_ID", "LORA_ADAPTER_LIST")}
        self.plan = plan_run(self.cfg, hypothesis_id, self.env)
        self.slots = build_slots(self.plan)
        self.slot = 0
        self.completed = False
        self.stop_reason: Optional[str] = None
        self.failed: Optional[str] = None
        self.run_id: Optional[str] = None
        self.writer: Optional[RecordWriter] = None
        self.metrics: Optional[LoadgenMetrics] = None
        self.manifest: Optional[Manifest] = None
        self.fio: Optional[FioJob] = None
        self.proxy: Optional[subprocess.Popen] = None
        self.grafana: Optional[GrafanaAnnotator] = None
        self.sizer = PromptSizer(self._tokenizer())
        self.session_id_refused = False
        self.outages = OutageTracker()
        self.users = itertools.count()
        self.worker = worker_name()
        self.rehydrate_manifests: dict[int, list[dict]] = {}
        self.adapters = self._adapters()
        first = self.plan.steps[0].params
        self.trace = trace.load(resolve(first.trace_file)) if self.workload == "trace_replay" else []

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

    def base_url(self, host: Optional[str]) -> str:
        if self.plan.hypothesis.adapter_proxy:
            lg = self.cfg.loadgen
            return f"http://{promconfig.connect_host(lg.listen)}:{lg.adapter_proxy_port}/v1"
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
    def open(self, run_id: str) -> None:
        """Every process: the run's records file and metrics (served by serve_metrics)."""
        self.run_id = run_id
        directory = run_dir(self.cfg, run_id)
        directory.mkdir(parents=True, exist_ok=True)
        self.writer = RecordWriter(directory / "requests.jsonl")
        if self.workload == "rehydrate_replay":                # one session list per context size
            sessions: dict[int, int] = {}
            for step in self.plan.steps:
                p = step.params
                sessions[p.context_tokens] = max(sessions.get(p.context_tokens, 0), p.concurrency * 4)
            self.rehydrate_manifests = {size: workloads.rehydrate_manifest(self.plan.seed, n, self.sizer, size)
                                        for size, n in sessions.items()}
        labels = {"run_id": run_id, "hypothesis": self.plan.hypothesis_id, "stack": self.plan.stack_name,
                  "workload": self.workload, "worker": self.worker}
        self.metrics = LoadgenMetrics(labels)

    def serve_metrics(self, port: int) -> None:
        lg = self.cfg.loadgen
        try:
            served = self.metrics.serve(lg.listen, port if port < 65536 else 0)
        except OSError as exc:
            log.warning("loadgen metrics not served on %s:%s (%s); retrying on a free port", lg.listen, port,
                        exc.strerror)
            served = self.metrics.serve(lg.listen, 0)
        address = f"{promconfig.connect_host(lg.listen)}:{served}"
        if served != lg.metrics_port:                       # the configured port is a static target already
            self.metrics.sd_file = promconfig.register_loadgen(local.targets_dir(self.cfg), address,
                                                               {"worker": self.worker})
        log.info("loadgen metrics on http://%s/metrics", address)

    def record(self, rec: RequestRecord) -> None:
        if self.writer is None:          # the run closed while this request was in flight (process quitting)
            return
        self.writer.write(rec)
        self.metrics.observe(rec)

    def enter_slot(self, index: int) -> None:
        if index == self.slot and (self.manifest is None or self.manifest.doc["steps"]):
            return
        self.slot = index
        slot = self.current()
        if self.metrics:
            self.metrics.set_step(slot.index, slot.step.params)
        if self.manifest is not None:                  # master / local: the run's bookkeeping
            notes = self._prepare(slot)
            self.manifest.begin_step({
                "index": slot.index, "repetition": slot.repetition, "step": slot.step.index, "phase": slot.phase,
                "label": slot.step.label(), "swept": slot.step.swept, "fio_profile": slot.step.fio_profile,
                "target_concurrency": slot.step.params.concurrency,
                "target_context_tokens": slot.step.params.context_tokens,
                "target_arrival_rate_rps": slot.step.params.arrival_rate_rps, **notes})
            if self.grafana:
                problem = self.grafana.post(f"{self.plan.hypothesis_id} {self.plan.stack_name} step {slot.index}: "
                                            f"{slot.step.label()} ({slot.phase}, rep {slot.repetition + 1})",
                                            [self.plan.hypothesis_id, self.plan.stack_name, self.run_id])
                if problem:
                    self.manifest.note(problem)
            print(f"[{self.plan.hypothesis_id}] step {slot.index + 1}/{len(self.slots)}: {slot.step.label()}"
                  f"{'' if slot.phase == 'run' else ' phase ' + slot.phase} (rep {slot.repetition + 1})",
                  file=sys.stderr, flush=True)

    def _prepare(self, slot: Slot) -> dict:
        """Side effects a step needs before its load: the fio job, cold caches."""
        notes = {}
        self._stop_fio()
        if slot.step.fio_profile:
            profile = self.cfg.fio_profiles[slot.step.fio_profile]
            out = self.manifest.path.parent / f"fio-step{slot.index}.json"
            self.fio = FioJob(f"contention-{slot.step.fio_profile}", profile, str(self.tier2_path(slot)), out)
            self.fio.start()
            notes["fio_output"] = out.name
        if slot.step.params.cache_state == "cold":
            notes["cold"] = cache.make_cold(self.tier2_path(slot) / "lora")
        return notes

    def _stop_fio(self) -> None:
        if self.fio is not None:
            err = self.fio.stop()
            if err and self.manifest:
                self.manifest.note(f"fio job failed: {err.splitlines()[-1]}")
            self.fio = None

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
        if self.manifest is not None:
            self.manifest.doc.setdefault("outages", []).append(outage)
            self.manifest.note(f"outage: {outage['failures']} requests failed ({outage['kind']}) from "
                               f"{outage['started_at']} to {outage['ended_at']}")
        elif self.run_id:                  # a worker process: the master's manifest is not ours to write
            with open(run_dir(self.cfg, self.run_id) / f"outages-{self.worker}.jsonl", "a") as f:
                f.write(json.dumps(outage) + "\n")

    def close(self, complete: bool, reason: Optional[str]) -> None:
        if (open_outage := self.outages.end()) is not None:
            self._record_outage(open_outage)
        self._stop_fio()
        if self.proxy is not None:
            self.proxy.terminate()
            summary, _ = self.proxy.communicate(timeout=10)   # its last line says what adapter I/O it did
            if self.manifest is not None and summary.strip():
                self.manifest.note(f"adapter proxy: {summary.strip().splitlines()[-1]}")
            self.proxy = None
        if self.manifest is not None:
            self.manifest.finish(complete, reason)
        if self.writer:
            self.writer.close()
            self.writer = None           # users still running until Locust kills them stop sending (see request)
        if self.metrics:
            self.metrics.close()


STATE: Optional[RunState] = None


def _state() -> RunState:
    assert STATE is not None, "experiment() was not called"
    return STATE


# ---- master / local side ---------------------------------------------------------------------------
def _start_proxy(st: RunState) -> None:
    from locustfiles.adapter_proxy import proxy_command
    lg = st.cfg.loadgen
    cmd = proxy_command(st.plan.openai_base, lg.listen, lg.adapter_proxy_port, st.tier2_path(st.current()))
    st.proxy = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = st.proxy.stdout.readline()
    if "serving" not in line:
        raise ConfigError(f"adapter proxy did not start: {line.strip() or 'no output'}")
    st.manifest.note(f"adapter proxy: {line.strip()}")


def _begin_run(environment) -> None:
    """Master / local, at init, before any user exists: run directory, manifest, metrics, endpoint
    check and adapter proxy. Done here because test_start runs inside Locust's spawning greenlet,
    which the shape's next tick may kill while a slow check is still waiting."""
    st = _state()
    target = normalise_endpoint(environment.host) if environment.host else st.plan.openai_base
    sizing, run_id = "", None
    try:
        run_id = check_name(st.env["RUN_ID"], "environment RUN_ID") if st.env.get("RUN_ID") else new_run_id(st.plan)
        problem = wait_for_model(target, st.plan.model_handle, st.cfg.loadgen.ready_timeout_s)
    except ConfigError as exc:
        problem = str(exc)
    else:
        if problem is not None:
            problem = f"endpoint not ready: {problem}"
        else:
            problem, sizing = size_prompts(st.plan, st.sizer, target, st.model_context_limit())
    if not problem and isinstance(environment.runner, MasterRunner) and \
            (st.trace or any(slot.step.params.arrival_rate_rps > 0 for slot in st.slots)):
        problem = "open-loop arrivals (RATE_RPS) run in one Locust process: leave out --processes / --master"
    if problem:                                # before the run exists: nothing half-made is left behind
        st.failed = problem
        print(f"error: {problem}", file=sys.stderr, flush=True)
        environment.process_exit_code = 2
        return
    st.open(run_id)
    st.serve_metrics(st.cfg.loadgen.metrics_port)
    if not isinstance(environment.runner, MasterRunner):
        st.metrics.count_users(environment.runner)
    extra = {"locust": {"mode": "master" if isinstance(environment.runner, MasterRunner) else "local",
                        "host_override": environment.host}}
    st.manifest = start_manifest(run_dir(st.cfg, st.run_id), st.run_id, st.plan, st.cfg, extra)
    st.manifest.note(sizing)
    if st.rehydrate_manifests:          # the replay list, deterministic: its hash says two runs replayed the same
        entries = [{"context_tokens": size, "session_id": e["session_id"], "prefix_hash": e["prefix_hash"],
                    "words": e["words"]} for size, items in sorted(st.rehydrate_manifests.items()) for e in items]
        st.manifest.doc["request_manifest_hash"] = write_request_manifest(
            run_dir(st.cfg, st.run_id) / REQUEST_MANIFEST, entries)
        st.manifest.write()
    if st.workload == "rehydrate_replay" and unknown_fields_ignored(target, st.plan.model_handle):
        st.manifest.doc["session_id_ignored"] = True
        st.manifest.note(f"session_id_ignored: the frontend answers 200 to a made-up field ({UNKNOWN_FIELD}), so "
                         "it drops fields it does not know and session_id reaches nothing behind it")
    if st.cfg.loadgen.grafana_url:
        st.grafana = GrafanaAnnotator(st.cfg.loadgen.grafana_url, os.environ.get("GRAFANA_TOKEN"), ["sparkrig"])
    print(f"[{st.plan.hypothesis_id}] run {st.run_id}: results in {st.manifest.path.parent}; {sizing}",
          file=sys.stderr, flush=True)
    if st.plan.hypothesis.adapter_proxy:
        try:
            _start_proxy(st)
        except (ConfigError, OSError) as exc:
            st.failed = str(exc)
            print(f"error: {exc}", file=sys.stderr, flush=True)
            st.manifest.note(f"adapter proxy: {exc}")
            environment.process_exit_code = 2


def _stop_on_sigterm(environment) -> None:
    st = _state()
    st.stop_reason = "stopped by SIGTERM before the last step ended"
    print(f"[{st.plan.hypothesis_id}] SIGTERM: stopping; the run is kept as incomplete", file=sys.stderr, flush=True)
    environment.runner.quit()


def _on_test_start(environment, **_kw) -> None:
    st = _state()
    if not isinstance(environment.runner, WorkerRunner):
        # SIGTERM ends the run as Ctrl-C does: steps closed, manifest `incomplete` with its reason. Locust's
        # own SIGTERM handler is not in force in this process by now (its C-level disposition is back to
        # the default), so a SIGTERM used to end it at once, the manifest left `running` forever.
        signal.signal(signal.SIGTERM, lambda *_a: gevent.spawn(_stop_on_sigterm, environment))
    if isinstance(environment.runner, WorkerRunner) or st.failed or st.manifest is None:
        return
    if isinstance(environment.runner, MasterRunner):
        environment.runner.send_message(MSG_RUN, {"run_id": st.run_id, "env": st.env, "slot": st.slot,
                                                  "sizing": st.sizer.state()})
    st.enter_slot(st.slot)


def _on_test_stop(environment, **_kw) -> None:
    st = _state()
    if isinstance(environment.runner, WorkerRunner) or st.manifest is None:
        return
    reason = st.failed or (None if st.completed else st.stop_reason or "stopped before the last step ended")
    st.close(st.completed and not st.failed, reason)


def _on_quitting(environment, **_kw) -> None:
    st = _state()
    st.close(st.completed and not st.failed, st.failed or "process quit before the last step ended")


# ---- worker side -------------------------------------------------------------------------------------
def _on_run_message(environment, msg, **_kw) -> None:
    global STATE
    data = msg.data
    STATE = RunState(STATE.hypothesis_id, data["env"])
    STATE.sizer.restore(data["sizing"])
    STATE.open(data["run_id"])
    # worker N (Locust's index from the master) on metrics_port + 1 + N: predictable, so firewall-able
    STATE.serve_metrics(STATE.cfg.loadgen.metrics_port + 1 + environment.runner.worker_index)
    STATE.metrics.count_users(environment.runner)
    STATE.enter_slot(data["slot"])


def _on_slot_message(environment, msg, **_kw) -> None:
    _state().enter_slot(msg.data)


def _on_init(environment, **_kw) -> None:
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.register_message(MSG_RUN, _on_run_message)
        environment.runner.register_message(MSG_SLOT, _on_slot_message)
    elif environment.runner is not None:
        _begin_run(environment)


# ---- the classes a locustfile exposes ----------------------------------------------------------
class PlanShape(LoadTestShape):
    """Walks the plan: each slot lasts step_duration_s at the step's concurrency. Locust's own
    -u/-r fix the user count and spawn rate for every step, and -t ends the run early."""
    abstract = True
    use_common_options = True

    def tick(self):
        st = _state()
        if st.failed:
            return None
        options = self.runner.environment.parsed_options
        elapsed = self.get_run_time()
        limit = getattr(options, "run_time", None)
        if limit and elapsed >= limit:             # Locust would only apply -t after the shape ends
            st.stop_reason = f"-t {limit}s run-time limit reached before the last step"
            return None
        index = int(elapsed // st.plan.step_duration_s)
        if index >= len(st.slots):
            st.completed = True
            return None
        if index != st.slot:
            st.enter_slot(index)
            if isinstance(self.runner, MasterRunner):
                self.runner.send_message(MSG_SLOT, index)
        params = st.slots[index].step.params
        if params.arrival_rate_rps > 0 or st.trace:   # open loop: one dispatcher starts every request
            return 1, 1
        users = _explicit("-u", "--users", "LOCUST_USERS", int) or params.concurrency
        return users, _explicit("-r", "--spawn-rate", "LOCUST_SPAWN_RATE", float) or users


def _explicit(short: str, long: str, env: str, kind):
    """An option the operator actually gave: Locust fills -u/-r with 1 in headless mode, so the
    parsed value cannot tell "-u 1" from nothing."""
    args = sys.argv
    for i, a in enumerate(args):
        if a in (short, long) and i + 1 < len(args):
            return kind(args[i + 1])
        if a.startswith(long + "="):
            return kind(a.split("=", 1)[1])
    return kind(os.environ[env]) if os.environ.get(env) else None


class PlanUser(FastHttpUser):
    abstract = True
    network_timeout = 600.0
    connection_timeout = 10.0
    concurrency = 4096        # connections a user may hold: an open-loop dispatcher has many requests out

    def wait_time(self):
        """Think time between a user's requests: exponential around think_time_s, as real users' is,
        so arrivals do not lock step with the server's batch slots (a closed loop without it queues
        every request identically and hides the tail the knee rule looks for)."""
        mean = _state().current().step.params.think_time_s
        return self.think.expovariate(1.0 / mean) if mean > 0 else 0.0

    def on_start(self):
        st = _state()
        if st.run_id is None:                    # a worker that has not heard from the master yet
            gevent.sleep(0.5)
        runner = self.environment.runner
        offset = runner.worker_index * 1_000_000 if isinstance(runner, WorkerRunner) else 0
        self.index = offset + next(st.users)
        self.think = random.Random(f"{st.plan.seed}:think:{self.index}")
        self.client.base_url = st.base_url(self.environment.host)
        self.workload = self._make_workload(st)
        self.open_loop = OpenLoop(lambda t, entry: self._issue(st, t, entry), lambda t: self._shed(st, t))
        self.arrivals_rng = random.Random(f"{st.plan.seed}:arrivals:{self.index}")

    def _make_workload(self, st: RunState) -> workloads.Workload:
        args = (st.plan.model_handle, self.index, st.plan.seed, st.sizer)
        kind = st.workload
        if kind == "fixed_context":
            return workloads.FixedContext(*args)
        if kind == "sessioned_chat":
            return workloads.SessionedChat(*args)
        if kind == "lora_churn":
            return workloads.LoraChurn(*args, st.adapters, st.plan.hypothesis.adapter_proxy)
        if kind == "trace_replay":
            return workloads.TraceReplay(*args)
        return workloads.RehydrateReplay(*args, st.rehydrate_manifests, not st.session_id_refused)

    @task
    def request(self):
        st = _state()
        if st.failed or st.writer is None:
            gevent.sleep(0.2)
            return
        params = st.current().step.params
        slot = st.slot

        def this_step() -> bool:
            return st.slot == slot and st.writer is not None and not st.failed
        if st.trace:                               # the trace is the schedule: replayed once per step
            if self.open_loop.run(trace.arrivals(st.trace, params.trace_time_scale, params.trace_max_rps),
                                  params.max_in_flight, this_step):
                while this_step():                 # the trace ended before the step: idle until it does
                    gevent.sleep(0.2)
            return
        if params.arrival_rate_rps > 0:           # open loop: this user is the step's dispatcher
            self.open_loop.run(arrivals.scheduled(params.arrival_rate_rps, params.arrival_process, self.arrivals_rng),
                               params.max_in_flight, this_step)
            return
        if delay := self._issue(st):               # a closed-loop user backs off in an outage; a schedule does not
            gevent.sleep(self.think.uniform(0.5, 1.0) * delay)

    def on_stop(self):
        self.open_loop.stop()

    def _record(self, st: RunState, req: Optional[workloads.Request], intended: Optional[float]) -> RequestRecord:
        slot = st.current()
        params = slot.step.params
        rec = RequestRecord(
            run_id=st.run_id, hypothesis=st.plan.hypothesis_id, stack=st.plan.stack_name, workload=st.workload,
            step=slot.index, repetition=slot.repetition, phase=slot.phase, target_concurrency=params.concurrency,
            target_context_tokens=params.context_tokens, user=self.index, worker=st.worker,
            endpoint=req.path if req else "", model=req.body["model"] if req else st.plan.model_handle,
            intended_start_time=intended)
        if req is not None:
            rec.adapter, rec.session_id, rec.turn, rec.prefix_hash = req.adapter, req.session_id, req.turn, \
                req.prefix_hash
            rec.prompt_tokens_target, rec.request_hash = req.target_tokens, request_hash(req.path, req.body)
        return rec

    def _issue(self, st: RunState, intended: Optional[float] = None, entry=None) -> float:
        """One request of the workload, sent and recorded (``intended``: when an open loop wanted it sent);
        returns the outage backoff the outage tracker asks for (0 when none)."""
        if isinstance(self.workload, workloads.RehydrateReplay):
            self.workload.send_session_id = not st.session_id_refused
        params = st.current().step.params
        req = self.workload.request_for(entry, params) if entry is not None else \
            self.workload.next(params, st.current().phase)
        rec = self._record(st, req, intended)
        text: list[str] = []
        try:
            send(self.client, "/" + req.path, req.body, rec, req.path, text)
        except GreenletExit:                       # Locust stopped this user mid-request (a step boundary)
            rec.ok, rec.error_class = False, CANCELLED_BY_STEP
            rec.error = "request in flight when Locust stopped the user at a step boundary or the end of the run"
            rec.e2e_s = time.time() - rec.start_time if rec.start_time else None
            st.record(rec)
            raise
        if intended is not None:
            rec.schedule_lag_s = rec.start_time - intended
        st.record(rec)
        self.workload.done(req, rec.ok, "".join(text), rec.prompt_tokens)
        if rec.status == 400 and "session_id" in req.body and "session_id" in (rec.error or ""):
            self._session_id_refused(st, rec.error)
        return st.track(rec)

    def _shed(self, st: RunState, intended: float) -> None:
        """An arrival over max_in_flight: not sent, but recorded, so the schedule's shortfall is counted."""
        rec = self._record(st, None, intended)
        rec.start_time, rec.error_class = intended, SHED_BY_CLIENT
        rec.error = f"{st.current().step.params.max_in_flight} requests already in flight (max_in_flight)"
        st.record(rec)

    def _session_id_refused(self, st: RunState, error: str) -> None:
        """H9's known blocker: the frontend rejects session metadata. Record it and go on without it."""
        if not st.session_id_refused:
            st.session_id_refused = True
            reason = f"{st.plan.hypothesis.blocked_if or 'the frontend rejects session_id'}: HTTP 400 {error}"
            log.warning("blocked: %s; continuing without session_id", reason)
            if st.manifest is not None:
                st.manifest.block(reason)
            else:
                Path(run_dir(st.cfg, st.run_id) / f"blocked-{st.worker}.txt").write_text(reason + "\n")


def _loopback_master(parser) -> None:
    """Locust's master listens on every interface by default; ours on loopback (what --processes needs)
    unless --master-bind-host or LOCUST_MASTER_BIND_HOST says otherwise, as every listener of the rig."""
    parser.set_defaults(master_bind_host="127.0.0.1")


def experiment(hypothesis_id: str) -> tuple[type, type]:
    """The User and LoadTestShape classes for ``hypothesis_id``; call it once at module level."""
    global STATE
    try:
        STATE = RunState(hypothesis_id, dict(os.environ))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2)
    events.init_command_line_parser.add_listener(_loopback_master)
    events.init.add_listener(_on_init)
    events.test_start.add_listener(_on_test_start)
    events.test_stop.add_listener(_on_test_stop)
    events.quitting.add_listener(_on_quitting)
    name = hypothesis_id.upper()
    user = type(f"{name}User", (PlanUser,), {"abstract": False, "host": STATE.plan.openai_base,
                                             "__module__": __name__})
    shape = type(f"{name}Shape", (PlanShape,), {"abstract": False, "__module__": __name__})
    return user, shape
