"""The playbook runner against a "real" stack: STACK_B_URL/KVBM_URL point at a running server, so the
sweep starts no simulator of its own, runs the H9 check and reports it blocked with its checklist."""
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, Sim, free_port

pytestmark = pytest.mark.skipif(not shutil.which("prometheus"), reason="prometheus comes with `make tools`")


def test_h9_check_against_real_stack_urls(tmp_path):
    with Sim(tmp_path, "B", time_scale=0.25) as b:
        overlay = tmp_path / "sweep.yaml"
        overlay.write_text(yaml.safe_dump({
            "results_dir": str(tmp_path / "results"), "run_dir": str(tmp_path / "run"),
            "exporters": {"ports": {k: free_port() for k in ("nvme", "uma", "gpu", "kvbm")}},
            "prometheus": {"port": free_port()}, "loadgen": {"metrics_port": free_port()},
            "profiles": {"stress": {"tier2_path": str(tmp_path / "kv")}},
            "hypotheses": {"H9": {"step_duration_s": 2, "model": "l70b"}}}))
        env = {**os.environ, "STACK_B_URL": f"{b.base}/v1", "KVBM_URL": f"http://127.0.0.1:{b.kvbm_port}/metrics"}
        proc = subprocess.run([sys.executable, "-m", "rig", "--config", str(overlay), "sweep", "--phase", "H9"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert b.proc.poll() is None                                   # the user's stack was left alone
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "simulated stackB" not in proc.stdout
    assert "[x] manifest complete" in proc.stdout and "[x] H9_rehydrate.csv written" in proc.stdout
    summary = proc.stdout.split("sweep summary", 1)[1]
    assert "H9" in summary and "blocked" in summary and "checks ok" in summary
    assert not list((tmp_path / "run" / "pids").glob("*.pid"))


def test_the_playbook_phases_and_expected_tables_come_from_the_config_and_the_registry():
    """The sweep's phases are configs/hypotheses.yaml's `phase:` (each hypothesis on its stacks) and the table
    each post-run check expects is the one its registered report section writes (H4A's is the family's), not
    copies kept in rig/sweep.py (#25.1)."""
    from configs import load
    from rig.sweep import expected_csv, playbook
    p = playbook(load())
    assert p["A"] == [("H0", "stackA"), ("H0", "stackB"), ("H2A", "stackA"), ("H2B", "stackB"), ("H4A", "stackA"),
                      ("H4B", "stackB")]
    assert p["C"] == [("H8", "stackA"), ("H8", "stackB")] and p["H9"] == [("H9", "stackB")]
    assert sorted(p["B"]) == sorted([("H1", "stackB"), ("H5", "stackB"), ("H3", "stackA"), ("H3", "stackB"),
                                     ("H6", "stackB"), ("H7", "stackB")])
    assert (expected_csv("H0"), expected_csv("H4A"), expected_csv("TR")) == ("uwork.csv", "H4B_p99_vs_nvme.csv",
                                                                               "summary_v3.csv")
