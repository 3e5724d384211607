"""`sparkrig`, the one door (#29.1): installed as a console script, every verb with a description, its defaults and
an example, --config before or after the verb, `runs` listing what results_dir holds."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

SPARKRIG = Path(sys.executable).parent / "sparkrig"


def sparkrig(*args, **kw):
    return subprocess.run([str(SPARKRIG), *args], cwd=ROOT, capture_output=True, text=True, timeout=60, **kw)


def verbs():
    from rig.cli import parser
    sub = next(a for a in parser()._actions if a.dest == "cmd")
    out = [(name,) for name in sub.choices]
    config = next(a for a in sub.choices["config"]._actions if a.dest == "config_cmd")
    return out + [("config", name) for name in config.choices]


def test_the_console_script_is_installed_and_says_its_version():
    from importlib import metadata
    proc = sparkrig("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"sparkrig {metadata.version('spark-storage-harness')}"


@pytest.mark.parametrize("verb", verbs(), ids=" ".join)
def test_every_verb_has_help_with_an_example(verb, capsys):
    from rig.cli import main
    with pytest.raises(SystemExit) as done:
        main([*verb, "--help"])
    assert done.value.code == 0
    assert re.search(r"\nexamples?:\n  \S", capsys.readouterr().out)


def test_the_hypothesis_table_says_how_long_each_run_takes():
    """A newcomer's question before any run (#29.4): which hypothesis, on which stacks, and for how long; the
    time is the plan's (steps x repetitions x step duration) with the environment's overrides, as the
    console will announce it (the README's table is this one: tests/test_docs.py)."""
    from configs import load
    from configs.__main__ import hypothesis_table
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in
            hypothesis_table(load(), {}, markdown=True).splitlines()[2:]}
    assert rows["H2B"][-1] == "5 steps x 3 repetitions x 300 s = 1h15m00s |"
    assert rows["H0"][2] == "stackA, stackB" and rows["H0"][-1].endswith("= 2h15m00s each |")
    assert rows["H9"][-1].startswith("1 step x 3 phases x ")
    short = sparkrig("config", "hypotheses", env={**os.environ, "DURATION_S": "60"})
    assert short.returncode == 0 and "5 steps x 3 repetitions x 60 s = 15m00s" in short.stdout


def test_help_shows_descriptions_defaults_and_examples():
    proc = sparkrig("up", "--help")
    assert proc.returncode == 0 and "start the exporters and Prometheus" in proc.stdout
    assert "(default: spill)" in proc.stdout and "example:\n  sparkrig up" in proc.stdout
    assert "example:" in sparkrig("config", "tier-env", "--help").stdout
    top = sparkrig("--help").stdout
    assert all(v in top for v in ("demo", "run", "report", "runs", "pairs", "config", "dynamo"))


def test_config_goes_before_or_after_the_verb(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine: {time_scale: .nan}\n")
    before, after = sparkrig("--config", str(bad), "config", "validate"), sparkrig("config", "validate", "--config", str(bad))
    assert before.returncode == after.returncode == 2 and before.stderr == after.stderr
    assert "engine.time_scale: expected a finite number" in before.stderr
    good = sparkrig("config", "validate")
    assert good.returncode == 0 and good.stdout.startswith("ok: ")


def test_runs_lists_each_run_with_its_verdict_and_says_which_is_damaged(tmp_path):
    results = tmp_path / "results"
    for run_id, hyp, status, verdict in (("H2B-stackB-1", "H2B", "complete", "pass"),
                                         ("H0-stackA-2", "H0", "interrupted", None)):
        d = results / run_id
        (d / "analysis").mkdir(parents=True)
        (d / "manifest.json").write_text(json.dumps({
            "run_id": run_id, "hypothesis": hyp, "stack": "stackB" if "B" in run_id else "stackA", "start": 1.0,
            "status": status, "tier_mode": "B2", "started_at": f"2026-12-0{len(hyp)}T08:00:00Z"}))
        if verdict:
            (d / "analysis" / "verdict.json").write_text(json.dumps({"verdict": verdict}))
    (results / "broken").mkdir()
    (results / "broken" / "manifest.json").write_text("{")
    overlay = tmp_path / "o.yaml"
    overlay.write_text(f"results_dir: {results}\n")
    proc = sparkrig("runs", "--config", str(overlay))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["run", "hypothesis", "stack", "tier", "status", "verdict", "started"]
    assert lines[1].split()[:6] == ["broken", "?", "?", "?", "damaged", "-"]
    assert lines[2].split() == ["H0-stackA-2", "H0", "stackA", "B2", "interrupted", "-", "2026-12-02T08:00:00"]
    assert lines[3].split() == ["H2B-stackB-1", "H2B", "stackB", "B2", "complete", "pass", "2026-12-03T08:00:00"]


def test_run_refuses_an_unknown_hypothesis_in_one_line():
    proc = sparkrig("run", "H99")
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: no hypothesis 'H99' (known: H0, H1")
    assert len(proc.stderr.strip().splitlines()) == 1
