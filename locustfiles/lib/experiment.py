"""``experiment("H2B")`` gives a locustfile its User and LoadTestShape for one hypothesis, and wires Locust's
events: the run's start (endpoint check, prompt sizing, manifest, adapter proxy), its end, and the messages
that keep worker processes on the master's run and slot.

The plan (stack, profile, steps, durations, seed) comes from configs and the operator's environment
(STACK, PROFILE, CONCURRENCY, RATE_RPS, CONTEXT_TOKENS, DURATION_S, ENDPOINT, SEED, MODEL, TIER_MODE,
TRACE_FILE). What a process knows of the run is ``state``; the shape that walks the slots is ``shape``; the
user that sends (or, in an open loop, dispatches) requests is ``user``.
"""
from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import time

import gevent
from locust import events
from locust.runners import MasterRunner, WorkerRunner

from configs import ConfigError
from configs.paths import check_name
from configs.plan import normalise_endpoint
from configs.probe import wait_for_model
from configs.runfiles import REQUEST_MANIFEST, new_run_id, write_request_manifest
from configs.vocabulary import series as S

from . import fio, gather, state, watch
from .preflight import UNKNOWN_FIELD, size_prompts, unknown_fields_ignored
from .rundir import GrafanaAnnotator, expected_bytes, run_dir, space_problem, start_manifest
from .shape import PlanShape
from .state import MSG_RUN, MSG_SLOT, RunState
from .user import PlanUser

log = logging.getLogger("sparkrig.loadgen")



# ---- master / local side ---------------------------------------------------------------------------
def _room_problem(environment, st: RunState) -> str | None:
    """One line when the results filesystem cannot hold the records this run is expected to write."""
    need = expected_bytes([slot.step.params for slot in st.slots], st.plan.step_duration_s,
                          getattr(environment.parsed_options, "run_time", None), len(st.trace))
    return space_problem(st.cfg, need)


def _begin_run(environment) -> None:
    """Master / local, at init, before any user exists: room for the records, run directory (refused when it
    exists), manifest, metrics, endpoint check and adapter proxy. Done here because test_start runs inside
    Locust's spawning greenlet, which the shape's next tick may kill while a slow check is still waiting."""
    st = state.of(environment)
    target = normalise_endpoint(environment.host) if environment.host else st.plan.openai_base
    sizing, run_id = "", None
    try:
        run_id = check_name(st.env["RUN_ID"], "environment RUN_ID") if st.env.get("RUN_ID") else \
            new_run_id(st.plan.hypothesis_id, st.plan.stack_name)
        problem = fio.missing([slot.step for slot in st.slots])       # the tools a step needs, before any wait
        if problem is None and (waited := wait_for_model(target, st.plan.model_handle,
                                                          st.cfg.loadgen.ready_timeout_s)) is not None:
            problem = f"endpoint not ready: {waited}"
    except ConfigError as exc:
        problem = str(exc)
    else:
        if problem is None:
            problem, sizing = size_prompts(st.plan, st.sizer, target, st.model_context_limit(), st.trace)
    if not problem and isinstance(environment.runner, MasterRunner) and \
            (st.trace or any(slot.step.params.arrival_rate_rps > 0 for slot in st.slots)):
        problem = "open-loop arrivals (RATE_RPS) run in one Locust process: leave out --processes / --master"
    problem = problem or _room_problem(environment, st)
    if not problem:
        try:
            st.open(run_id)
        except ConfigError as exc:             # the run directory exists: someone else's run, left as it is
            problem = str(exc)
    if problem:                                # before the run exists: nothing half-made is left behind
        st.failed = problem
        print(f"error: {problem}", file=sys.stderr, flush=True)
        environment.process_exit_code = 2
        return
    served = time.time()
    st.serve_metrics(st.cfg.loadgen.metrics_port)
    if not isinstance(environment.runner, MasterRunner):
        st.sink.metrics.count_users(environment.runner)
    extra = {"locust": {"mode": "master" if isinstance(environment.runner, MasterRunner) else "local",
                        "host_override": environment.host}}
    manifest = st.sink.manifest = start_manifest(run_dir(st.cfg, st.run_id), st.run_id, st.plan, st.cfg, extra)
    manifest.note(sizing)
    manifest.update(telemetry=watch.preflight(st.cfg, st.plan.stack_name, served,
                                              wait_s=3 * st.cfg.prometheus.slow_interval_ms / 1000 + 1))
    if st.rehydrate_manifests:          # the replay list, deterministic: its hash says two runs replayed the same
        entries = [{"context_tokens": size, "session_id": e["session_id"], "prefix_hash": e["prefix_hash"],
                    "words": e["words"]} for size, items in sorted(st.rehydrate_manifests.items()) for e in items]
        manifest.doc["request_manifest_hash"] = write_request_manifest(
            run_dir(st.cfg, st.run_id) / REQUEST_MANIFEST, entries)
        manifest.write()
    if st.workload == "rehydrate_replay" and not st.sends_session_id:
        manifest.note("session_id not sent (SESSION_ID=off)")
    elif st.workload == "rehydrate_replay" and unknown_fields_ignored(target, st.plan.model_handle):
        manifest.doc["session_id_ignored"] = True
        manifest.note(f"session_id_ignored: the frontend answers 200 to a made-up field ({UNKNOWN_FIELD}), so "
                      "it drops fields it does not know and session_id reaches nothing behind it")
    if st.cfg.loadgen.grafana_url:
        st.side.grafana = GrafanaAnnotator(st.cfg.loadgen.grafana_url, os.environ.get("GRAFANA_TOKEN"),
                                           [S.ANNOTATION_TAG])
    st.console.banner(target, manifest.path.parent, getattr(environment.parsed_options, "run_time", None), sizing)
    if st.plan.hypothesis.adapter_proxy:
        try:
            st.side.start_proxy(st.plan.openai_base, st.tier2_path(st.current()), manifest)
        except (ConfigError, OSError) as exc:
            st.failed = str(exc)
            print(f"error: {exc}", file=sys.stderr, flush=True)
            manifest.note(f"adapter proxy: {exc}")
            environment.process_exit_code = 2


def _stop_on_sigterm(environment) -> None:
    st = state.of(environment)
    st.stop_reason = "stopped by SIGTERM before the last step ended"
    print(f"[{st.plan.hypothesis_id}] SIGTERM: stopping; the run is kept as incomplete", file=sys.stderr, flush=True)
    environment.runner.quit()


def quiet_gc() -> None:
    """Keep the garbage collector out of the measurement. Everything alive at the start (Locust, the plan,
    prompts, the tokenizer) is moved out of the collector's reach (gc.freeze), and young collections run
    ten times less often: a full collection over those objects stopped the event loop for ~50 ms in a
    15 s run at 256 streams — every chunk arriving meanwhile took it as client lag. Records and chunks
    hold no reference cycles, so reference counting frees them as before."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, 10, 10)


def _on_test_start(environment, **_kw) -> None:
    quiet_gc()
    st = state.of(environment)
    if not isinstance(environment.runner, WorkerRunner):
        # SIGTERM ends the run as Ctrl-C does: steps closed, manifest `incomplete` with its reason. Locust's
        # own SIGTERM handler is not in force in this process by now (its C-level disposition is back to
        # the default), so a SIGTERM used to end it at once, the manifest left `running` forever.
        signal.signal(signal.SIGTERM, lambda *_a: gevent.spawn(_stop_on_sigterm, environment))
    if isinstance(environment.runner, WorkerRunner) or st.failed or st.sink.manifest is None:
        return
    if isinstance(environment.runner, MasterRunner):
        environment.runner.send_message(MSG_RUN, {"run_id": st.run_id, "env": st.env, "slot": st.slot,
                                                  "sizing": st.sizer.state()})
        st.worker_watch = gevent.spawn(gather.watch_workers, environment.runner, st)
    st.enter_slot(st.slot)
    st.watch = gevent.spawn(watch.Watch(st.cfg, st.plan.stack_name,
                                        lambda outages: st.sink.manifest.update(telemetry_outages=outages)).run)


def _on_spawning_complete(environment, user_count: int) -> None:
    st = state.of(environment)
    if st.load_target is not None:
        st.note_load(user_count, st.load_target)


def _on_test_stop(environment, **_kw) -> None:
    st = state.of(environment)
    if isinstance(environment.runner, WorkerRunner):
        gather.flush(st, final=True)      # before Locust tells the master this worker stopped
        return
    if st.failed:                         # a run that stopped for its own files (records not written) says so
        environment.process_exit_code = 2
    if st.sink.manifest is None:
        return
    for greenlet in (st.watch, st.worker_watch):
        if greenlet is not None:
            greenlet.kill()
    if isinstance(environment.runner, MasterRunner):
        gather.finish_workers(environment.runner, st)
    reason = st.failed or (None if st.completed else st.stop_reason or "stopped before the last step ended")
    st.close(st.completed and not st.failed, reason)


def _on_quitting(environment, **_kw) -> None:
    st = state.of(environment)
    gather.flush(st)
    st.close(st.completed and not st.failed, st.failed or "process quit before the last step ended")


# ---- worker side -------------------------------------------------------------------------------------
def _on_run_message(environment, msg, **_kw) -> None:
    data = msg.data
    st = environment.sparkrig = RunState(state.of(environment).hypothesis_id, data["env"])
    st.sizer.restore(data["sizing"])
    st.open(data["run_id"], worker=True)
    # worker N (Locust's index from the master) on metrics_port + 1 + N: predictable, so firewall-able
    address = st.serve_metrics(st.cfg.loadgen.metrics_port + 1 + environment.runner.worker_index)
    st.sink.metrics.count_users(environment.runner)
    gather.start_worker(environment, st, address)
    st.enter_slot(data["slot"])


def _on_slot_message(environment, msg, **_kw) -> None:
    state.of(environment).enter_slot(msg.data)


def _quiet_console(environment) -> None:
    """A headless run prints our step lines, not Locust's request tables every 2 s (941 lines in four
    minutes, the step lines lost among them); Locust's summary at the end stays, and --print-stats brings
    the periodic tables back. Set here: Locust starts its printer after init, reading only_summary."""
    options = environment.parsed_options
    if options is not None and options.headless and not getattr(options, "print_stats", False):
        options.only_summary = True


def _on_init(environment, st: RunState) -> None:
    environment.sparkrig = st
    _quiet_console(environment)
    # Locust's spawning_complete carries no environment: this process's is the one it means
    events.spawning_complete.add_listener(lambda user_count, **_kw: _on_spawning_complete(environment, user_count))
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.register_message(MSG_RUN, _on_run_message)
        environment.runner.register_message(MSG_SLOT, _on_slot_message)
        gather.register_worker(environment.runner)
    elif environment.runner is not None:
        if isinstance(environment.runner, MasterRunner):
            gather.register_master(environment.runner)
        _begin_run(environment)


def _loopback_listeners(parser) -> None:
    """Locust's master and its web UI listen on every interface by default; ours on loopback (what
    --processes and a browser on this host need) unless --master-bind-host / LOCUST_MASTER_BIND_HOST or
    --web-host / LOCUST_WEB_HOST say otherwise, as every listener of the rig: the UI starts and stops runs
    and shows the endpoint, for anyone who can reach it."""
    parser.set_defaults(master_bind_host="127.0.0.1", web_host="127.0.0.1")


def experiment(hypothesis_id: str) -> tuple[type, type]:
    """The User and LoadTestShape classes for ``hypothesis_id``; call it once at module level."""
    try:
        st = RunState(hypothesis_id, dict(os.environ))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2)
    events.init_command_line_parser.add_listener(_loopback_listeners)
    events.init.add_listener(lambda environment, **_kw: _on_init(environment, st))    # attached there
    events.test_start.add_listener(_on_test_start)
    events.test_stop.add_listener(_on_test_stop)
    events.quitting.add_listener(_on_quitting)
    name = hypothesis_id.upper()
    user = type(f"{name}User", (PlanUser,), {"abstract": False, "host": st.plan.openai_base,
                                             "__module__": __name__})
    shape = type(f"{name}Shape", (PlanShape,), {"abstract": False, "__module__": __name__})
    return user, shape
