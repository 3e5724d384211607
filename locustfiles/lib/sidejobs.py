"""What a run starts beside its load, on the master or a local run: the fio contention job of a step, the
LoRA adapter proxy, and Grafana's step annotations. Each is started and stopped here, and what it says goes
in the manifest."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Optional

from configs import ConfigError, Harness
from configs.runfiles import Manifest

from . import cache
from .fio import FioJob
from .rundir import GrafanaAnnotator


class SideJobs:
    def __init__(self, cfg: Harness) -> None:
        self.cfg = cfg
        self.fio: Optional[FioJob] = None
        self.proxy: Optional[subprocess.Popen] = None
        self.grafana: Optional[GrafanaAnnotator] = None

    def prepare(self, slot, manifest: Manifest, tier2: Path) -> dict:
        """What a step needs before its load: its fio job, cold caches; the notes its manifest step keeps."""
        notes = {}
        self.stop_fio(manifest)
        if slot.step.fio_profile:
            profile = self.cfg.fio_profiles[slot.step.fio_profile]
            out = manifest.path.parent / f"fio-step{slot.index}.json"
            self.fio = FioJob(f"contention-{slot.step.fio_profile}", profile, str(tier2), out)
            self.fio.start()
            notes["fio_output"] = out.name
        if slot.step.params.cache_state == "cold":
            notes["cold"] = cache.make_cold(tier2 / "lora")
        return notes

    def stop_fio(self, manifest: Optional[Manifest]) -> None:
        if self.fio is not None:
            err = self.fio.stop()
            if err and manifest:                   # its step (the last begun) had no contention to speak of
                manifest.note(f"fio job failed: {err.splitlines()[-1]}")
                manifest.mark_step(fio_error=err.splitlines()[-1])
            self.fio = None

    def start_proxy(self, openai_base: str, tier2: Path, manifest: Manifest) -> None:
        from locustfiles.adapter_proxy import proxy_command
        lg = self.cfg.loadgen
        self.proxy = subprocess.Popen(proxy_command(openai_base, lg.listen, lg.adapter_proxy_port, tier2),
                                      stdout=subprocess.PIPE, text=True)
        line = self.proxy.stdout.readline()
        if "serving" not in line:
            raise ConfigError(f"adapter proxy did not start: {line.strip() or 'no output'}")
        manifest.note(f"adapter proxy: {line.strip()}")

    def annotate(self, text: str, tags: list[str], manifest: Manifest) -> None:
        if self.grafana:
            problem = self.grafana.post(text, tags)
            if problem:
                manifest.note(problem)

    def close(self, manifest: Optional[Manifest]) -> None:
        self.stop_fio(manifest)
        if self.proxy is not None:
            self.proxy.terminate()
            summary, _ = self.proxy.communicate(timeout=10)   # its last line says what adapter I/O it did
            if manifest is not None and summary.strip():
                manifest.note(f"adapter proxy: {summary.strip().splitlines()[-1]}")
            self.proxy = None
