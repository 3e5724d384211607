"""Prometheus configuration and rules: promtool on everything we ship, and a real Prometheus started
by `python -m rig up` scraping the exporters and evaluating the recording rules."""
import json
import shutil
import subprocess
import time

import pytest
import requests
import yaml

from configs import load
from conftest import ROOT, free_port, run_module
from configs.discovery import LOADGEN_JOB, register_loadgen
from rig import promconfig

PROM = ROOT / "prometheus"
pytestmark = pytest.mark.skipif(not shutil.which("promtool"), reason="promtool comes with `make tools`")


def promtool(*args):
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=PROM)


def test_rules_are_valid_and_their_unit_tests_pass():
    rules = sorted(str(p.relative_to(PROM)) for p in (PROM / "rules").glob("*.rules.yml"))
    assert len(rules) >= 5
    check = promtool("check", "rules", *rules)
    assert check.returncode == 0, check.stdout + check.stderr
    test = promtool("test", "rules", "tests/rules.test.yml")
    assert test.returncode == 0, test.stdout + test.stderr
    # every recording rule and every alert has a test
    tested = (PROM / "tests" / "rules.test.yml").read_text()
    import yaml
    for f in rules:
        for group in yaml.safe_load((PROM / f).read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("record") or rule["alert"]
                assert name in tested, f"{name} has no promtool test"


def test_committed_compose_config_is_generated_and_valid():
    expected = promconfig.render(load(), "/etc/prometheus/rules", "/etc/prometheus/targets", compose=True)
    assert (PROM / "prometheus.yml").read_text() == expected, "run `python -m rig render --compose`"
    check = promtool("check", "config", "--syntax-only", "prometheus.yml")
    assert check.returncode == 0, check.stdout + check.stderr


def test_scrape_cadence_follows_the_plan():
    cfg = load()
    by_name = {j.name: j for j in promconfig.jobs(cfg)}
    assert by_name["sparkrig-nvme"].interval_ms == 250 and by_name["kvbm-stackB"].interval_ms == 250
    assert all(j.interval_ms <= 1000 for j in by_name.values())
    assert by_name["stack-stackA"].metrics_path == "/prometheus/metrics"   # trtllm-serve's Prometheus text
    assert by_name["stack-stackB"].targets[0]["labels"] == {"stack": "stackB", "role": "frontend"}


def test_loadgen_registration_is_a_file_sd_file(tmp_path):
    path = register_loadgen(tmp_path, "127.0.0.1:9108", {"worker": "0"})
    assert json.loads(path.read_text()) == [{"targets": ["127.0.0.1:9108"],
                                             "labels": {"role": "loadgen", "worker": "0"}}]
    assert path.name.startswith(LOADGEN_JOB)


def query(base, q, wait_s=0.0):
    """Instant query; with wait_s, retry until it returns series (rules need a scrape and an evaluation)."""
    deadline = time.time() + wait_s
    while True:
        result = requests.get(f"{base}/api/v1/query", params={"query": q}, timeout=5).json()["data"]["result"]
        if result or time.time() >= deadline:
            return result
        time.sleep(0.5)


def test_rig_up_scrapes_exporters_and_records_iostat_rules(tmp_path, write_yaml):
    overlay = write_yaml(f"run_dir: {tmp_path / 'run'}\n"
                         f"exporters: {{ports: {{nvme: {free_port()}, uma: {free_port()}, gpu: {free_port()}, "
                         f"kvbm: {free_port()}}}}}\nprometheus: {{port: {free_port()}}}\n"
                         # nothing listens there, whatever runs on this machine's 6880
                         f"stacks: {{stackB: {{kvbm_metrics_url: 'http://127.0.0.1:{free_port()}/metrics'}}}}\n")
    cfg = load(overlay)
    base = f"http://127.0.0.1:{cfg.prometheus.port}"
    up = run_module("rig", "--config", str(overlay), "up", timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        assert "Prometheus: " + base in up.stdout
        reads = query(base, "device:sparkrig_disk_reads:rate5s", wait_s=30)
        # the disk's own role label wins over the target's role="exporter" (honor_labels)
        assert reads and {r["metric"]["role"] for r in reads} <= {"system", "kv_tier2", "other"}
        assert query(base, 'sparkrig_process_count{role="exporter"}', wait_s=10)
        assert query(base, 'up{job="sparkrig-uma"} == 1', wait_s=10)
        assert query(base, "instance:sparkrig_memory_available:ratio", wait_s=10)
        assert query(base, 'sparkrig_kvbm_up{target="kvbm"} == 0', wait_s=10)    # no KVBM here: said, not crashed
        status = run_module("rig", "--config", str(overlay), "status")
        assert "prometheus" in status.stdout and "exporter-nvme" in status.stdout
        again = run_module("rig", "--config", str(overlay), "up", timeout=60)      # a second `rig up`
        assert again.returncode == 1 and "already running" in again.stderr
        assert query(base, 'up{job="sparkrig-uma"} == 1', wait_s=5)               # ...touched nothing
    finally:
        down = run_module("rig", "--config", str(overlay), "down")
    assert "prometheus" in down.stdout
    with pytest.raises(requests.ConnectionError):
        requests.get(base, timeout=2)
    assert run_module("rig", "--config", str(overlay), "status").stdout.strip() == "nothing is running"


def test_a_stale_pid_file_never_kills_another_process(tmp_path):
    """A pid file whose pid now belongs to someone else (recycled after a reboot or a crash) is ignored."""
    import subprocess
    import sys
    from rig.procs import Supervisor
    sup = Supervisor(tmp_path)
    started = sup.start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        (sup.pids / "sleeper.pid").write_text(f"{other.pid} 12345\n")           # someone else's pid, wrong start
        assert sup.pid_of("sleeper") is None and sup.stop_all() == []
        assert other.poll() is None                                              # still alive
        (sup.pids / "legacy.pid").write_text(f"{other.pid}\n")                  # an old-style file: not trusted
        assert sup.pid_of("legacy") is None
    finally:
        other.kill()
        import os
        import signal
        os.killpg(started.pid, signal.SIGKILL)


def test_rig_labels_and_remote_write_render_into_a_valid_config(write_yaml, tmp_path):
    """external_labels carry the rig (and site); remote_write reads credentials from files Prometheus opens
    itself, so no secret is in the generated file; promtool accepts the result."""
    secret = tmp_path / "store.password"
    secret.write_text("s3cret\n")
    token = tmp_path / "store.token"
    token.write_text("t0ken\n")
    cfg = load(write_yaml(f"""rig: spark-07
site: lab.b
prometheus:
  remote_write:
    - {{url: 'https://store.example:8428/api/v1/write', username: rig, password_file: '{secret}'}}
    - {{url: 'http://127.0.0.1:8480/insert/0/prometheus/api/v1/write', bearer_token_file: '{token}',
       max_backoff_ms: 10000}}
"""))
    text = promconfig.render(cfg, str(ROOT / "prometheus" / "rules"), str(tmp_path))
    doc = yaml.safe_load(text)
    assert doc["global"]["external_labels"] == {"rig": "spark-07", "site": "lab.b"}
    basic, bearer = doc["remote_write"]
    assert basic["basic_auth"] == {"username": "rig", "password_file": str(secret)}
    assert bearer["authorization"] == {"type": "Bearer", "credentials_file": str(token)}
    assert bearer["queue_config"]["max_backoff"] == "10000ms"
    assert "s3cret" not in text and "t0ken" not in text
    (tmp_path / "prometheus.yml").write_text(text)
    check = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("bad, blamed", [
    ("rig: 'spark 07'", "rig: must be letters"),
    ("prometheus: {remote_write: [{url: 'http://u:p@store:8428/api/v1/write'}]}", "must not carry credentials"),
    ("prometheus: {remote_write: [{url: 'http://store:8428/api/v1/write', username: rig}]}",
     "needs both username and password_file"),
    ("prometheus: {remote_write: [{url: 'store:8428'}]}", "remote_write"),
    ("prometheus: {remote_write: [{url: 'http://s/w', min_backoff_ms: 500, max_backoff_ms: 100}]}",
     "at least min_backoff_ms"),
])
def test_bad_rig_or_remote_write_settings_are_one_line(write_yaml, bad, blamed):
    from configs import ConfigError
    with pytest.raises(ConfigError, match=blamed) as err:
        load(write_yaml(bad + "\n"))
    assert "\n" not in str(err.value)
