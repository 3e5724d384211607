"""A Locust user of the plan: a closed-loop user sending the workload's requests one after another, or the
dispatcher of an open-loop step (a rate, a trace) starting them on schedule; every request is recorded."""
from __future__ import annotations

import logging
import random
import time
from typing import Optional

import gevent
from gevent import GreenletExit
from locust import task
from locust.contrib.fasthttp import FastHttpUser
from locust.runners import WorkerRunner

from configs.runfiles import CANCELLED_BY_STEP, SHED_BY_CLIENT, RequestRecord, request_hash

from . import arrivals, state, trace, workloads
from .arrivals import OpenLoop
from .state import RunState
from .stream import send

log = logging.getLogger("sparkrig.loadgen")


class PlanUser(FastHttpUser):
    abstract = True
    network_timeout = 600.0
    connection_timeout = 10.0
    concurrency = 4096        # connections a user may hold: an open-loop dispatcher has many requests out

    def wait_time(self):
        """Think time between a user's requests: exponential around think_time_s, as real users' is,
        so arrivals do not lock step with the server's batch slots (a closed loop without it queues
        every request identically and hides the tail the knee rule looks for)."""
        mean = self.sparkrig.current().step.params.think_time_s
        return self.think.expovariate(1.0 / mean) if mean > 0 else 0.0

    @property
    def sparkrig(self) -> RunState:
        """This process's run, through Locust's environment (a worker's is replaced when the master's arrives)."""
        return state.of(self.environment)

    def on_start(self):
        st = self.sparkrig
        if st.run_id is None:                    # a worker that has not heard from the master yet
            gevent.sleep(0.5)
        runner = self.environment.runner
        offset = runner.worker_index * 1_000_000 if isinstance(runner, WorkerRunner) else 0
        self.index = offset + next(st.users)
        self.think = random.Random(f"{st.plan.seed}:think:{self.index}")
        self.client.base_url = st.base_url(self.environment.host)
        self.workload = self._make_workload(st)
        self.open_loop = OpenLoop(lambda t, entry: self._issue(self.sparkrig, t, entry),
                                  lambda t: self._shed(self.sparkrig, t))
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
        return workloads.RehydrateReplay(*args, st.rehydrate_manifests, st.sends_session_id)

    @task
    def request(self):
        st = self.sparkrig
        if st.failed or st.sink.writer is None:
            gevent.sleep(0.2)
            return
        params = st.current().step.params
        slot = st.slot

        def this_step() -> bool:
            return st.slot == slot and st.sink.writer is not None and not st.failed
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
            users_active=self.environment.runner.user_count,
            endpoint=req.path if req else "", model=req.body["model"] if req else st.plan.model_handle,
            intended_start_time=intended)
        if req is not None:
            rec.adapter, rec.session_id, rec.turn, rec.prefix_hash = req.adapter, req.session_id, req.turn, \
                req.prefix_hash
            rec.prompt_tokens_target, rec.request_hash = req.target_tokens, request_hash(req.path, req.body)
            rec.turn_tokens_target = req.turn_tokens
        return rec

    def _issue(self, st: RunState, intended: Optional[float] = None, entry=None) -> float:
        """One request of the workload, sent and recorded (``intended``: when an open loop wanted it sent);
        returns the outage backoff the outage tracker asks for (0 when none)."""
        if isinstance(self.workload, workloads.RehydrateReplay):
            self.workload.send_session_id = st.sends_session_id
        params = st.current().step.params
        req = self.workload.request_for(entry, params) if entry is not None else \
            self.workload.next(params, st.current().phase)
        rec = self._record(st, req, intended)
        text: Optional[list[str]] = [] if self.workload.wants_text else None
        try:
            send(self.client, "/" + req.path, req.body, rec, req.path, text)
        except GreenletExit:                       # Locust stopped this user mid-request (a step boundary)
            rec.ok, rec.error_class = False, CANCELLED_BY_STEP
            rec.error = "request in flight when Locust stopped the user at a step boundary or the end of the run"
            rec.e2e_s = time.time() - rec.start_time if rec.start_time else None
            st.sink.record(rec)
            raise
        if intended is not None:
            rec.schedule_lag_s = rec.start_time - intended
        st.sink.record(rec)
        self.workload.done(req, rec.ok, "".join(text or ()), rec.prompt_tokens)
        if rec.status == 400 and "session_id" in req.body and "session_id" in (rec.error or ""):
            self._session_id_refused(st, rec.error)
        return st.track(rec)

    def _shed(self, st: RunState, intended: float) -> None:
        """An arrival over max_in_flight: not sent, but recorded, so the schedule's shortfall is counted."""
        rec = self._record(st, None, intended)
        rec.start_time, rec.error_class = intended, SHED_BY_CLIENT
        rec.error = f"{st.current().step.params.max_in_flight} requests already in flight (max_in_flight)"
        st.sink.record(rec)

    def _session_id_refused(self, st: RunState, error: str) -> None:
        """H9's known blocker: the frontend rejects session metadata. Record it and go on without it."""
        if not st.session_id_refused:
            st.session_id_refused = True
            reason = f"{st.plan.hypothesis.blocked_if or 'the frontend rejects session_id'}: HTTP 400 {error}"
            log.warning("blocked: %s; continuing without session_id", reason)
            if st.sink.manifest is not None:
                st.sink.manifest.block(reason)
            else:
                st.sink.run_file_line(f"blocked-{st.worker}.txt", reason)


