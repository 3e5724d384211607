"""Fault cases of issue 23 D-F: inputs the rig reads or is sent — damaged procfs files, a body that is not
its Content-Encoding, an endless exposition, impossible trace entries, credentials in URLs, a worker naming
an address, an unset or layered config — each answered with a bounded, named outcome."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT, Sim, free_port, run_module, stack_a_overlay
from faultcase import fault

VM = ROOT / "tests" / "fixtures" / "hosts" / "virtio-vm"


def samples(text: str) -> dict:
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def lb(**labels) -> frozenset:
    return frozenset(labels.items())


def damage(root, file: str, line: str) -> None:
    """Put a damaged line in the middle of a copied procfs file."""
    path = root / file
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:1] + [line] + lines[1:]) + "\n")


@fault("23.D3", fault="one malformed line in a procfs file, or a missing diskstats/meminfo, made the combined "
                      "exporter answer 500 for every collector (KVBM and NVMe series vanished with it)",
       says="the damaged line is skipped and counted per file; a collector that fails is logged once and left "
            "out (sparkrig_scrape_collector_success 0), the endpoint and the other collectors keep answering",
       catches=("exporter:damaged procfs line skipped and counted", "exporter:collector isolated"))
def test_a_damaged_procfs_costs_its_line_and_a_missing_file_its_collector(tmp_path):
    from exporters.collectors.nvme import DiskCollector
    from exporters.collectors.uma import UmaCollector
    from exporters.scrape import Scrape
    bad = tmp_path / "proc"
    shutil.copytree(VM / "proc", bad)
    for file, line in (("pressure/io", "some avg10=0.04 avg60=x total=1"), ("meminfo", "Cached:   lots kB"),
                       ("vmstat", "pgmajfault"), ("stat", "cpu  12526 0 5260 ??"), ("diskstats", "254 0 vda 1 2")):
        damage(bad, file, line)

    def scrape(root) -> dict:
        reg = CollectorRegistry()
        reg.register(Scrape({"nvme": [DiskCollector(root, VM / "sys", "^(loop|zram)")], "uma": [UmaCollector(root)]}))
        return samples(generate_latest(reg).decode())
    good, damaged = scrape(VM / "proc"), scrape(bad)
    errors = {dict(k[1])["file"]: v for k, v in damaged.items() if k[0] == "sparkrig_procfs_parse_errors_total"}
    assert errors == {"diskstats": 1, "meminfo": 1, "vmstat": 1, "stat": 1, "pressure/io": 1, "pressure/cpu": 0,
                      "pressure/memory": 0}
    assert damaged[("sparkrig_scrape_collector_success", lb(collector="uma"))] == 1
    assert damaged[("sparkrig_scrape_collector_success", lb(collector="nvme"))] == 1
    # every value but the damaged lines' is what the good root gives (the fixture's second lines stay too)
    lost = {k for k in good if k not in damaged}
    assert {k[0] for k in lost} <= {"sparkrig_cpu_seconds_total"}
    vda = next(k for k in good if k[0] == "sparkrig_disk_reads_completed_total" and ("device", "vda") in k[1])
    for key in [("sparkrig_memory_MemAvailable_bytes", lb()), ("sparkrig_vmstat_pgmajfault_total", lb()),
                ("sparkrig_pressure_io_waiting_seconds_total", lb()), vda]:
        assert damaged[key] == good[key], key

    # a missing meminfo and diskstats: the combined exporter still answers, KVBM's series with it
    (bad / "meminfo").unlink()
    (bad / "diskstats").unlink()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "exporters", "--collectors", "nvme,uma,kvbm", "--procfs", str(bad),
                             "--sysfs", str(VM / "sys"), "--port", str(port), "--kvbm-url",
                             f"http://127.0.0.1:{free_port()}/metrics", "--frontend-url", "", "--worker-url", ""],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "serving" in proc.stdout.readline()
        for _ in range(2):
            r = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
            assert r.status_code == 200
        m = samples(r.text)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert m[("sparkrig_scrape_collector_success", lb(collector="nvme"))] == 0
    assert m[("sparkrig_scrape_collector_success", lb(collector="uma"))] == 0
    assert m[("sparkrig_scrape_collector_success", lb(collector="kvbm"))] == 1
    assert m[("sparkrig_kvbm_up", lb(target="kvbm"))] == 0
    assert ("sparkrig_scrape_collector_duration_seconds", lb(collector="nvme")) in m
    failed = [line for line in err.splitlines() if "collector" in line and "failed" in line]
    assert len(failed) == 2 and any("meminfo" in line for line in failed), err      # once each, over two scrapes


@fault("23.D5", fault="a body sent as Content-Encoding: gzip that is not gzip got 500 and a traceback from the "
                      "simulator",
       says="400 naming the problem, no traceback; the next request is served",
       catches="stacksim:400 bad gzip")
def test_a_body_that_is_not_its_content_encoding_is_a_400(tmp_path):
    with Sim(tmp_path, "A") as a, requests.Session() as http:
        r = http.post(f"{a.base}/v1/completions", data=b'{"model": "x", "prompt": "hi"}', timeout=10,
                      headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
        assert r.status_code == 400
        assert "content-encoding: gzip" in r.json()["error"]["message"].lower()
        assert http.get(f"{a.base}/v1/models", timeout=10).status_code == 200
    assert "Traceback" not in a.log.read_text()


def _endless_target():
    """A loopback /metrics that never ends its body; (url, stop)."""
    import socket
    import threading
    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def answer(conn):
        with conn:
            try:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
                while not stop.is_set():
                    conn.sendall(b"kvbm_matched_tokens 1\n" * 4096)
            except OSError:
                pass

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(conn,), daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()

    def close():
        stop.set()
        srv.close()
    return f"http://127.0.0.1:{srv.getsockname()[1]}/metrics", close


@fault("23.D6", fault="the KVBM exporter's scrape of an endless body stayed bounded but took the exporter's peak "
                      "RSS to ~270 MB against its 16 MiB cap",
       says="each scrape stops at the cap and frees what it read: the process stays within the cap over its "
            "baseline, scrape after scrape",
       catches="exporter:body cap bounds memory")
def test_an_endless_kvbm_body_costs_at_most_the_cap(tmp_path):
    url, close = _endless_target()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "exporters.kvbm", "--kvbm-url", url, "--frontend-url", "",
                             "--worker-url", "", "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert "serving" in proc.stdout.readline()
        for _ in range(10):
            m = samples(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
        status = dict(line.split(":", 1) for line in open(f"/proc/{proc.pid}/status").read().splitlines())
        peak_kib = int(status["VmHWM"].split()[0])
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        close()
    assert m[("sparkrig_kvbm_scrape_errors_total", lb(target="kvbm", reason="too_large"))] == 10
    assert peak_kib < (16 + 60) * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"


def _trace(path, entries: list[str]):
    path.write_text("".join(
        f'{{"timestamp": {ts}, "input_length": {n}, "output_length": 8, "hash_ids": [0]}}\n' for ts, n in entries))
    return path


@fault("23.D4", fault="a trace entry of input_length 3000000 built a ~20 MB prompt and counted as a stack error "
                      "(http_413); Infinity/NaN timestamps were accepted and the entry never sent",
       says="one error line naming the trace line: timestamps finite and not negative when the trace is loaded, "
            "every entry within the served context at preflight, before any request",
       catches=("loadgen:trace timestamp checked at load", "loadgen:trace entry over the served context"))
def test_a_trace_entry_out_of_bounds_is_one_error_line_naming_it(tmp_path):
    from configs import ConfigError
    from locustfiles.lib import trace
    for bad in ("Infinity", "NaN", "-Infinity", "-5"):
        with pytest.raises(ConfigError, match=r"t\.jsonl:2: timestamp must be a finite number"):
            trace.load(_trace(tmp_path / "t.jsonl", [(0, 10), (bad, 10)]))
    with pytest.raises(ConfigError, match=r"t\.jsonl:1: expected timestamp"):      # int(Infinity): no traceback
        trace.load(_trace(tmp_path / "t.jsonl", [(0, "Infinity")]))

    huge = _trace(tmp_path / "huge.jsonl", [(0, 100), (5, 3_000_000), (10, 200)])
    with Sim(tmp_path, "B") as b:          # Stack B publishes its context (context_window: max_num_tokens)
        overlay = tmp_path / "overlay.yaml"
        overlay.write_text(f"""results_dir: {tmp_path / 'results'}
run_dir: {tmp_path / 'run'}
stacks:
  stackB: {{openai_base: '{b.base}/v1', metrics_url: '{b.base}/metrics',
            kvbm_metrics_url: 'http://127.0.0.1:{b.kvbm_port}/metrics'}}
loadgen: {{metrics_port: {free_port()}, ready_timeout_s: 10}}
""")
        env = {**os.environ, "HARNESS_CONFIG": str(overlay), "STACK": "B", "TRACE_FILE": str(huge)}
        proc = subprocess.run([sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "tr.py"), "--headless",
                               "--only-summary", "-t", "5s"], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=60)
        served = samples(requests.get(f"{b.base}/metrics", timeout=5).text)
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
    assert "huge.jsonl:2: input_length 3000000" in errors[0] and "context length 8192" in errors[0], errors
    assert not (tmp_path / "results").exists()                       # nothing half-made left behind
    completions = sum(v for (name, labels), v in served.items() if name == "stacksim_http_requests_total"
                      and dict(labels).get("endpoint") in ("completions", "chat_completions"))
    assert completions == 0, served                                   # not one request sent


@fault("23.E1", fault="loadgen.grafana_url 'HTTP://admin:hunter2@…' (upper-case scheme) was stored verbatim in the "
                      "manifest's config snapshot and rig pack's config.json; validation errors echoed URLs with "
                      "their passwords",
       says="credentials masked from the parsed URL whatever the scheme's spelling, in snapshots and in errors",
       catches=("redact:upper-case scheme", "redact:validation errors"))
def test_credentials_are_masked_whatever_the_scheme_spelling_and_in_errors(tmp_path):
    overlay = tmp_path / "grafana.yaml"
    overlay.write_text('loadgen: {grafana_url: "HTTP://admin:hunter2@grafana.lab:3000"}\n')
    shown = run_module("configs", "--config", str(overlay), "show")      # the manifest's snapshot: redact.plain
    assert shown.returncode == 0 and "hunter2" not in shown.stdout
    assert '"grafana_url": "http://***@grafana.lab:3000"' in shown.stdout
    for key, yaml_text in (("openai_base", "stacks: {stackA: {openai_base: 'HTTPS://admin:hunter2@spark:99999/v1'}}"),
                           ("kvbm_metrics_url", "stacks: {stackB: {kvbm_metrics_url: 'ftp://admin:hunter2@spark/m'}}"),
                           ("grafana_url", "loadgen: {grafana_url: ['http://admin:hunter2@grafana.lab']}")):
        overlay.write_text(yaml_text + "\n")
        bad = run_module("configs", "--config", str(overlay), "validate")
        assert bad.returncode == 2 and key in bad.stderr and "***@" in bad.stderr, bad.stderr
        assert "hunter2" not in bad.stderr, bad.stderr
    env = {**os.environ, "ENDPOINT": "HTTP://admin:hunter2@spark:99999/v1"}
    env.pop("HARNESS_CONFIG", None)
    bad = run_module("configs", "show", "--hypothesis", "H0", env=env)
    assert bad.returncode == 2 and "ENDPOINT" in bad.stderr and "hunter2" not in bad.stderr, bad.stderr


def listening(port: int) -> list[str]:
    """Addresses with a listening TCP socket on ``port`` (IPv4 and IPv6), from the kernel's own tables."""
    import ipaddress
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, p = local.split(":")
            if state == "0A" and int(p, 16) == port:
                raw = bytes.fromhex(address)         # 32-bit words in host (little-endian) order
                out.append(str(ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))))
    return out


@fault("23.E2", fault="a locustfile run without --headless served Locust's web UI (start, stop, the endpoint) on all "
                      "interfaces",
       says="the web UI listens on 127.0.0.1 unless --web-host says otherwise",
       catches="loadgen:web UI on loopback")
def test_the_locust_web_ui_listens_on_loopback_unless_told(tmp_path):
    with Sim(tmp_path, "A") as a:
        overlay = stack_a_overlay(tmp_path, a)
        env = {**os.environ, "HARNESS_CONFIG": str(overlay), "STACK": "A", "MODEL": "l70b"}
        for args, expected in (((), ["127.0.0.1"]), (("--web-host", "0.0.0.0"), ["0.0.0.0"])):
            port = free_port()
            proc = subprocess.Popen([sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "h0.py"),
                                     "--web-port", str(port), *args], cwd=tmp_path, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                deadline = time.time() + 30
                while not listening(port) and time.time() < deadline and proc.poll() is None:
                    time.sleep(0.2)
                assert listening(port) == expected
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@fault("23.E4", fault="a worker that can reach the master could name any address for the master's Prometheus to "
                      "scrape (and, through it, the file_sd file's name)",
       says="the master announces a worker's metrics address only on its own host, from a worker that says it "
            "runs there; anything else is logged and left out",
       catches="loadgen:worker metrics address checked")
def test_a_worker_names_only_addresses_on_the_masters_host(tmp_path, monkeypatch):
    import socket
    from types import SimpleNamespace
    from configs.discovery import targets_dir
    from locustfiles.lib import gather, state
    here = f"{socket.gethostname()}_0123456789abcdef"
    ok = gather.metrics_target
    assert ok("127.0.0.1:9101", here, "127.0.0.1") == "127.0.0.1:9101"
    assert ok("[::1]:9101", here, "127.0.0.1") == "[::1]:9101"
    assert ok(f"{socket.getfqdn()}:9101", here, "0.0.0.0") == f"{socket.getfqdn()}:9101"   # listen: all interfaces
    for address in ("10.1.2.3:9100", "169.254.169.254:80", "spark-02.example:9101", "127.0.0.1:0",
                    "127.0.0.1:99999", "127.0.0.1", "../../../tmp/x:80", "127.0.0.1/../x:80", "127.0.0.1]:80", 42):
        assert ok(address, here, "127.0.0.1") is None, address
    assert ok("127.0.0.1:9101", "elsewhere_0123456789abcdef", "127.0.0.1") is None    # a remote worker on loopback

    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(f"run_dir: {tmp_path / 'run'}\nresults_dir: {tmp_path / 'results'}\n")
    monkeypatch.setenv("HARNESS_CONFIG", str(overlay))
    environment = SimpleNamespace(sparkrig=state.RunState("H0", {}))       # the run, as Locust's environment holds it
    environment.sparkrig.run_id = "r1"
    for address, node in (("169.254.169.254:80", here), ("127.0.0.1:9101", here)):
        # what Locust's master hands a custom message's listener (importing locust here would patch this process)
        gather._metrics(environment, SimpleNamespace(type=state.MSG_METRICS, data={"address": address, "worker": "w"},
                                                     node_id=node))
    written = [p.name for p in targets_dir(environment.sparkrig.cfg).glob("loadgen-*.json")]
    assert written == ["loadgen-127.0.0.1_9101.json"]


@fault("23.F", fault="`env -u HARNESS_CONFIG rig ratesweep H0` failed with '.: cannot read config file'; `rig demo` "
                     "ignored HARNESS_CONFIG and its --config replaced configs/demo.yaml (a ports-only overlay turned "
                     "H0 into 9 steps x 300 s x 3)",
       says="no config means the defaults; the demo layers demo.yaml, then HARNESS_CONFIG or --config over it",
       catches=("cli:no config means the defaults", "cli:demo overlay layered"))
def test_no_config_means_the_defaults_and_the_demo_layers_its_overlay(tmp_path, monkeypatch):
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_CONFIG"}
    env["SEED"] = "not-a-seed"          # the calibration's Locust stops at its plan, not at an endpoint
    sweep = run_module("rig", "ratesweep", "H0", "--calibrate-s", "1", env=env)
    assert "cannot read config file" not in sweep.stdout, sweep.stdout
    assert "error: environment SEED='not-a-seed'" in sweep.stdout, sweep.stdout

    from configs import load
    from configs.loader import DEFAULT_FILES
    from configs.schema import to_plain
    from rig.demo import DEMO_CONFIG, demo_config
    ports = tmp_path / "ports.yaml"
    port = free_port()
    ports.write_text(f"run_dir: {tmp_path / 'run'}\nprometheus: {{port: {port}}}\n")
    monkeypatch.setenv("HARNESS_CONFIG", str(ports))
    for overlay in (None, str(ports)):           # $HARNESS_CONFIG, then --config
        cfg = demo_config(overlay)
        layered = load(overlay, files=(*DEFAULT_FILES, DEMO_CONFIG))       # as configs.load layers them
        h0 = cfg.hypotheses["H0"]
        assert (len(h0.sweep["concurrency"]), h0.step_duration_s, h0.repetitions) == (6, 10, 1)    # demo.yaml's
        assert cfg.prometheus.port == port and cfg.engine.max_batch_size == 8
        monkeypatch.delenv("HARNESS_CONFIG", raising=False)
        assert cfg.overlay.endswith("demo-config.yaml")                    # what every process it starts reads
        assert to_plain(load(cfg.overlay)) == to_plain(layered)
