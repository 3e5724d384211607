"""The run's files (configs.runfiles): the contract between the load generator and the analysis."""
import json

import pytest

from analysis.steps import load_run
from configs.runfiles import SCHEMA_VERSION, read_manifest

OLD_MANIFEST = {      # what the first harness wrote: no schema_version, no session_id_ignored
    "run_id": "h2b-stackB-20261124T191825Z-8d58", "hypothesis": "H2B", "stack": "stackB", "status": "complete",
    "start": 1795550000.0, "end": 1795550030.0, "blocked": None, "notes": [],
    "steps": [{"index": 0, "step": 0, "repetition": 0, "phase": "run", "label": "context_tokens=256",
               "target_concurrency": 4, "target_context_tokens": 256, "start": 1795550000.0, "end": 1795550030.0}],
}
OLD_RECORD = {"run_id": "h2b-stackB-20261124T191825Z-8d58", "step": 0, "ok": True, "status": 200,
              "error_class": None, "error": None, "start_time": 1795550010.0, "ttft_s": 0.05, "e2e_s": 0.4,
              "prompt_tokens": 256, "completion_tokens": 16, "phase": "run", "session_id": None}


def test_a_first_version_run_is_still_read(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps(OLD_MANIFEST))
    (tmp_path / "requests.jsonl").write_text(json.dumps(OLD_RECORD) + "\n")
    m = read_manifest(tmp_path / "manifest.json")
    assert m["schema_version"] == 1 and m["session_id_ignored"] is False and m["blocked"] is None
    manifest, records = load_run(tmp_path)
    assert len(records) == 1 and records["cached_tokens"].isna().all()       # a field it did not have


def test_a_newer_or_foreign_manifest_is_refused_in_one_line(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({**OLD_MANIFEST, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(ValueError, match="reads up to"):
        read_manifest(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a run manifest"):
        read_manifest(path)


def test_defaults_are_not_shared_between_reads(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({k: v for k, v in OLD_MANIFEST.items() if k != "notes"}))
    read_manifest(path)["notes"].append("x")
    assert read_manifest(path)["notes"] == []


def test_damaged_record_lines_are_skipped_not_fatal(tmp_path):
    from configs.runfiles import read_records
    good = json.dumps(OLD_RECORD)
    (tmp_path / "requests.jsonl").write_bytes(
        (good + "\n").encode() + b"\xff\xfe not utf-8\n" + b"[1, 2]\n" + b'"a string"\n' + (good + "\n").encode()
        + b'{"cut mid-wri')
    assert len(read_records(tmp_path / "requests.jsonl")) == 2
    assert len(list(read_records(tmp_path / "requests.jsonl", ("step", "ok")))) == 2


def test_report_all_skips_damaged_runs_with_one_line_each(tmp_path, write_yaml):
    """A `{}` manifest, a truncated one, one that is not UTF-8, and a run whose stack died (no answer in any
    repetition): each damaged one gets a line, the others are still reported."""
    from analysis.promdata import export
    from conftest import run_module
    results = tmp_path / "results"

    def run(name, manifest_text, records):
        d = results / name
        d.mkdir(parents=True)
        (d / "manifest.json").write_bytes(manifest_text)
        (d / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        export({}, d / "telemetry", {"run_id": name})
        return d

    ok_manifest = {**OLD_MANIFEST, "run_id": "good", "plan": {"hypothesis": {"sweep": {}, "expected": "x"}},
                   "title": "t", "workload": "fixed_context", "profile": "spill"}
    ok_manifest["steps"] = [dict(ok_manifest["steps"][0], repetition=r, index=r) for r in (0, 1)]
    run("good", json.dumps(ok_manifest).encode(), [dict(OLD_RECORD, step=i) for i in (0, 1)])
    died = dict(ok_manifest, run_id="died")
    run("died", json.dumps(died).encode(), [dict(OLD_RECORD, step=i, ok=False, ttft_s=None, status=0,
                                                 error_class="connection") for i in (0, 1)])
    run("empty", b"{}", [])
    run("truncated", json.dumps(ok_manifest).encode()[:40], [])
    run("latin1", b"\xff\xfe{", [])
    overlay = write_yaml(f"results_dir: {results}\n")
    proc = run_module("analysis", "--config", str(overlay), "report", "--all", "--offline", "--out",
                      str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    skipped = [line for line in proc.stderr.splitlines() if line.startswith(("skipped", "not analysed"))]
    assert sorted(line.split()[1].rstrip(":") for line in skipped) == ["empty", "latin1", "truncated"], skipped
    verdicts = json.loads((tmp_path / "out" / "verdict.json").read_text())
    assert set(verdicts) == {"good", "died"}
    died_gates = {g["name"]: g["reason"] for g in verdicts["died"]["gates"]}
    assert died_gates["errors"] == "RUN_ERRORS_PRESENT" and died_gates["cov_p99"] in ("NO_LATENCY", "SINGLE_REPETITION")
