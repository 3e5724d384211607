"""Starting what a rig run needs, shared by the demo, the sweep and the tier-mode experiments: a simulated
stack on its configured ports, a headless Locust run whose step lines are shown as they come, and the one
way the rig prints progress."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from configs import Harness
from configs.paths import PROJECT_ROOT, make_dir, resolve
from configs.loader import OVERLAY_ENV
from configs.plan import stack_name
from configs.runfiles import hold_writer_lock, new_run_id
from configs.model import tier_mode as canonical_mode
from configs.tier_env import engine_config, render, render_engine, tier_env

from .procs import StartError, Supervisor, ensure_free


def say(message: str) -> None:
    print(message, flush=True)


def experiment_dir(cfg: Harness, kind: str, part: str = "") -> tuple[Path, str]:
    """``<results_dir>/<kind>-<time>[-<part>]/`` for one experiment and its time stamp: made by this process,
    which holds its writer lock to the end (never released: the kernel lets go when the process ends), so
    `rig hygiene` leaves a live experiment and its legs where they are."""
    ts = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = make_dir(resolve(cfg.results_dir) / f"{kind}-{ts}{'-' + part if part else ''}")
    hold_writer_lock(out)
    return out, ts


def start_simulator(cfg: Harness, sup: Supervisor, name: str, profile: str = "spill", tier_mode: str = "B2") -> None:
    """The simulator for one configured stack, on that stack's ports, with ``profile``'s tiers (Stack B's in
    ``tier_mode``), reading the overlay ``cfg`` was loaded with."""
    stack = cfg.stacks[name]
    letter = name[-1]
    sup.refuse_running(f"stacksim-{letter}")
    url = urlsplit(stack.openai_base)
    cmd = [sys.executable, "-m", "stacksim", "--stack", letter, "--profile", profile,
           *(("--config", cfg.overlay) if cfg.overlay else ()), "--port", str(url.port), "--log-level", "WARNING"]
    ensure_free(url.hostname, url.port, f"the simulated {name}", "is a real stack running there? stop it, or "
                "point the stack elsewhere in an overlay")
    if stack.kvbm_metrics_url:
        cmd += ["--kvbm-port", str(urlsplit(stack.kvbm_metrics_url).port)]
    worker = urlsplit(stack.simulated_worker_url) if stack.simulated_worker_url else None
    if worker:
        ensure_free(worker.hostname, worker.port, f"the simulated {name}'s worker metrics",
                    "point the stack's worker_metrics_url elsewhere in an overlay")
    cmd += ["--worker-port", str(worker.port if worker else 0)]
    if stack.kv_tiering:
        cmd += ["--tier-mode", tier_mode]
    s = sup.start(f"stacksim-{letter}", cmd, ready_url=f"{stack.openai_base}/models", cwd=PROJECT_ROOT)
    mode = f", {tier_mode}" if stack.kv_tiering else ""
    say(f"  simulated {name} ({profile}{mode}) on {stack.openai_base} (pid {s.pid})")


def stop_simulator(sup: Supervisor, name: str) -> None:
    """The simulator this process started for ``name``; one another command started runs on (and the start
    that follows says it is there)."""
    if sup.mine(sim := f"stacksim-{name[-1]}"):
        sup.stop(sim)


class Interrupted(Exception):
    """Ctrl-C or SIGTERM came while legs ran: the caller keeps what finished and says the result is partial."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.code = 128 + signum


class Interrupt:
    """Ctrl-C and SIGTERM while the rig runs Locust: each Locust run lives in its own session (so a terminal's
    Ctrl-C never reaches it unasked), so the signal is forwarded to it as SIGTERM, which ends its run as
    `incomplete` with its records; the command goes on until that run has ended and its leg is written, then
    ``check()`` raises Interrupted. A second signal stops at once (KeyboardInterrupt)."""

    def __init__(self, running: list) -> None:
        self.running = running
        self.signum: Optional[int] = None

    def __enter__(self) -> "Interrupt":
        self.old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.old.items():
            signal.signal(s, handler)

    def _handle(self, signum, _frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        # straight to the descriptor: a print here, inside a print of the leg's lines, is a reentrant call
        os.write(sys.stdout.fileno(), f"{signal.Signals(signum).name}: stopping once the running leg has ended "
                 "and is written (again to stop at once)\n".encode())
        for p in self.running:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    def check(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)

    def sleep(self, seconds: float) -> None:
        """A pause that a signal ends."""
        deadline = time.monotonic() + seconds
        while self.signum is None and time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        self.check()


def end_locust(running: list, timeout_s: float = 30.0) -> None:
    """Whatever Locust run is still going gets SIGTERM and, ``timeout_s`` later, SIGKILL to its session: a
    command that stops leaves no load generator behind."""
    for p in running:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for p in list(running):
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        running.remove(p)


def run_locust(hypothesis: str, stack: str, cfg: Harness, running: list, extra_env=()) -> tuple[int, str]:
    """One locustfile, headless, reading the overlay ``cfg`` was loaded with; its step lines are shown as
    they come. Returns (exit status, run id: the RUN_ID it was given, or "" where it left no run)."""
    run_id = dict(extra_env).get("RUN_ID") or new_run_id(hypothesis, stack_name(cfg, stack))
    env = {**os.environ, "STACK": stack, "RUN_ID": run_id, **dict(extra_env)}
    env.pop(OVERLAY_ENV, None)
    if cfg.overlay:
        env[OVERLAY_ENV] = cfg.overlay
    env.pop("ENDPOINT", None)
    proc = subprocess.Popen([sys.executable, "-m", "locust", "-f",
                             str(PROJECT_ROOT / "locustfiles" / f"{hypothesis.lower()}.py"), "--headless",
                             "--only-summary"], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    running.append(proc)
    for line in proc.stdout:
        line = line.rstrip()
        if line.startswith(f"[{hypothesis}]") or line.startswith("error:"):
            say("    " + line)
    code = proc.wait()
    running.remove(proc)
    return code, run_id if (resolve(cfg.results_dir) / run_id / "manifest.json").exists() else ""


def restart_env(cfg: Harness, profile: str, tier_mode: str) -> dict[str, Optional[str]]:
    """What a restart of the real Stack B worker needs in its environment for ``profile``'s tiers."""
    if cfg.stacks["stackB"].kv_offload != "trtllm":
        return tier_env(cfg, profile, tier_mode=tier_mode)
    options = engine_config(cfg, profile, tier_mode)
    path = make_dir(resolve(cfg.run_dir), exist_ok=True) / f"kv-offload-{profile}-{canonical_mode(tier_mode)}.yaml"
    path.write_text(render_engine(cfg, profile, "stackB", tier_mode, options))
    return {"SPARKRIG_TIER_MODE": canonical_mode(tier_mode), "SPARKRIG_EXTRA_ENGINE_ARGS": str(path)}


def restart_stack_b(cfg: Harness, sup: Supervisor, profile: str, tier_mode: str) -> None:
    """Stack B in ``tier_mode`` with ``profile``'s tiers: a real one through STACK_B_RESTART_CMD (or the
    operator), else the simulator, started by ``sup`` (the one it started before stopped first)."""
    if os.environ.get("STACK_B_RESTART_CMD"):
        restart_real_stack_b(cfg, profile, tier_mode)
        return
    stop_simulator(sup, "stackB")
    start_simulator(cfg, sup, "stackB", profile, tier_mode=tier_mode)


def restart_real_stack_b(cfg: Harness, profile: str, tier_mode: str = "B2") -> None:
    """Restart a real Stack B worker with ``profile``'s tiers in ``tier_mode``: STACK_B_RESTART_CMD runs with
    the tier variables in its environment (the ones a mode leaves out removed), or, without it, the variables
    are printed and the operator restarts the worker by hand. Under TensorRT-LLM's own offload the tiers are
    the engine's options: written to a YAML file under run_dir, whose path the command gets as
    SPARKRIG_EXTRA_ENGINE_ARGS (for dynamo.trtllm --extra-engine-args, or trtllm-serve --config)."""
    env = restart_env(cfg, profile, tier_mode)
    command = os.environ.get("STACK_B_RESTART_CMD")
    if command:
        say(f"  restarting Stack B in {tier_mode}: {command}")
        kept = {k: v for k, v in os.environ.items() if env.get(k, "") is not None}
        done = subprocess.run(command, shell=True, env={**kept, **{k: v for k, v in env.items() if v is not None}})
        if done.returncode != 0:
            raise StartError(f"STACK_B_RESTART_CMD exited with status {done.returncode}: Stack B not restarted "
                             f"in {tier_mode}")
        return
    say("  restart the Stack B worker with:")
    for line in render(env).splitlines():
        say(f"    {line}")
    if not sys.stdin.isatty():
        raise SystemExit("error: Stack B needs a restart with new tiers; set STACK_B_RESTART_CMD for unattended runs")
    input("  press Enter when Stack B is back ... ")
