import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from configs import load

ROOT = Path(__file__).resolve().parent.parent

# the slowest files first (1 to 3.5 minutes each on 2 cores), so the two xdist workers (a file at a time) end
# together instead of one running the last long file alone
SLOWEST_FIRST = ("test_demo.py", "test_real_dynamo.py", "test_locust.py", "test_pairs.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def run_module(*args, env=None, cwd=ROOT, timeout=60):
    """Run ``python -m ...`` the way a user would, returning the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def write_yaml(tmp_path):
    def write(text: str, name: str = "overlay.yaml") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p
    return write


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_below(limit: int, every: int = 1, stride: int = 10) -> int:
    """A free loopback port under ``limit`` (Dynamo's DYN_SYSTEM_PORT must fit a signed 16-bit number), with
    the ports ``stride`` apart after it free too for ``every`` ports in all (a local Dynamo's workers)."""
    import random
    import socket

    def free(port: int) -> bool:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
            return True
    for port in random.sample(range(20000, limit - stride * (every - 1)), 200):
        if all(free(port + i * stride) for i in range(every)):
            return port
    raise RuntimeError(f"no free port below {limit}")


class Sim:
    """A real ``python -m stacksim`` process on loopback, for tests."""

    def __init__(self, tmp_path: Path, stack: str, overlay: str = "", args=(), time_scale: float = 0.25,
                 preexec=None):
        self.preexec = preexec       # runs in the child before exec: e.g. resource limits
        self.port, self.kvbm_port, self.worker_port = free_port(), free_port(), free_port()
        self.tier2 = tmp_path / f"tier2-{stack}"
        cfg = tmp_path / f"sim-{stack}.yaml"
        cfg.write_text(overlay or "{}\n")
        self.cmd = [sys.executable, "-m", "stacksim", "--stack", stack, "--profile", "spill", "--config", str(cfg),
                    "--port", str(self.port), "--kvbm-port", str(self.kvbm_port),
                    "--worker-port", str(self.worker_port), "--tier2-path", str(self.tier2),
                    "--time-scale", str(time_scale), "--log-level", "WARNING", *args]
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / f"sim-{stack}-{self.port}.log"
        self.proc = None

    def __enter__(self):
        # stderr to a file: a pipe nobody reads fills up and blocks the simulator mid-run
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
                                         preexec_fn=self.preexec)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            raise RuntimeError(f"simulator did not start: {line}{self.log.read_text()}")
        return self

    def stop(self, sig=None):
        import signal
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __exit__(self, *exc):
        self.stop()

    @property
    def data_dir(self) -> Path:
        return self.tier2 / f"stacksim-stack{self.cmd[self.cmd.index('--stack') + 1]}-{self.port}"

    def metrics(self, path: str = "/metrics", port: int | None = None) -> dict:
        """Scrape and parse exposition text into {(name, frozenset(labels)): value}."""
        import requests
        from prometheus_client.parser import text_string_to_metric_families
        text = requests.get(f"http://127.0.0.1:{port or self.port}{path}", timeout=5).text
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def proc_io(self) -> dict:
        text = Path(f"/proc/{self.proc.pid}/io").read_text()
        return {k: int(v) for k, v in (line.split(": ") for line in text.splitlines())}


def sims_overlay(tmp: Path, a: Sim, b: Sim, rest: str) -> Path:
    """An overlay pointing the harness at simulated Stack A and B, writing under ``tmp``; ``rest`` adds
    the caller's own YAML."""
    overlay = tmp / "overlay.yaml"
    overlay.write_text(f"""
results_dir: {tmp / 'results'}
run_dir: {tmp / 'run'}
stacks:
  stackA: {{openai_base: '{a.base}/v1', metrics_url: '{a.base}/prometheus/metrics'}}
  stackB: {{openai_base: '{b.base}/v1', metrics_url: '{b.base}/metrics',
            kvbm_metrics_url: 'http://127.0.0.1:{b.kvbm_port}/metrics',
            worker_metrics_url: 'http://127.0.0.1:{b.worker_port}/metrics'}}
""" + rest)
    return overlay


@pytest.fixture(scope="session")
def observed(tmp_path_factory):
    """Simulated Stack A and B, `rig up` (exporters + real Prometheus) and two concurrent short Locust
    runs (H2A on A, H2B on B): what the dashboards and the analysis are tested against."""
    if not shutil.which("prometheus"):
        pytest.skip("prometheus comes with `make tools`")
    tmp = tmp_path_factory.mktemp("grafana")
    with Sim(tmp, "A", time_scale=0.25) as a, Sim(tmp, "B", time_scale=0.25) as b:
        overlay = sims_overlay(tmp, a, b, f"""profiles:
  spill: {{tier2_path: {tmp / 't2'}}}
exporters: {{ports: {{nvme: {free_port()}, uma: {free_port()}, gpu: {free_port()}, kvbm: {free_port()}}}}}
prometheus: {{port: {free_port()}}}
loadgen: {{metrics_port: {free_port()}, ready_timeout_s: 10}}
hypotheses: {{H2A: {{repetitions: 2}}, H2B: {{repetitions: 2}}}}
""")
        cfg = load(overlay)
        up = run_module("rig", "--config", str(overlay), "up", timeout=120)
        assert up.returncode == 0, up.stderr
        try:
            env = {**os.environ, "HARNESS_CONFIG": str(overlay), "MODEL": "l70b", "DURATION_S": "4",
                   "CONTEXT_TOKENS": "256,512"}         # 2 steps x 2 repetitions x 4 s, both runs at once
            start = time.time()
            runs = [subprocess.Popen([sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / f"{h}.py"),
                                      "--headless", "--only-summary"], cwd=tmp, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for h in ("h2a", "h2b")]
            for p in runs:
                p.wait(timeout=120)
            run_ids = [d.name for d in (tmp / "results").iterdir()]
            yield {"base": f"http://127.0.0.1:{cfg.prometheus.port}", "run_ids": run_ids, "start": start,
                   "at": start + 12, "overlay": overlay, "results": tmp / "results"}
        finally:
            run_module("rig", "--config", str(overlay), "down")


def stack_a_overlay(tmp: Path, sim: Sim, rest: str = "", results: Path | None = None) -> Path:
    """An overlay pointing Stack A at ``sim``, with everything it writes under ``tmp`` (results under
    ``results`` where given); ``rest`` adds the caller's own YAML."""
    path = tmp / "overlay.yaml"
    path.write_text(f"""results_dir: {results or tmp / 'results'}
run_dir: {tmp / 'run'}
stacks:
  stackA: {{openai_base: '{sim.base}/v1', metrics_url: '{sim.base}/prometheus/metrics'}}
loadgen: {{metrics_port: {free_port()}, ready_timeout_s: 10}}
{rest}""")
    return path


def pairs_overlay(tmp, tier2_bytes: str = "256MiB", openai_port: int | None = None, engine: str = "",
                  offload: str = "kvbm"):
    """An overlay for `rig pairs` and `rig rehydrate` legs on a small simulated Stack B under ``tmp``, its KV
    moved by ``offload`` (KVBM, or TensorRT-LLM's native offload)."""
    overlay = tmp / "pairs.yaml"
    overlay.write_text(f"""results_dir: {tmp / 'results'}
run_dir: {tmp / 'run'}
engine: {{time_scale: 0.25, lora_count: 0{', ' + engine if engine else ''}}}
stacks:
  stackB: {{openai_base: 'http://127.0.0.1:{openai_port or free_port()}/v1', metrics_url: 'http://127.0.0.1:{free_port()}/metrics',
            kvbm_metrics_url: 'http://127.0.0.1:{free_port()}/metrics',
            worker_metrics_url: 'http://127.0.0.1:{free_port()}/metrics', kv_offload: {offload}}}
profiles:
  stress: {{tier0_bytes: 4MiB, tier1_bytes: 2MiB, tier2_bytes: {tier2_bytes}, tier2_path: {tmp / 't2'}}}
loadgen: {{metrics_port: {free_port()}, ready_timeout_s: 10}}
hypotheses:
  H9: {{params: {{max_tokens: 8}}}}
""")
    return overlay
