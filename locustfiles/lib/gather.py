"""One run from many Locust processes, on this host or on others (`--master` / `--worker --master-host`):
what each worker produces reaches the master's run directory and its Prometheus through Locust's own
master/worker messages, so nothing relies on a shared file system.

A worker writes each record to its own copy (workers/<name>.jsonl in its run directory, as the request
ends: a killed worker keeps them) and sends them to the master twice a second and when it stops; the
master appends them to the run's requests.jsonl. Lines of run files (outages, blocked reasons) and the
worker's metrics address travel the same way; the master announces that address to its Prometheus.

At the end of a headless run Locust's master fires test_stop before it even tells the workers to quit, so
the master asks them first (MSG_FINISH: stop your users, send the rest, the cut requests included) and
waits, bounded, for each one's last batch before it closes the run.
"""
from __future__ import annotations

import logging
import time

import gevent

from configs.paths import check_name
from rig import local, promconfig

from . import state
from .state import MSG_METRICS, MSG_RECORDS, MSG_RUN_FILE, RunState

log = logging.getLogger("sparkrig.loadgen")
FLUSH_S = 0.5
FINISH_TIMEOUT_S = 15.0
MSG_FINISH = "sparkrig:finish"
RUN_FILES = ("outages-", "blocked-")          # the run files a worker may add lines to


def flush(st: RunState, final: bool = False) -> None:
    """Send the records this worker finished since the last flush (``final``: and say it has no more). A
    master gone already (a worker quitting after it) gets nothing: the worker's own copy holds them."""
    if st.to_master is not None and (st.outbox or final):
        lines, st.outbox = st.outbox or [], []
        try:
            st.to_master(MSG_RECORDS, {"worker": st.worker, "lines": b"".join(lines), "final": final})
        except Exception as exc:          # Locust's RPC raises its own and zmq's errors alike
            log.warning("%d records not sent to the master (%s); they are in %s", len(lines), exc,
                        st.writer.path if st.writer else "this worker's copy")


def register_worker(runner) -> None:
    runner.register_message(MSG_FINISH, _finish)


def start_worker(environment, st: RunState, metrics_address: str) -> None:
    runner = environment.runner
    st.to_master = runner.send_message
    runner.send_message(MSG_METRICS, {"address": metrics_address, "worker": st.worker})

    def forward():
        while st.writer is not None:
            gevent.sleep(FLUSH_S)
            flush(st)
    gevent.spawn(forward)


def _finish(environment, msg, **_kw) -> None:
    gevent.spawn(environment.runner.stop)          # its test_stop sends the last batch (gather.flush)


def finish_workers(runner, st: RunState, timeout_s: float = FINISH_TIMEOUT_S) -> None:
    """Master: ask every worker for its last records and wait for them, at most ``timeout_s``."""
    if not st.workers_pending:
        return
    runner.send_message(MSG_FINISH)
    deadline = time.monotonic() + timeout_s
    while st.workers_pending and time.monotonic() < deadline:
        gevent.sleep(0.1)
    if st.workers_pending and st.manifest is not None:
        st.manifest.note(f"records of worker(s) {', '.join(sorted(st.workers_pending))} did not all reach the master "
                         f"within {timeout_s:g} s; each worker keeps its own copy in workers/ of its run directory")


def _records(environment, msg, **_kw) -> None:
    st = state.current()
    if st.writer is not None and msg.data["lines"]:
        st.writer.write_lines(msg.data["lines"])
    if msg.data["final"]:
        st.workers_pending.discard(msg.data["worker"])


def _run_file(environment, msg, **_kw) -> None:
    st = state.current()
    name, line = msg.data["name"], msg.data["line"]
    if st.run_id is None or not name.startswith(RUN_FILES):
        return
    st.run_file_line(check_name(name, "run file"), line)
    if name.startswith("blocked-") and st.manifest is not None:
        st.manifest.block(line)


def _metrics(environment, msg, **_kw) -> None:
    st = state.current()
    address, worker = msg.data["address"], msg.data["worker"]
    if st.run_id is not None:
        st.workers_pending.add(worker)
        st.announced.append(promconfig.register_loadgen(local.targets_dir(st.cfg), address, {"worker": worker}))


def register_master(runner) -> None:
    runner.register_message(MSG_RECORDS, _records)
    runner.register_message(MSG_RUN_FILE, _run_file)
    runner.register_message(MSG_METRICS, _metrics)
