"""The fio contention job of H4A/H4B: started and stopped around the QoS steps.

Its file lives under the profile's tier2 directory (the disk the KV tier uses), in a ``fio/``
subdirectory created through the harness's path guard; its size is the fio profile's, so the
job can never write outside that directory or grow past the configured bound.
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Optional

from configs import ConfigError, FioProfile
from configs.paths import ensure_data_dir, safe_join


NOT_INSTALLED = "fio is not installed (`make tools`, or apt-get install -y fio)"


def missing(steps) -> Optional[str]:
    """One line when a step of the plan runs fio and fio is not there: said before the run directory exists."""
    uses = sorted({s.fio_profile for s in steps if s.fio_profile})
    if uses and not shutil.which("fio"):
        return f"{NOT_INSTALLED}: the plan's steps run fio profile(s) {', '.join(uses)}"
    return None


def fio_command(profile: FioProfile, name: str, directory: Path, output: Path) -> list[str]:
    cmd = ["fio", f"--name={name}", f"--filename={safe_join(directory, 'contention.dat')}",
           f"--size={profile.size}", f"--rw={profile.rw}", f"--bs={profile.bs}", f"--iodepth={profile.iodepth}",
           f"--numjobs={profile.numjobs}", f"--ioengine={profile.ioengine}", f"--direct={int(profile.direct)}",
           "--time_based", "--runtime=86400", "--group_reporting", "--output-format=json", f"--output={output}",
           "--thread"]          # jobs as threads of fio's one process: forked jobs setsid() and outlive its kill
    if profile.rw in ("randrw", "rw"):
        cmd.append(f"--rwmixread={profile.rwmixread}")
    if profile.rate_iops:
        cmd.append(f"--rate_iops={profile.rate_iops}")
    return cmd


class FioJob:
    def __init__(self, name: str, profile: FioProfile, tier2_path: str, output: Path) -> None:
        if not shutil.which("fio"):
            raise ConfigError(NOT_INSTALLED)
        self.directory = ensure_data_dir(Path(tier2_path) / "fio")
        self.output = output
        self.cmd = fio_command(profile, name, self.directory, output)
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def stop(self) -> Optional[str]:
        """Stop the job (fio writes its JSON summary on SIGINT); returns why the step had no contention when
        fio failed, left no summary, or moved no bytes: a step labelled with a fio profile claims it ran."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        _, stderr = self.proc.communicate()
        # fio exits 0 on SIGINT before its job starts, 128 once it runs ("terminating on signal 2")
        err = stderr.strip() if self.proc.returncode not in (0, 128, -signal.SIGINT) else None
        self.proc = None
        summary = self._summary()
        (self.directory / "contention.dat").unlink(missing_ok=True)
        if err:
            return err
        if summary is None:
            return f"fio left no JSON summary in {self.output.name}"
        if not any(job.get(d, {}).get("io_bytes", 0) for job in summary.get("jobs", ()) for d in ("read", "write")):
            return "fio moved no bytes (stopped before its job ran)"
        return None

    def _summary(self) -> Optional[dict]:
        """fio's JSON summary, kept alone in its file (fio puts "fio: terminating on signal 2" above it)."""
        try:
            text = self.output.read_text()
        except OSError:
            return None
        start = text.find("{")
        if start > 0:
            self.output.write_text(text[start:])
        try:
            return json.loads(text[max(start, 0):])
        except ValueError:
            return None
