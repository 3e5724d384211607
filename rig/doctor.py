"""`sparkrig doctor`: what a real Spark needs before a sweep, one line each — ok, warn or fail, with the fix —
so an hour of sweep is not spent finding out that KVBM was never on, the tier2 directory was the root disk,
or the worker's /proc/<pid>/io could not be read. Exit 1 when any line fails; --json for scripts.

Each check is a function of the configuration and injected roots (procfs, sysfs, mountinfo, which), returning
``Check`` rows; nothing here starts, stops or writes anything.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import requests

from configs import ConfigError, Harness, load, plan_run
from configs import kvbm_checks
from configs.paths import resolve
from configs.probe import served_models
from configs.sizes import format_size
from configs.tier_env import tier_env
from configs.vocabulary import stacks as V

OK, WARN, FAIL = "ok", "warn", "fail"
# command -> (status when missing, what it is for)
TOOLS = {"prometheus": (FAIL, "the rig's Prometheus (`sparkrig up`)"),
         "promtool": (WARN, "checks the recording rules"),
         "fio": (WARN, "H4A/H4B's storage contention"),
         "iostat": (WARN, "cross-checks the nvme exporter's disk numbers"),
         "smartctl": (WARN, "the NVMe health log: temperature, wear, media errors"),
         "nvidia-smi": (WARN, "the GPU's own view beside NVML")}


@dataclass(frozen=True)
class Check:
    area: str
    status: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.status:<4}  {self.area}: {self.detail}" + (f" — fix: {self.fix}" if self.fix else "")


def tools(which: Callable[[str], Optional[str]] = shutil.which) -> list[Check]:
    out = []
    for cmd, (missing, why) in TOOLS.items():
        found = which(cmd)
        out.append(Check(f"tool {cmd}", OK, found) if found else
                     Check(f"tool {cmd}", missing, f"not installed ({why})",
                           "make tools" if cmd != "nvidia-smi" else "install the NVIDIA driver utilities"))
    return out


def nvml() -> Check:
    """NVML itself; on GB10 (unified memory) its memory queries answer NOT_SUPPORTED, which is expected."""
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception as exc:                      # no library, no driver, no GPU: all the same to the rig
        return Check("nvml", WARN, f"NVML does not start ({type(exc).__name__}): the gpu exporter reports nothing",
                     "run on the Spark with the NVIDIA driver loaded")
    try:
        n = pynvml.nvmlDeviceGetCount()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(handle)
        try:
            pynvml.nvmlDeviceGetMemoryInfo(handle)
            memory = "memory queries answer"
        except pynvml.NVMLError_NotSupported:
            memory = "memory queries NOT_SUPPORTED (expected on GB10's unified memory: the uma exporter covers it)"
        return Check("nvml", OK, f"{n} GPU(s), {name}; {memory}")
    except Exception as exc:
        return Check("nvml", WARN, f"NVML started but a query failed: {exc}")
    finally:
        pynvml.nvmlShutdown()


def privileges(procfs: str = "/proc") -> list[Check]:
    drop = Path(procfs) / "sys" / "vm" / "drop_caches"
    return [Check("privilege drop_caches", OK, "writable") if os.access(drop, os.W_OK) else
            Check("privilege drop_caches", WARN, f"{drop} is not writable: cold-cache steps cannot drop the page "
                  "cache", "run the load generator as root")]


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def ports(cfg: Harness, get=requests.get) -> list[Check]:
    """Our listeners: free (up will take them) or already ours; anything else there is a fail."""
    out = []
    listeners = [(f"exporter {name}", cfg.exporters.listen, port, "/metrics", "sparkrig_")
                 for name, port in cfg.exporters.ports.items()]
    listeners.append(("prometheus", cfg.prometheus.listen, cfg.prometheus.port, "/-/ready", "Ready"))
    for what, host, port, path, mark in listeners:
        if not _answers(host, port):
            out.append(Check(f"port {port}", OK, f"free for the {what}"))
            continue
        try:
            ours = mark in get(f"http://{host}:{port}{path}", timeout=3).text
        except requests.RequestException:
            ours = False
        out.append(Check(f"port {port}", OK, f"served by the {what}") if ours else
                   Check(f"port {port}", FAIL, f"taken by something that is not the {what}",
                         "stop it, or move exporters.ports / prometheus.port in an overlay"))
    return out


def largest_context(cfg: Harness, stack: str) -> Optional[tuple[int, str]]:
    """The largest prompt + answer any hypothesis runs on ``stack``, and which."""
    best = None
    for hid, hyp in cfg.hypotheses.items():
        if stack not in hyp.stacks:
            continue
        try:
            plan = plan_run(cfg, hid, {"STACK": stack})
        except ConfigError:
            continue
        for step in plan.steps:
            need = step.params.context_tokens + step.params.max_tokens
            if best is None or need > best[0]:
                best = (need, hid)
    return best


def endpoints(cfg: Harness, stacks: list[str], get=requests.get) -> list[Check]:
    from locustfiles.lib.preflight import context_limit, served_card
    out = []
    for name in stacks:
        spec = cfg.stacks[name]
        model = cfg.models[spec.model].handle
        ids, why = served_models(spec.openai_base)
        if ids is None:
            out.append(Check(f"{name} endpoint", FAIL, why, f"start {name}, or point stacks.{name}.openai_base at it"))
            continue
        if model not in ids:
            out.append(Check(f"{name} model", FAIL, f"{spec.openai_base}/models lists {', '.join(map(str, ids[:4]))}"
                             f", not {model}", f"serve {model}, or set stacks.{name}.model"))
            continue
        out.append(Check(f"{name} endpoint", OK, f"{spec.openai_base} serves {model}"))
        limit, need = context_limit(served_card(spec.openai_base, model)), largest_context(cfg, name)
        if limit and need and need[0] > limit:
            out.append(Check(f"{name} context", WARN, f"the served context is {limit} tokens; {need[1]}'s largest "
                             f"step needs {need[0]}", "serve a longer context, or lower the hypothesis' "
                             "context_tokens in an overlay (that step will be refused)"))
        elif limit:
            out.append(Check(f"{name} context", OK, f"{limit} tokens served; the largest step needs "
                             f"{need[0] if need else 0}"))
    return out


def kv_source(cfg: Harness, get=requests.get) -> list[Check]:
    """Stack B's KV counters: KVBM's listener, or TensorRT-LLM's families on each worker's port."""
    b = next(((n, s) for n, s in cfg.stacks.items() if s.kv_tiering), None)
    if b is None:
        return []
    name, spec = b
    want, fix = ((V.KVBM + "offload_blocks_d2h", "start the worker with the tier_env variables (DYN_KVBM_METRICS="
                  "true, DYN_CONNECTOR=kvbm)") if spec.kv_offload == "kvbm" else
                 (V.TRTLLM_KV_ONBOARD_BYTES, "start dynamo.trtllm with --publish-metrics and DYN_SYSTEM_PORT, "
                  "the engine YAML from `sparkrig config tier-env`"))
    out = []
    for url in spec.kv_metrics_urls:
        try:
            text = get(url, timeout=3).text
        except requests.RequestException as exc:
            out.append(Check(f"{name} KV metrics", FAIL, f"{url} does not answer ({type(exc).__name__})", fix))
            continue
        out.append(Check(f"{name} KV metrics", OK, f"{url} serves {want}") if want in text else
                   Check(f"{name} KV metrics", FAIL, f"{url} answers without {want}", fix))
    return out


def _environ(pid: int, procfs: str) -> Optional[dict]:
    try:
        raw = (Path(procfs) / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def worker(cfg: Harness, profile: str, pid: Optional[int], procfs: str = "/proc") -> list[Check]:
    """The serving process: its /proc/<pid>/io (the storage gates' evidence) and, under KVBM, its DYN_KVBM_*
    against what the profile asks (the disk-offload filter included)."""
    if pid is None:
        return [Check("worker", WARN, "no worker pid: its /proc/<pid>/io and environment are not checked",
                      "give --worker-pid or $STACK_B_PID")]
    if not (Path(procfs) / str(pid)).is_dir():
        return [Check("worker", FAIL, f"no process {pid}: the worker is not running, or that is not its pid",
                      "start Stack B's worker; its pid: pgrep -of dynamo.trtllm")]
    out = [Check("worker io", OK, f"/proc/{pid}/io readable") if os.access(Path(procfs) / str(pid) / "io", os.R_OK)
           else Check("worker io", FAIL, f"/proc/{pid}/io is not readable: no disk read can back a disk-hit claim",
                      "run the rig as root (or as the worker's user)")]
    spec = next((s for s in cfg.stacks.values() if s.kv_tiering), None)
    if spec is None or spec.kv_offload != "kvbm":
        return out
    env = _environ(pid, procfs)
    if env is None:
        return out + [Check("worker env", WARN, f"/proc/{pid}/environ is not readable", "run as root")]
    expected = {k: v for k, v in tier_env(cfg, profile).items()
                if k in ("DYN_KVBM_CPU_CACHE_GB", "DYN_KVBM_DISK_CACHE_GB", "DYN_KVBM_DISK_CACHE_DIR",
                         "DYN_KVBM_DISABLE_DISK_OFFLOAD_FILTER", "DYN_KVBM_METRICS", "DYN_CONNECTOR")}

    def same(want, got) -> bool:
        try:
            return float(want) == float(got)
        except (TypeError, ValueError):
            return want == got
    wrong = [f"{k}={env.get(k, '<unset>')} (profile {profile}: {v if v is not None else '<unset>'})"
             for k, v in expected.items() if not same(v, env.get(k))]
    if wrong:
        return out + [Check("worker env", FAIL, "; ".join(wrong),
                            f'restart the worker after eval "$(sparkrig config tier-env --profile {profile})"')]
    return out + [Check("worker env", OK, f"DYN_KVBM_* as profile {profile} asks")]


def tier2(cfg: Harness, profile: str, sysfs: str = "/sys", mountinfo: str = "/proc/self/mountinfo") -> list[Check]:
    """The directory the disk tier lives in: there, on the disk the exporters label kv_tier2, an NVMe, not
    memory, not spinning, not the system disk, with room for the profile's tier2."""
    from exporters.collectors.nvme import DiskCollector
    p = cfg.profiles[profile]
    path = Path(resolve(p.tier2_path))
    area = f"tier2 {path}"
    if not path.is_dir():
        return [Check(area, FAIL, "does not exist (KVBM would fall back to /tmp, TensorRT-LLM refuses it, and the "
                      "nvme exporter would label the disk of its nearest parent kv_tier2)",
                      f"mkdir -p {path} on the NVMe, or set profiles.{profile}.tier2_path")]
    out = []
    kind = kvbm_checks.fs_type(path, mountinfo)
    if kind in kvbm_checks.MEMORY_FS:
        out.append(Check(area, FAIL, f"on {kind}: the disk cache there is memory, not the NVMe",
                         "mount the NVMe there, or point tier2_path at it"))
    roles = DiskCollector(sysfs=sysfs, tier2_path=str(path)).roles()
    disk = next((d for d, r in roles.items() if "kv_tier2" in r), None)
    if disk is None and kind not in kvbm_checks.MEMORY_FS:
        out.append(Check(area, WARN, "no block device found for it: the nvme exporter labels no disk kv_tier2"))
    elif disk:
        note = f"on {disk}, the disk the nvme exporter labels kv_tier2"
        if "system" in roles[disk]:
            out.append(Check(area, WARN, f"{note}, which is also the system disk: the OS's I/O shares it",
                             "expected on a Spark with one SSD; keep other writers off it during a sweep"))
        else:
            out.append(Check(area, OK, note))
        if not disk.startswith("nvme"):
            out.append(Check(area, WARN, f"{disk} is not an NVMe namespace",
                             "put the tier2 directory on the NVMe (lsblk shows which disk holds it)"))
    if kvbm_checks.rotational(path, sysfs):
        out.append(Check(area, WARN, "on a rotational disk, not an NVMe tier",
                         "put the tier2 directory on the NVMe (lsblk shows which disk holds it)"))
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    out.append(Check(area, OK, f"{free / 2**30:.1f} GiB free for a {format_size(p.tier2_bytes)} tier2")
               if free >= p.tier2_bytes else
               Check(area, FAIL, f"{free / 2**30:.1f} GiB free, the profile's tier2 is {format_size(p.tier2_bytes)}",
                     f"free space, or lower profiles.{profile}.tier2_bytes"))
    if path == Path(kvbm_checks.KVBM_DEFAULT_DIR) or Path(kvbm_checks.KVBM_DEFAULT_DIR) in path.parents:
        out.append(Check(area, WARN, "under /tmp (KVBM's default, often tmpfs, cleaned on boot)",
                         "give the disk tier its own directory on the NVMe"))
    return out


def prometheus_targets(cfg: Harness, stacks: list[str]) -> list[Check]:
    from configs.discovery import prometheus_url
    from locustfiles.lib.watch import needed_jobs, target_health
    url = prometheus_url(cfg)
    health = target_health(url)
    if health is None:
        return [Check("prometheus", WARN, f"{url} does not answer: nothing is recorded yet", "sparkrig up")]
    out = []
    for stack in stacks:
        down = [job for job in needed_jobs(cfg, stack) if not health.get(job, {}).get("up")]
        out.append(Check(f"prometheus {stack}", OK, f"scrapes every target a {stack} run needs") if not down else
                   Check(f"prometheus {stack}", WARN, f"not up: {', '.join(down)}",
                         "start what they scrape (a load-generator job is up only during a run)"))
    return out


def run_all(cfg: Harness, profile: str, stacks: list[str], pid: Optional[int]) -> list[Check]:
    return (tools() + [nvml()] + privileges() + ports(cfg) + endpoints(cfg, stacks) + kv_source(cfg)
            + worker(cfg, profile, pid) + tier2(cfg, profile) + prometheus_targets(cfg, stacks))


def register(sub) -> None:
    p = sub.add_parser("doctor", help="check a real rig before a sweep: tools, privileges, ports, endpoints and "
                                      "context, KV metrics, the worker's KVBM settings, the tier2 disk, Prometheus")
    p.add_argument("--profile", default="spill", help="profile whose tiers and tier2 path are checked")
    p.add_argument("--stack", action="append", help="only this stack (repeatable; default every stack)")
    p.add_argument("--worker-pid", type=_pid, help="the Stack B worker's pid (default $STACK_B_PID); empty, as "
                   "$(pgrep …) gives before the worker starts, is none")
    p.add_argument("--json", action="store_true", help="one JSON document instead of lines")
    p.set_defaults(func=_cli)


def _pid(text: str) -> Optional[int]:
    if not text.strip():
        return None
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"a process id, got {text!r}")
    return int(text)


def _cli(args) -> int:
    cfg = load(args.config)
    if args.profile not in cfg.profiles:
        raise ConfigError(f"unknown profile {args.profile!r} (known: {', '.join(cfg.profiles)})")
    stacks = args.stack or list(cfg.stacks)
    unknown = [s for s in stacks if s not in cfg.stacks]
    if unknown:
        raise ConfigError(f"unknown stack {unknown[0]!r} (known: {', '.join(cfg.stacks)})")
    env_pid = os.environ.get("STACK_B_PID", "")
    pid = args.worker_pid or (int(env_pid) if env_pid.isdigit() else None)
    checks = run_all(cfg, args.profile, stacks, pid)
    failed = sum(c.status == FAIL for c in checks)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        for c in checks:
            print(c.line())
        warned = sum(c.status == WARN for c in checks)
        print(f"{len(checks)} checks: {failed} failed, {warned} warnings", file=sys.stderr)
    return 1 if failed else 0
