"""One run from many Locust processes, on this host or on others (`--master` / `--worker --master-host`):
what each worker produces reaches the master's run directory and its Prometheus through Locust's own
master/worker messages, so nothing relies on a shared file system.

A worker writes each record to its own copy (workers/<name>.jsonl in its run directory, as the request
ends: a killed worker keeps them) and sends them to the master twice a second and when it stops; the
master appends them to the run's requests.jsonl. Lines of run files (outages, blocked reasons) and the
worker's metrics address travel the same way; the master announces that address to its Prometheus when it
is one of this host's (``metrics_target``).

At the end of a headless run Locust's master fires test_stop before it even tells the workers to quit, so
the master asks them first (MSG_FINISH: stop your users, send the rest, the cut requests included) and
waits, bounded, for each one's last batch before it closes the run.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import sys
import time
from typing import Optional

import gevent

from configs.paths import check_name
from configs.runfiles import utc
from configs.discovery import advertise_host, connect_host, register_loadgen, targets_dir

from . import state
from .sink import MSG_RUN_FILE
from .state import MSG_METRICS, MSG_RECORDS, RunState

log = logging.getLogger("sparkrig.loadgen")
FLUSH_S = 0.5
FINISH_TIMEOUT_S = 15.0
MSG_FINISH = "sparkrig:finish"
RUN_FILES = ("outages-", "blocked-")          # the run files a worker may add lines to


def flush(st: RunState, final: bool = False) -> None:
    """Send the records this worker finished since the last flush (``final``: and say it has no more). A
    master gone already (a worker quitting after it) gets nothing: the worker's own copy holds them."""
    if st.sink.to_master is not None and (st.sink.outbox or final):
        lines, st.sink.outbox = st.sink.outbox or [], []
        try:
            st.sink.to_master(MSG_RECORDS, {"worker": st.worker, "lines": b"".join(lines), "final": final})
        except Exception as exc:          # Locust's RPC raises its own and zmq's errors alike
            log.warning("%d records not sent to the master (%s); they are in %s", len(lines), exc,
                        st.sink.writer.path if st.sink.writer else "this worker's copy")


def register_worker(runner) -> None:
    runner.register_message(MSG_FINISH, _finish)


def start_worker(environment, st: RunState, metrics_address: str) -> None:
    runner = environment.runner
    st.sink.to_master = runner.send_message
    runner.send_message(MSG_METRICS, {"address": metrics_address, "worker": st.worker})

    def forward():
        while st.sink.writer is not None:
            gevent.sleep(FLUSH_S)
            flush(st)
    gevent.spawn(forward)


def _finish(environment, msg, **_kw) -> None:
    gevent.spawn(environment.runner.stop)          # its test_stop sends the last batch (gather.flush)


def watch_workers(runner, st: RunState, every_s: float = 1.0) -> None:
    """Master, as a greenlet for the whole run: a worker that stops sending heartbeats (killed, its host
    gone) is an outage of the load generator. Locust marks it missing after HEARTBEAT_LIVENESS seconds and
    drops its users, so the step runs on below its target; that is said on the console and kept in the
    manifest (``loadgen_outages``: the worker, the step, the users it had), and its last records are not
    waited for at the end (its own copy holds them)."""
    from locust.runners import STATE_MISSING     # here: importing locust patches the importer's process
    users: dict[str, int] = {}
    lost: dict[str, dict] = {}
    while True:
        gevent.sleep(every_s)
        clients = {c.id: c for c in runner.clients.all}
        for cid, client in clients.items():
            if client.state != STATE_MISSING:
                users[cid] = sum(client.user_classes_count.values())
                if cid in lost and lost[cid]["end"] is None:          # it came back (a stall, not a death)
                    _back(st, lost[cid])
        for cid in set(users) - set(lost):
            if cid not in clients or clients[cid].state == STATE_MISSING:
                lost[cid] = _lost(runner, st, cid, users[cid])


def _lost(runner, st: RunState, cid: str, had: int) -> dict:
    now = time.time()
    name = st.worker_names.get(cid, cid)
    st.workers_pending.discard(name)
    step = st.current()
    outage = {"kind": "worker_lost", "worker": name, "slot": step.index, "users_lost": had,
              "users_left": runner.user_count, "target_concurrency": step.step.params.concurrency,
              "start": now, "started_at": utc(now), "end": None, "ended_at": None}
    print(f"[{st.plan.hypothesis_id}] load-generator worker {name} lost (no heartbeat): step {step.index + 1} goes on "
          f"with {runner.user_count} of {step.step.params.concurrency} users; recorded as an outage of the load "
          "generator", file=sys.stderr, flush=True)
    if st.sink.manifest is not None:
        st.sink.manifest.update(loadgen_outages=[*(st.sink.manifest.doc.get("loadgen_outages") or []), outage])
    return outage


def _back(st: RunState, outage: dict) -> None:
    now = time.time()
    outage.update(end=now, ended_at=utc(now))
    st.workers_pending.add(outage["worker"])
    if st.sink.manifest is not None:
        st.sink.manifest.update(loadgen_outages=st.sink.manifest.doc.get("loadgen_outages"))


def finish_workers(runner, st: RunState, timeout_s: float = FINISH_TIMEOUT_S) -> None:
    """Master: ask every worker for its last records and wait for them, at most ``timeout_s``; the last
    step ends before the wait."""
    if st.sink.manifest is not None:
        st.sink.manifest.end_step()
    if not st.workers_pending:
        return
    runner.send_message(MSG_FINISH)
    deadline = time.monotonic() + timeout_s
    while st.workers_pending and time.monotonic() < deadline:
        gevent.sleep(0.1)
    if st.workers_pending and st.sink.manifest is not None:
        st.sink.manifest.note(f"records of worker(s) {', '.join(sorted(st.workers_pending))} did not all reach the "
                              f"master within {timeout_s:g} s; each worker keeps its own copy in workers/ of its run "
                              "directory")


def _records(environment, msg, **_kw) -> None:
    st = state.of(environment)
    if st.sink.writer is not None and msg.data["lines"]:
        st.sink.write_lines(msg.data["lines"])
    if msg.data["final"]:
        st.workers_pending.discard(msg.data["worker"])


def _run_file(environment, msg, **_kw) -> None:
    st = state.of(environment)
    name, line = msg.data["name"], msg.data["line"]
    if st.run_id is None or not name.startswith(RUN_FILES):
        return
    st.sink.run_file_line(check_name(name, "run file"), line)
    if name.startswith("blocked-") and st.sink.manifest is not None:
        st.sink.manifest.block(line)


def metrics_target(address, client_id: str, listen: str) -> Optional[str]:
    """``address`` if this master may have its Prometheus scrape it for the worker ``client_id``, else None.

    The rule is the strictest one the master can check. Locust does not tell it where a worker's connection
    comes from (its ROUTER socket hands over the routing id the worker chose, ``<hostname>_<uuid>``), and
    everything in the message, that id included, is the worker's own word: any address it names on another
    host could be anyone's. What the master can vouch for is its own host, so it accepts only a worker
    that says it runs here (its id's host part is this host's name: a worker elsewhere left on loopback does
    not get this host scraped in its place) naming a loopback address or the host this master's own
    metrics are reached at (``loadgen.listen``). A worker on another host announces itself to its own
    host's Prometheus (``RunState.serve_metrics``). ``address`` is host:port with a port of 1-65535, and no
    more: it also names the file_sd file."""
    if not isinstance(address, str):
        return None
    host, _, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536) or \
            client_id.rpartition("_")[0] != socket.gethostname():
        return None
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    ours = {connect_host(listen), advertise_host(listen)}
    return address if loopback or host in ours else None


def _metrics(environment, msg, **_kw) -> None:
    st = state.of(environment)
    address, worker = msg.data["address"], msg.data["worker"]
    if st.run_id is None:
        return
    st.workers_pending.add(worker)
    st.worker_names[msg.node_id] = worker
    target = metrics_target(address, msg.node_id, st.cfg.loadgen.listen)
    if target is None:
        log.warning("worker %s (%s) gave %r as its metrics address: not announced to this host's Prometheus, "
                    "which scrapes only this host's addresses for workers", worker, msg.node_id, address)
        return
    st.announced.append(register_loadgen(targets_dir(st.cfg), target, {"worker": worker}))


def register_master(runner) -> None:
    runner.register_message(MSG_RECORDS, _records)
    runner.register_message(MSG_RUN_FILE, _run_file)
    runner.register_message(MSG_METRICS, _metrics)
