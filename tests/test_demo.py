"""`python -m rig demo --quick`, end to end: simulated stacks, exporters, Prometheus, Locust, analysis."""
import json
import re
import shutil

import pytest
import yaml

from conftest import ROOT, free_port, run_module

pytestmark = pytest.mark.skipif(not shutil.which("prometheus"), reason="prometheus comes with `make tools`")


def test_quick_demo_finds_the_knees_and_the_tier2_mechanism(tmp_path):
    doc = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    a, b, kvbm = free_port(), free_port(), free_port()
    doc.update(results_dir=str(tmp_path / "results"), run_dir=str(tmp_path / "run"))
    doc["profiles"]["spill"]["tier2_path"] = str(tmp_path / "kvbm")
    doc["stacks"] = {
        "stackA": {"openai_base": f"http://127.0.0.1:{a}/v1", "metrics_url": f"http://127.0.0.1:{a}/prometheus/metrics"},
        "stackB": {"openai_base": f"http://127.0.0.1:{b}/v1", "metrics_url": f"http://127.0.0.1:{b}/metrics",
                   "kvbm_metrics_url": f"http://127.0.0.1:{kvbm}/metrics",
                   "worker_metrics_url": f"http://127.0.0.1:{free_port()}/metrics"}}
    doc["exporters"] = {"ports": {k: free_port() for k in ("nvme", "uma", "gpu", "kvbm")}}
    doc["prometheus"] = {"port": free_port()}
    doc["loadgen"] = {"metrics_port": free_port()}
    overlay = tmp_path / "demo.yaml"
    overlay.write_text(yaml.safe_dump(doc))
    proc = run_module("rig", "--config", str(overlay), "demo", "--quick", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "report: " in proc.stdout and "stopped " in proc.stdout
    [report] = (tmp_path / "results").glob("demo-report-*")
    verdicts = json.loads((report / "verdict.json").read_text())
    by = {(v["hypothesis"], v["stack"]): v for v in verdicts.values()}
    assert set(by) == {("H0", "stackA"), ("H0", "stackB"), ("H2A", "stackA"), ("H2B", "stackB")}
    for stack in ("stackA", "stackB"):
        knee = by[("H0", stack)]["knee"]
        assert knee["reason"] == "knee" and knee["u_work"] is not None, (stack, knee)
    assert by[("H2B", "stackB")]["evidence"]["tier2_read_bytes"] > 0
    assert by[("H2A", "stackA")]["evidence"]["tier2_read_bytes"] == 0
    gates = {g["name"]: g for g in by[("H2A", "stackA")]["gates"]}
    # judged on Stack A's own reads: Prometheus and the OS read the same (one) disk meanwhile
    flat = gates["h2a_nvme_flat"]
    assert (flat["status"], flat["reason"]) == ("pass", "OK") and "the serving process read" in flat["detail"], flat
    assert (report / "report.html").exists() and (report / "uwork.csv").exists()
    # the report's first screen answers (#26.2): its first section is the hypotheses' answers
    first = (report / "report.html").read_text().split("<h2>")[1]
    assert first.startswith("Answers</h2><table>")
    for hid in ("H0", "H2A", "H2B"):
        assert f"<td>{hid}</td>" in first
    # the console's step lines (#26.1), with the kv_tier2 disk and the disk-onboard share from Prometheus
    lines = [line for line in proc.stdout.splitlines() if "[H2B] step " in line and " done, " in line]
    assert len(lines) == 4 and all("kv_tier2 r/s n/a" not in line for line in lines), lines
    shares = [int(m.group(1)) for line in lines for m in [re.search(r"disk onboard (\d+)%", line)] if m]
    assert shares and max(shares) > 0, lines
    assert "[H2B] spill: 2 of 4 steps can reach the disk tier" in proc.stdout
    assert not list((tmp_path / "run" / "pids").glob("*.pid"))          # everything it started is stopped
