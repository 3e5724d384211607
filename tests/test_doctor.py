"""`sparkrig doctor` (#29.2) against the simulator: a rig set up as the profile asks passes; a wrong port, a
missing tier2 directory, a tier2 on tmpfs, a KVBM that does not answer and a worker started without the
profile's KVBM variables each give their failing line, with the fix."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import configs
from configs.tier_env import tier_env
from conftest import ROOT, Sim, free_port
from rig import doctor as D

SPARKRIG = Path(sys.executable).parent / "sparkrig"


def overlay(tmp_path, sim, tier2=None, **stack_b) -> Path:
    urls = {"openai_base": f"{sim.base}/v1", "metrics_url": f"{sim.base}/metrics",
            "kvbm_metrics_url": f"http://127.0.0.1:{sim.kvbm_port}/metrics",
            "worker_metrics_url": f"http://127.0.0.1:{sim.worker_port}/metrics", **stack_b}
    tier2 = tier2 or tmp_path / "tier2"
    path = tmp_path / f"doctor-{len(list(tmp_path.glob('doctor-*')))}.yaml"
    path.write_text(f"stacks:\n  stackB: {json.dumps(urls)}\nprofiles: {{spill: {{tier2_path: {tier2}}}}}\n"
                    f"exporters: {{ports: {{nvme: {free_port()}, uma: {free_port()}, gpu: {free_port()}, "
                    f"kvbm: {free_port()}}}}}\nprometheus: {{port: {free_port()}}}\n")
    return path


def doctor(path, *args):
    proc = subprocess.run([str(SPARKRIG), "doctor", "--config", str(path), "--stack", "stackB", "--json", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    doc = json.loads(proc.stdout)
    return proc.returncode, {(c["area"], c["status"]): c for c in doc["checks"]}


def failed(checks) -> dict:
    return {area: c for (area, status), c in checks.items() if status == "fail"}


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    """Simulated Stack B whose process was started with the spill profile's KVBM variables, as a real worker
    is after `eval "$(sparkrig config tier-env --profile spill)"`."""
    tmp = tmp_path_factory.mktemp("doctor")
    (tmp / "tier2").mkdir()
    sim = Sim(tmp, "B")
    probe = tmp / "probe.yaml"
    probe.write_text(f"profiles: {{spill: {{tier2_path: {tmp / 'tier2'}}}}}\n")
    env = {k: v for k, v in tier_env(configs.load(probe), "spill").items() if v is not None}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        sim.__enter__()
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    yield {"tmp": tmp, "sim": sim}
    sim.stop()


def test_a_rig_set_up_as_the_profile_asks_passes(rig):
    rc, checks = doctor(overlay(rig["tmp"], rig["sim"]), "--worker-pid", str(rig["sim"].proc.pid))
    assert rc == 0 and not failed(checks), failed(checks)
    for area in ("stackB endpoint", "stackB KV metrics", "worker io", "worker env"):
        assert (area, "ok") in checks, area
    # the simulator serves 8192 tokens; H3's last step asks 8192 + 128: said before a sweep, not at H3
    context = checks[("stackB context", "warn")]
    assert "the served context is 8192 tokens; H3's largest step needs 8320" in context["detail"]
    assert any(a.startswith("tier2 ") and s == "ok" and "free for a 64GiB tier2" in c["detail"]
               for (a, s), c in checks.items())


def test_each_broken_part_fails_with_its_fix(rig, tmp_path):
    sim = rig["sim"]
    rc, checks = doctor(overlay(rig["tmp"], sim, openai_base=f"http://127.0.0.1:{free_port()}/v1"))
    assert rc == 1 and "cannot reach" in failed(checks)["stackB endpoint"]["detail"]
    rc, checks = doctor(overlay(rig["tmp"], sim, kvbm_metrics_url=f"http://127.0.0.1:{free_port()}/metrics"))
    assert rc == 1 and "DYN_KVBM_METRICS=true" in failed(checks)["stackB KV metrics"]["fix"]
    missing = rig["tmp"] / "never-made"
    rc, checks = doctor(overlay(rig["tmp"], sim, tier2=missing))
    assert rc == 1 and "does not exist" in failed(checks)[f"tier2 {missing}"]["detail"]
    assert failed(checks)[f"tier2 {missing}"]["fix"].startswith(f"mkdir -p {missing}")
    # a worker started without the profile's variables (this very test process stands in for it)
    rc, checks = doctor(overlay(rig["tmp"], sim), "--worker-pid", str(os.getpid()))
    wrong = failed(checks)["worker env"]
    assert rc == 1 and "DYN_KVBM_CPU_CACHE_GB=<unset>" in wrong["detail"] and "tier-env --profile spill" in wrong["fix"]


def test_a_tier2_on_tmpfs_fails(rig, tmp_path):
    """The mount table says tmpfs for the tier2 directory's device (a line in /proc/self/mountinfo's format)."""
    cfg = configs.load(overlay(rig["tmp"], rig["sim"]))
    dev = os.stat(rig["tmp"] / "tier2").st_dev
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"36 25 {os.major(dev)}:{os.minor(dev)} / / rw,relatime - tmpfs tmpfs rw,size=65536k\n")
    checks = D.tier2(cfg, "spill", mountinfo=str(mountinfo))
    assert [c.status for c in checks if "on tmpfs" in c.detail] == ["fail"]


def test_doctor_lines_say_status_area_detail_and_fix():
    line = D.Check("tool fio", "warn", "not installed (H4A/H4B's storage contention)", "make tools").line()
    assert line == "warn  tool fio: not installed (H4A/H4B's storage contention) — fix: make tools"
    assert [c.status for c in D.tools(which=lambda cmd: None) if c.area == "tool prometheus"] == ["fail"]


def test_a_worker_pid_that_is_empty_or_gone_says_so():
    """`--worker-pid "$(pgrep -of dynamo.trtllm)"` before the worker starts is an empty string: no pid, the
    other checks still run; a pid with no process is said as that, not as a missing privilege."""
    from configs import load
    from rig.cli import parser
    assert parser().parse_args(["doctor", "--worker-pid", ""]).worker_pid is None
    assert parser().parse_args(["doctor", "--worker-pid", "4321"]).worker_pid == 4321
    [gone] = D.worker(load(), "spill", 2**22 + 1)                   # above any pid_max a kernel allows
    assert (gone.status, gone.area) == ("fail", "worker") and "no process" in gone.detail
    assert "pgrep -of dynamo.trtllm" in gone.fix


def test_a_reader_that_stops_reading_ends_the_command_quietly():
    sparkrig = Path(sys.executable).parent / "sparkrig"
    # `true` reads nothing and exits at once: every write of the command meets a closed pipe (`| head -1`
    # or `--json | jq` quitting early does the same at some write)
    proc = subprocess.run(f"'{sparkrig}' config hypotheses | true", shell=True, capture_output=True, text=True,
                          timeout=60)
    assert proc.stderr == "", proc.stderr
