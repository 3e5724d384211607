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
