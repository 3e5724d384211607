"""Where one Locust process puts what the run measures: its records file (the run's requests.jsonl on the
master or a local run, workers/<name>.jsonl on a worker, which also queues them for the master), its
Prometheus metrics, and on the master or a local run the manifest. Only the sink writes run files."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Optional

from configs import Harness
from configs.paths import open_file
from configs.runfiles import Manifest, RecordWriter, RequestRecord

from .metrics import LoadgenMetrics
from .rundir import run_dir

MSG_RUN_FILE = "sparkrig:run_file"       # worker -> master: a line for a file of the run directory


class Sink:
    def __init__(self, cfg: Harness, stop: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.stop = stop                              # ends the run with a reason (RunState.failed)
        self.run_id: Optional[str] = None
        self.writer: Optional[RecordWriter] = None
        self.lock: Optional[int] = None               # the run directory's writer lock, held until exit
        self.outbox: Optional[list[bytes]] = None     # a worker's records not yet sent to the master
        self.to_master: Optional[Callable[[str, object], None]] = None   # a worker's runner.send_message
        self.metrics: Optional[LoadgenMetrics] = None
        self.manifest: Optional[Manifest] = None
        self._stopped = False

    def open(self, run_id: str, path: Path, metrics: LoadgenMetrics, worker: bool) -> None:
        self.run_id = run_id
        self.writer = RecordWriter(path)
        self.outbox = [] if worker else None
        self.metrics = metrics

    def record(self, rec: RequestRecord) -> None:
        if self.writer is None:          # the run closed while this request was in flight (process quitting)
            return
        try:
            line = self.writer.write(rec)
        except OSError as exc:
            self.unwritten(exc)
            return
        if self.outbox is not None:
            self.outbox.append(line)
        self.metrics.observe(rec)

    def write_lines(self, lines: bytes) -> None:
        """The master: a worker's records, appended to the run's requests.jsonl."""
        try:
            self.writer.write_lines(lines)
        except OSError as exc:
            self.unwritten(exc)

    def unwritten(self, exc: OSError) -> None:
        """A record could not be written (a full filesystem, a file-size limit): the run cannot keep what
        it measures, so it stops — one error: line, the shape ends the run at its next tick (within a
        second), users send nothing more, and the manifest (or STOPPED) keeps the reason. Never raised into
        the users: raised inside a cut request's GreenletExit handler, it kept Locust's users alive."""
        if self._stopped:
            return
        self._stopped = True
        reason = f"records not written to {self.writer.path} ({exc.strerror}): the run stopped there"
        self.stop(reason)
        print(f"error: {reason}", file=sys.stderr, flush=True)

    def run_file_line(self, name: str, line: str) -> None:
        """Append a line to a file of the run directory: here on the master or a local run, through the
        master from a worker (whose run directory may be on another host)."""
        if self.to_master is not None:
            self.to_master(MSG_RUN_FILE, {"name": name, "line": line})
        else:
            with os.fdopen(open_file(run_dir(self.cfg, self.run_id) / name, os.O_WRONLY | os.O_APPEND), "a") as f:
                f.write(line + "\n")

    def close(self, complete: bool, reason: Optional[str]) -> None:
        if self.manifest is not None:
            self.manifest.finish(complete, reason)
        if self.writer:
            self.writer.close()
            self.writer = None           # users still running until Locust kills them stop sending (see request)
        if self.metrics:
            self.metrics.close()
