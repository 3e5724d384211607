"""Exporters on /proc and /sys trees copied from real machines (tests/fixtures/hosts/*, captured with
tests/fixtures/capture_host.py), plus the live machine and the CLIs over real HTTP."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from configs import load
from conftest import ROOT, free_port, run_module
from exporters.collectors.gpu import FieldGate, GpuCollector, Nvml
from exporters.collectors.nvme import DiskCollector, disk_of
from exporters.collectors.procfs import parse_diskstats
from exporters.collectors.smart import SmartError, SmartReader, parse_nvme_cli, parse_smartctl
from exporters.collectors.uma import UmaCollector
from faultcase import fault

HOSTS = ROOT / "tests" / "fixtures" / "hosts"
VM, H100 = HOSTS / "virtio-vm", HOSTS / "h100-vm"
EXCLUDE = load().exporters.disk_exclude


def scrape(*collectors) -> dict:
    reg = CollectorRegistry()
    for c in collectors:
        reg.register(c)
    out = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def by_name(samples: dict, name: str) -> dict:
    return {dict(lb).get("device", dict(lb).get("mode", "")): v for (n, lb), v in samples.items() if n == name}


def test_diskstats_counters_follow_node_exporter_semantics():
    # vda line: 41419 11847 3520938 16457 13271 33187 2997064 6360 0 5908 23232 4941 15 662832 350 1718 64
    m = scrape(DiskCollector(VM / "proc", VM / "sys", EXCLUDE, tier2_path="/kv", devnum=lambda p: (254, 0)))
    lb = frozenset({("device", "vda"), ("role", "kv_tier2")})
    assert m[("sparkrig_disk_reads_completed_total", lb)] == 41419
    assert m[("sparkrig_disk_read_bytes_total", lb)] == 3520938 * 512
    assert m[("sparkrig_disk_read_time_seconds_total", lb)] == pytest.approx(16.457)
    assert m[("sparkrig_disk_writes_completed_total", lb)] == 13271
    assert m[("sparkrig_disk_written_bytes_total", lb)] == 2997064 * 512
    assert m[("sparkrig_disk_io_time_seconds_total", lb)] == pytest.approx(5.908)
    assert m[("sparkrig_disk_io_time_weighted_seconds_total", lb)] == pytest.approx(23.232)
    assert m[("sparkrig_disk_io_now", lb)] == 0
    assert m[("sparkrig_disk_discards_completed_total", lb)] == 4941
    assert m[("sparkrig_disk_flush_requests_total", lb)] == 1718
    assert m[("sparkrig_disk_flush_requests_time_seconds_total", lb)] == pytest.approx(0.064)
    # loop and zram devices are filtered out by the configured regex
    assert set(by_name(m, "sparkrig_disk_reads_completed_total")) == {"vda"}
    assert m[("sparkrig_disk_size_bytes", frozenset({("device", "vda")}))] > 0


def test_roles_resolve_tier2_and_system_disks():
    def devnum(path):
        return {"/kv": (254, 16), "/": (254, 0)}[path]
    m = scrape(DiskCollector(H100 / "proc", H100 / "sys", EXCLUDE, tier2_path="/kv", devnum=devnum))
    roles = {dict(lb)["device"]: dict(lb)["role"] for (n, lb) in m if n == "sparkrig_disk_reads_completed_total"}
    assert roles == {"vda": "system", "vdb": "kv_tier2"}
    assert m[("sparkrig_disk_role_info", frozenset({("device", "vdb"), ("role", "kv_tier2")}))] == 1


def test_partition_resolves_to_its_parent_disk(tmp_path):
    # Real sysfs layout for a partition: .../block/nvme0n1/nvme0n1p2/{partition,dev}.
    part = tmp_path / "block" / "nvme0n1" / "nvme0n1p2"
    part.mkdir(parents=True)
    (part / "partition").write_text("2\n")
    (tmp_path / "dev" / "block").mkdir(parents=True)
    (tmp_path / "dev" / "block" / "259:2").symlink_to("../../block/nvme0n1/nvme0n1p2")
    (tmp_path / "dev" / "block" / "259:0").symlink_to("../../block/nvme0n1")
    assert disk_of(tmp_path, 259, 2) == "nvme0n1"
    assert disk_of(tmp_path, 259, 0) == "nvme0n1"
    assert disk_of(tmp_path, 1, 1) is None


def test_old_kernel_diskstats_without_discard_fields():
    stats = parse_diskstats("   8       0 sda 10 0 80 5 2 0 16 3 0 7 8\n")
    assert stats["sda"]["sectors_read"] == 80 and "discards_completed" not in stats["sda"]


def test_live_machine_marks_the_tier2_disk(tmp_path):
    m = scrape(DiskCollector(exclude=EXCLUDE, tier2_path=str(tmp_path / "not-yet-created")))
    roles = [dict(lb) for (n, lb) in m if n == "sparkrig_disk_role_info"]
    assert {"kv_tier2", "system"} <= {r["role"] for r in roles}


@fault("29.E1", "the profile's tier2 directory does not exist (a typo, an NVMe not mounted yet)",
       "sparkrig_kv_tier2_path_exists 0 (KvTier2PathMissing alerts; config validate and doctor say so) while kv_tier2 "
       "marks the disk of its nearest parent; 1, with the roles looked up again, as soon as it exists",
       ("exporter:sparkrig_kv_tier2_path_exists=0",))
def test_a_missing_tier2_directory_is_said_not_guessed_silently(tmp_path):
    """A tier2 path that does not exist (a typo, an NVMe not mounted yet) still gets the disk it would be
    created on, its parent's, but the exporter says so (#29.2): sparkrig_kv_tier2_path_exists 0, and the
    KvTier2PathMissing alert; once the directory exists the next scrape says 1, without waiting for the
    facts' refresh."""
    tier2 = tmp_path / "kv"
    seen = []
    collector = DiskCollector(VM / "proc", VM / "sys", EXCLUDE, tier2_path=str(tier2),
                              devnum=lambda p: (seen.append(p), (254, 0))[1])
    assert scrape(collector)[("sparkrig_kv_tier2_path_exists", frozenset())] == 0
    calls = len(seen)
    tier2.mkdir()
    assert scrape(collector)[("sparkrig_kv_tier2_path_exists", frozenset())] == 1
    assert len(seen) > calls                          # the roles were looked up again at once
    assert ("sparkrig_kv_tier2_path_exists", frozenset()) not in scrape(DiskCollector(VM / "proc", VM / "sys"))


def test_uma_from_fixture():
    m = scrape(UmaCollector(VM / "proc"))
    e = frozenset()
    assert m[("sparkrig_memory_MemAvailable_bytes", e)] == 24276068 * 1024
    assert m[("sparkrig_memory_MemTotal_bytes", e)] == 24684084 * 1024
    assert m[("sparkrig_memory_HugePages_Total", e)] == 0
    assert ("sparkrig_memory_Active_anon_bytes", e) in m
    assert m[("sparkrig_vmstat_pgmajfault_total", e)] == 1568
    assert m[("sparkrig_pressure_io_waiting_seconds_total", e)] == pytest.approx(3.290802)
    assert m[("sparkrig_pressure_io_stalled_seconds_total", e)] == pytest.approx(3.082687)
    assert m[("sparkrig_pressure_avg10_ratio", frozenset({("resource", "io"), ("kind", "some")}))] == \
        pytest.approx(0.0004)
    assert m[("sparkrig_pressure_up", e)] == 1
    ticks = os.sysconf("SC_CLK_TCK")
    assert m[("sparkrig_cpu_seconds_total", frozenset({("mode", "iowait")}))] == pytest.approx(352 / ticks)
    assert m[("sparkrig_cpu_seconds_total", frozenset({("mode", "user")}))] == pytest.approx(12526 / ticks)
    assert scrape(UmaCollector(H100 / "proc"))[("sparkrig_cpu_count", e)] == 16


def test_uma_without_psi_reports_down_and_keeps_serving(tmp_path, caplog):
    proc = tmp_path / "proc"
    shutil.copytree(VM / "proc", proc)
    shutil.rmtree(proc / "pressure")
    c = UmaCollector(proc)
    for _ in range(2):
        m = scrape(c)
        assert m[("sparkrig_pressure_up", frozenset())] == 0
        assert ("sparkrig_memory_MemAvailable_bytes", frozenset()) in m
    assert sum("PSI unavailable" in r.message for r in caplog.records) == 1


def test_process_memory_for_matching_command_lines():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "-m", "stacksim"])
    try:
        time.sleep(0.2)
        m = scrape(UmaCollector(processes={"stacksim": "-m stacksim", "absent": "no-such-process-xyz"}))
        assert m[("sparkrig_process_count", frozenset({("process", "stacksim")}))] >= 1
        assert m[("sparkrig_process_resident_memory_bytes", frozenset({("process", "stacksim")}))] > 1e6
        assert m[("sparkrig_process_count", frozenset({("process", "absent")}))] == 0
        assert m[("sparkrig_process_read_bytes_total", frozenset({("process", "stacksim")}))] >= 0
        # no process, no byte counters: a zero would read as "that stack read nothing from storage"
        assert ("sparkrig_process_read_bytes_total", frozenset({("process", "absent")})) not in m
    finally:
        child.kill()
        child.wait()


@fault("29.E2", "the serving process is found but its /proc/<pid>/io cannot be read (another user's process, "
       "the exporter not root), or no process matches the stack's pattern",
       "no sparkrig_process_read_bytes_total / written series for that name (one log line says why; nor GPU "
       "memory without a process), never 0: "
       "H2A's gate and the ssd_mechanism gate then say the serving process's reads are not observed",
       ("exporter:sparkrig_process_read_bytes_total=absent",))
def test_unreadable_process_io_is_no_series_not_a_zero(tmp_path):
    proc = tmp_path / "proc"
    shutil.copytree(VM / "proc", proc)
    for pid, cmd, io in (("4242", b"trtllm-serve\0--port\08355\0", False),
                         ("4343", b"python\0-m\0stacksim\0--stack\0B\0", True)):
        (proc / pid).mkdir()
        (proc / pid / "cmdline").write_bytes(cmd)
        (proc / pid / "statm").write_text("100 50 10 1 0 20 0\n")
        if io:
            (proc / pid / "io").write_text("rchar: 10\nwchar: 10\nsyscr: 1\nsyscw: 1\nread_bytes: 8192\n"
                                           "write_bytes: 4096\ncancelled_write_bytes: 0\n")
    m = scrape(UmaCollector(proc, processes={"stackA": "trtllm-serve", "stackB": "-m stacksim --stack B",
                                             "absent": "no-such-process-xyz"}, gpu_memory=lambda: {4242: 2**20}))
    assert m[("sparkrig_process_count", frozenset({("process", "stackA")}))] == 1
    assert m[("sparkrig_process_gpu_memory_bytes", frozenset({("process", "stackA")}))] == 2**20
    assert not [k for k in m if ("process", "absent") in k[1] and k[0] != "sparkrig_process_count"
                and not k[0].startswith("sparkrig_process_resident")]
    assert not [k for k in m if k[0].startswith("sparkrig_process_") and "bytes_total" in k[0]
                and ("process", "stackA") in k[1]]
    assert m[("sparkrig_process_read_bytes_total", frozenset({("process", "stackB")}))] == 8192
    assert m[("sparkrig_process_written_bytes_total", frozenset({("process", "stackB")}))] == 4096


def test_cli_serves_fixture_tree_on_loopback():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "exporters.nvme", "--procfs", str(VM / "proc"), "--sysfs",
                             str(VM / "sys"), "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert "127.0.0.1" in proc.stdout.readline()
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'sparkrig_disk_reads_completed_total{device="vda"' in text
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


@pytest.mark.parametrize("module", ["exporters", "exporters.nvme", "exporters.uma", "exporters.gpu", "exporters.kvbm"])
def test_cli_help(module):
    proc = run_module(module, "--help")
    assert proc.returncode == 0 and "--procfs" in proc.stdout


def test_cli_unknown_collector_is_one_line():
    proc = run_module("exporters", "--collectors", "nvme,warp", "--port", str(free_port()))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "error: unknown collector 'warp' (available: nvme, uma, gpu, kvbm)"


SMART = ROOT / "tests" / "fixtures" / "smart"


def test_smartctl_health_log_is_normalised():
    h = parse_smartctl(json.loads((SMART / "smartctl-7.5-nvme.json").read_text()))
    assert h["temperature_celsius"] == 54
    assert (h["temperature_warning_celsius"], h["temperature_critical_celsius"]) == (100, 110)
    assert h["percentage_used_ratio"] == pytest.approx(0.07)
    assert h["available_spare_threshold_ratio"] == pytest.approx(0.32)
    assert h["data_read_bytes"] == 860662 * 512000
    assert h["data_written_bytes"] == 25882809 * 512000
    assert h["unsafe_shutdowns"] == 17 and h["media_errors"] == 0


def test_nvme_cli_health_log_converts_kelvin():
    h = parse_nvme_cli(json.loads((SMART / "nvme-cli-smart-log.json").read_text()))
    assert h["temperature_celsius"] == pytest.approx(36.85)
    assert h["data_written_bytes"] == 4445011 * 512000
    assert h["available_spare_ratio"] == 1.0
    assert "temperature_warning_celsius" not in h
    # newer nvme-cli nests the critical warning bits under an object with its value
    assert parse_nvme_cli({"critical_warning": {"value": 2, "temperature": 1}, "temperature": 350})[
        "critical_warning"] == 2


def test_smartctl_refusal_carries_the_tools_reason():
    with pytest.raises(SmartError, match="No such device"):
        parse_smartctl(json.loads((SMART / "smartctl-no-device.json").read_text()))


@pytest.mark.skipif(not shutil.which("smartctl"), reason="smartmontools is installed by `make tools`")
def test_real_smartctl_on_a_missing_device_reports_down_once(caplog):
    reader = SmartReader(lambda: ["nvme97n1"], tool="smartctl")
    for _ in range(2):
        reader.refresh()
        m = scrape(reader)
        assert m[("sparkrig_nvme_smart_up", frozenset({("device", "nvme97n1")}))] == 0
    assert sum("nvme97n1 unavailable" in r.message for r in caplog.records) == 1


def test_without_smart_tools_the_collector_says_so_once(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("PATH", str(tmp_path))
    reader = SmartReader(lambda: ["nvme0n1"], tool="auto", interval_s=0.05)
    reader.start()
    time.sleep(0.2)
    reader.stop()
    assert scrape(reader)[("sparkrig_nvme_smart_up", frozenset({("device", "nvme0n1")}))] == 0
    assert sum("not installed" in r.message for r in caplog.records) == 1


def test_nvme_namespaces_are_whole_nvme_disks(tmp_path):
    (tmp_path / "diskstats").write_text(
        " 259 0 nvme0n1 1 0 8 1 1 0 8 1 0 1 2\n 259 1 nvme0n1p1 1 0 8 1 1 0 8 1 0 1 2\n"
        " 254 0 vda 1 0 8 1 1 0 8 1 0 1 2\n")
    assert DiskCollector(tmp_path, tmp_path, EXCLUDE).nvme_namespaces() == ["nvme0n1"]


def test_gpu_without_nvml_reports_down_once_and_keeps_serving(caplog):
    nvml = Nvml()
    gpu, uma = GpuCollector(nvml), UmaCollector(VM / "proc", {"x": "x"}, nvml.memory_by_pid)
    for _ in range(2):
        m = scrape(gpu, uma)
        assert m[("sparkrig_gpu_up", frozenset())] == 0
        assert ("sparkrig_memory_MemAvailable_bytes", frozenset()) in m
        assert not any(n == "sparkrig_process_gpu_memory_bytes" for n, _ in m)
    assert sum("sparkrig_gpu_up is 0" in r.message for r in caplog.records) == 1


def test_unsupported_nvml_field_is_asked_once():
    import pynvml
    calls = []

    def unsupported():
        calls.append(1)
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
    gate = FieldGate()
    assert gate.read(0, "memory", unsupported) is None
    assert gate.read(0, "memory", unsupported) is None
    assert len(calls) == 1 and (0, "memory") in gate.unsupported
    assert gate.read(1, "memory", lambda: 7) == 7          # another GPU may support it
    with pytest.raises(pynvml.NVMLError):                 # other NVML failures are not swallowed
        gate.read(0, "power", lambda: (_ for _ in ()).throw(pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)))


def test_tier2_filesystem_space(tmp_path):
    m = scrape(DiskCollector(exclude=EXCLUDE, tier2_path=str(tmp_path / "kv" / "not-yet")))
    st = os.statvfs(tmp_path)
    assert m[("sparkrig_kv_tier2_filesystem_size_bytes", frozenset())] == st.f_blocks * st.f_frsize
    assert 0 < m[("sparkrig_kv_tier2_filesystem_avail_bytes", frozenset())] <= st.f_blocks * st.f_frsize
