"""Fault cases of the results directory (issue 23, parts C, D, E): data the rig must never destroy, lose or
merge — packs that escape results/, hygiene moving live runs, a full filesystem, a reused RUN_ID, modes left
to the umask, names with a trailing newline."""
import contextlib
import csv
import errno
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import ROOT, Sim, free_port, pairs_overlay, run_module, stack_a_overlay
from faultcase import fault


# ---- helpers -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """One simulated Stack A for every Locust run of this file (each run has results of its own)."""
    with Sim(tmp_path_factory.mktemp("rundir-sim"), "A", time_scale=0.25) as a:
        yield a


def overlay(tmp: Path, sim: Sim, results: Path | None = None) -> Path:
    return stack_a_overlay(tmp, sim, "hypotheses: {H0: {params: {max_tokens: 8}}}\n", results)


def locust(config: Path, env=(), wait=True, preexec=None, timeout=60):
    """A real headless H0 run (Stack A, 2 users, 2 s unless ``env`` says otherwise)."""
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "h0.py"), "--headless", "--only-summary"]
    full = {**os.environ, "HARNESS_CONFIG": str(config), "MODEL": "l70b", "CONCURRENCY": "2", "DURATION_S": "2",
            **dict(env)}
    proc = subprocess.Popen(cmd, cwd=config.parent, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=preexec, start_new_session=True)
    if not wait:
        return proc
    try:
        proc.out = proc.communicate(timeout=timeout)[0]
    finally:
        stop(proc)
    return proc


def stop(proc) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def experiment(results: Path, name: str = "pairs-20260101T000000Z", concurrency: str = "2",
               run_id: str | None = None) -> Path:
    """A finished `rig pairs` experiment with one leg, as files: what `rig pack` reads."""
    leg = run_id or f"{name}-p0-l0-B1"
    exp = results / name
    exp.mkdir(parents=True)
    with open(exp / "legs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["pair", "order", "position", "mode", "run_id", "concurrency"])
        w.writeheader()
        w.writerow({"pair": 0, "order": "B1_B2", "position": 0, "mode": "B1", "run_id": leg,
                    "concurrency": concurrency})
    for f, text in (("deltas.csv", "pair,order\n"), ("comparisons.json", "[]\n"), ("report.md", "# pairs\n"),
                    ("verdict.json", '{"decision_grade": false, "reasons": ["TOO_FEW_PAIRS"]}\n')):
        (exp / f).write_text(text)
    run = (results / leg).resolve()
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"run_id": run.name, "start": 1.0, "stack": "stackB",
                                                   "hypothesis": "H9", "plan": {}, "config": {}}))
    (run / "requests.jsonl").write_text('{"phase": "replay", "ok": true, "ttft_s": 0.05}\n' * 3)
    return exp


def rig(config: Path, *args, umask=None):
    def preexec():
        os.umask(umask)
    return subprocess.run([sys.executable, "-m", "rig", "--config", str(config), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, preexec_fn=preexec if umask is not None else None)


def results_only(tmp: Path, results: Path) -> Path:
    path = tmp / "o.yaml"
    path.write_text(f"results_dir: {results}\nrun_dir: {tmp / 'run'}\n")
    return path


@contextlib.contextmanager
def small_fs(directory: Path, size: str):
    """``directory`` on a tmpfs of ``size`` (yields True), or, where mounting is refused, an empty directory
    whose writers a file-size limit holds instead (yields False)."""
    directory.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                             capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(directory)], check=True)


def fsize_limit(n: int):
    def preexec():
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))
    return preexec


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---- C1: rig pack ----------------------------------------------------------------------------------------
@fault("23.C1a", fault="`rig pack --name /some/dir` emptied that directory; `--name ..` twice removed the whole "
                       "results directory, then crashed",
       says="one `error:` line, exit 2; nothing outside <results_dir>/publish is written or removed",
       catches="cli:refuses traversal")
def test_pack_refuses_a_name_or_experiment_outside_results(tmp_path):
    results = tmp_path / "results"
    exp = experiment(results)
    elsewhere = experiment(tmp_path / "elsewhere")          # a finished experiment, outside results_dir
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "important").write_text("keep")
    config = results_only(tmp_path, results)
    for args in (("--name", str(victim)), ("--name", ".."), ("--name", "../.."), (str(elsewhere),)):
        proc = rig(config, "pack", *(args if len(args) == 1 else (exp.name, *args)))
        assert proc.returncode == 2 and len(errors(proc.stdout + proc.stderr)) == 1, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert (victim / "important").read_text() == "keep"
    assert sorted(p.name for p in results.iterdir()) == [exp.name, f"{exp.name}-p0-l0-B1"]


@fault("23.C1b", fault="a legs.csv whose concurrency is `2/../../../tmp/victim` made the default pack name write "
                       "there, and a second pack delete it; a run id read back from legs.csv could name any directory",
       says="one `error:` line, exit 2, before anything is written: paths built from files read back stay under "
            "results_dir",
       catches="cli:refuses traversal")
def test_pack_refuses_paths_built_from_legs_csv(tmp_path):
    results = tmp_path / "results"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "important").write_text("keep")
    climb = "2/" + "../" * 40 + str(victim).lstrip("/")
    experiment(results, "pairs-20260101T000000Z", concurrency=climb)
    experiment(results, "pairs-20260102T000000Z", run_id="../elsewhere-run")
    config = results_only(tmp_path, results)
    for name in ("pairs-20260101T000000Z", "pairs-20260101T000000Z", "pairs-20260102T000000Z"):
        proc = rig(config, "pack", name)
        assert proc.returncode == 2 and len(errors(proc.stdout + proc.stderr)) == 1, (proc.stdout, proc.stderr)
    assert sorted(p.name for p in victim.iterdir()) == ["important"]
    assert not (results / "publish").exists()


@fault("23.C1c", fault="`rig pack` removed whatever directory held the pack's name before writing its own",
       says="a directory the rig did not create (no marker file) is refused with one `error:` line and kept; a "
            "pack the rig made is replaced",
       catches="cli:refuses to remove a directory it did not create")
def test_pack_replaces_only_a_pack_it_made(tmp_path):
    results = tmp_path / "results"
    exp = experiment(results)
    config = results_only(tmp_path, results)
    mine = results / "publish" / "brief"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("the operator's")
    proc = rig(config, "pack", exp.name, "--name", "brief")
    assert proc.returncode == 2 and "was not created by the rig" in errors(proc.stdout + proc.stderr)[0]
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    proc = rig(config, "pack", exp.name, "--name", "brief2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (results / "publish" / "brief2" / "stale").write_text("from the first pack")
    proc = rig(config, "pack", exp.name, "--name", "brief2")          # its own pack: replaced
    assert proc.returncode == 0 and not (results / "publish" / "brief2" / "stale").exists()
    assert (results / "publish" / "brief2" / "methodology.md").exists()


# ---- C3: rig hygiene and live writers ---------------------------------------------------------------------
@fault("23.C3", fault="`rig hygiene --execute` moved a live run (`moving live1 (status running)`; Locust then "
                      "crashed on its manifest), and would move a running experiment and its legs",
       says="`skipping <dir> (live: …)` / `(a leg of the live …)`: a directory whose writer holds its lock is "
            "never moved; an abandoned `running` run still is",
       catches="cli:skips live runs")
def test_hygiene_leaves_a_live_experiment_and_its_legs_alone(tmp_path):
    results = tmp_path / "results"
    config = pairs_overlay(tmp_path, tier2_bytes="64MiB")

    dead = results / "h0-dead"                    # a run whose writer died: its lock file is there, unheld
    dead.mkdir(parents=True)
    (dead / "manifest.json").write_text(json.dumps({"run_id": "h0-dead", "status": "running", "start": 0,
                                                    "stack": "stackA", "hypothesis": "H0"}))
    (dead / "writer.lock").write_text("")
    proc = subprocess.Popen([sys.executable, "-m", "rig", "--config", str(config), "rehydrate", "--modes", "B0",
                             "--concurrencies", "1,2", "--duration-s", "2", "--context-tokens", "512"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not list(results.glob("rehydrate-*-B0-c2/manifest.json")):
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.2)
        hygiene = rig(config, "hygiene", "--execute")
        out, _ = proc.communicate(timeout=120)
    finally:
        stop(proc)
    assert proc.returncode == 0, out[-3000:]
    [exp] = results.glob("rehydrate-*[0-9]Z")
    said = hygiene.stdout.splitlines()
    assert f"skipping {exp.name} (live: its writer holds writer.lock)" in said, hygiene.stdout
    assert f"skipping {exp.name}-B0-c2 (live: its writer holds writer.lock)" in said, hygiene.stdout
    assert f"skipping {exp.name}-B0-c1 (a leg of the live {exp.name})" in said, hygiene.stdout
    assert "moving h0-dead (status running)" in said
    assert (exp / "recommendation.json").exists() and len(list(csv.DictReader(open(exp / "sweep.csv")))) == 2
    assert not dead.exists()


# ---- C4: a full results filesystem -------------------------------------------------------------------------
@fault("23.C4a", fault="a run started on a results filesystem far too small for it, and lost its records there",
       says="one `error:` line (room vs the volume expected), exit 2, before the run directory exists",
       catches="cli:refuses a run the results filesystem cannot hold")
def test_a_run_the_results_filesystem_cannot_hold_is_refused_at_start(tmp_path, sim):
    results = tmp_path / "results"
    with small_fs(results, "256k") as mounted:
        proc = locust(overlay(tmp_path, sim, results), env={"CONCURRENCY": "8", "DURATION_S": "60"},
                      preexec=None if mounted else fsize_limit(256 << 10), timeout=40)
        assert proc.returncode == 2, proc.out[-2000:]
        [line] = errors(proc.out)
        assert "expected to write" in line and str(results) in line
        assert not list(results.iterdir())


@fault("23.C4b", fault="a full results filesystem: users stuck on ENOSPC in their GreenletExit handlers kept the "
                       "load going until `timeout` killed it; Locust said 214 requests, requests.jsonl held 28, the "
                       "manifest stayed `running` beside a 0-byte manifest.json.tmp",
       says="the first record not written ends the run within a second: one `error:` line, exit 2; the manifest "
            "(or STOPPED, or stderr where not even that can be written) says why; no torn manifest.json.tmp",
       catches="manifest:stop_reason records not written")
def test_a_record_that_cannot_be_written_stops_the_run_and_says_why(tmp_path, sim):
    results = tmp_path / "results"
    with small_fs(results, "4m") as mounted:
        proc = locust(overlay(tmp_path, sim, results), env={"DURATION_S": "30"}, wait=False)
        try:
            deadline = time.time() + 40
            while time.time() < deadline and not any(len(f.read_bytes().splitlines()) >= 5
                                                     for f in results.glob("*/requests.jsonl")):
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.2)
            [run] = list(results.iterdir())
            if mounted:                           # the filesystem fills up under the run
                with open(tmp_path / "results" / "filler", "wb") as f:
                    with contextlib.suppress(OSError):
                        while True:
                            f.write(b"\0" * 65536)
                            f.flush()
            else:                                 # or its file-size limit drops to what requests.jsonl holds
                size = (run / "requests.jsonl").stat().st_size
                resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (size, size))
            filled = time.time()
            out, _ = proc.communicate(timeout=30)
            took = time.time() - filled
        finally:
            stop(proc)
        assert took < 8, f"the run went on {took:.1f} s after its records stopped being written"
        assert proc.returncode == 2, out[-2000:]
        [line] = errors(out)
        assert "records not written" in line and (os.strerror(errno.ENOSPC) in line or
                                                 os.strerror(errno.EFBIG) in line), line
        manifest = json.loads((run / "manifest.json").read_text())
        stopped = (run / "STOPPED").read_text() if (run / "STOPPED").exists() else None
        if manifest["status"] == "running":       # the manifest could not be written: the marker says it ended
            assert stopped is not None
            assert "records not written" in (stopped or out.split(line, 1)[1])
        else:
            assert manifest["status"] == "incomplete" and "records not written" in manifest["stop_reason"]
        assert not (run / "manifest.json.tmp").exists()


# ---- C5: a reused RUN_ID -------------------------------------------------------------------------------------
@fault("23.C5a", fault="two concurrent runs with one RUN_ID both exited 0 into one requests.jsonl",
       says="exactly one gets the run directory (os.mkdir); the other: one `error:` line, exit 2",
       catches="manifest:RUN_ID exists")
def test_two_concurrent_runs_with_one_run_id_are_never_merged(tmp_path, sim):
    config = overlay(tmp_path, sim)
    procs = [locust(config, env={"RUN_ID": "twin"}, wait=False) for _ in range(2)]
    try:
        outs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            stop(p)
    assert sorted(p.returncode for p in procs) == [0, 2], outs
    loser = outs[[p.returncode for p in procs].index(2)]
    [line] = errors(loser)
    assert "run twin exists already" in line and "RUN_ID_REUSE=1" in line
    records = [json.loads(x) for x in (tmp_path / "results" / "twin" / "requests.jsonl").read_text().splitlines()]
    assert records and len({r["worker"] for r in records}) == 1


@fault("23.C5b", fault="a later run reusing a RUN_ID appended its records to the old run and replaced its manifest",
       says="one `error:` line naming RUN_ID_REUSE, exit 2, the old run untouched; RUN_ID_REUSE=1 adds to it on "
            "purpose",
       catches="manifest:RUN_ID exists")
def test_a_reused_run_id_is_refused_unless_the_operator_says_so(tmp_path, sim):
    config = overlay(tmp_path, sim)
    first = locust(config, env={"RUN_ID": "once", "DURATION_S": "1"})
    assert first.returncode == 0, first.out[-2000:]
    run = tmp_path / "results" / "once"
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    again = locust(config, env={"RUN_ID": "once", "DURATION_S": "1"})
    assert again.returncode == 2 and len(errors(again.out)) == 1 and "RUN_ID_REUSE=1" in errors(again.out)[0]
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    reuse = locust(config, env={"RUN_ID": "once", "DURATION_S": "1", "RUN_ID_REUSE": "1"})
    assert reuse.returncode == 0, reuse.out[-2000:]
    assert (run / "requests.jsonl").read_bytes().startswith(before["requests.jsonl"])
    assert len((run / "requests.jsonl").read_bytes()) > len(before["requests.jsonl"])


# ---- E3: modes -------------------------------------------------------------------------------------------
@fault("23.E3", fault="under `umask 000` the manifest was 0666 and the run directory 0777 (and 0600 / 0700 under "
                      "umask 077, unreadable to the people they are for)",
       says="results have the harness's modes whatever the umask: directories 0755, files 0644",
       catches="manifest:modes independent of umask")
def test_results_have_their_modes_whatever_the_umask(tmp_path, sim):
    proc = locust(overlay(tmp_path, sim), env={"RUN_ID": "modes", "DURATION_S": "1"}, preexec=lambda: os.umask(0))
    assert proc.returncode == 0, proc.out[-2000:]
    results = tmp_path / "results"
    run = results / "modes"
    assert {p: mode(p) for p in (results, run)} == {results: 0o755, run: 0o755}
    assert {p.name: mode(p) for p in run.iterdir()} == {"manifest.json": 0o644, "requests.jsonl": 0o644,
                                                        "writer.lock": 0o644}
    exp = experiment(results)
    for umask in (0o000, 0o077):
        packed = rig(results_only(tmp_path, results), "pack", exp.name, "--name", f"u{umask:03o}", umask=umask)
        assert packed.returncode == 0, packed.stdout + packed.stderr
        out = results / "publish" / f"u{umask:03o}"
        found = {p.relative_to(results): mode(p) for p in [out.parent, out, *out.rglob("*")]}
        assert found == {p: 0o755 if (results / p).is_dir() else 0o644 for p in found}, found


# ---- D2: names with a trailing newline, a run that breaks the report -----------------------------------------
@fault("23.D2a", fault="`RUN_ID=$'nl1\\n'`, an adapter id `lora-002\\n` and a rig name with a trailing newline "
                       "passed the name checks (re.match with `$` matches before a final newline)",
       says="one `error:` line and exit 2 (the run, the config) / HTTP 400 `invalid adapter_id` (the proxy); "
            "nothing is created",
       catches="cli:refuses names with a trailing newline")
def test_names_with_a_trailing_newline_are_refused(tmp_path, sim):
    proc = locust(overlay(tmp_path, sim), env={"RUN_ID": "nl1\n"})
    assert proc.returncode == 2 and len(errors(proc.out)) == 1 and "invalid environment RUN_ID" in proc.out
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").iterdir())
    bad_rig = tmp_path / "rig.yaml"
    bad_rig.write_text(f'results_dir: {tmp_path / "results"}\nrig: "spark-01\\n"\n')
    validate = run_module("configs", "--config", str(bad_rig), "validate")
    assert validate.returncode == 2 and len(errors(validate.stdout + validate.stderr)) == 1 and "rig" in \
        validate.stderr, validate.stdout + validate.stderr
    port = free_port()
    proxy = subprocess.Popen([sys.executable, "-m", "locustfiles.adapter_proxy", "--backend", f"{sim.base}/v1",
                              "--port", str(port), "--tier2-path", str(tmp_path / "t2")], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert "serving adapter proxy" in proxy.stdout.readline()
        r = requests.post(f"http://127.0.0.1:{port}/v1/completions", timeout=10,
                          json={"model": "x", "prompt": "hi", "max_tokens": 2, "adapter_id": "lora-002\n"})
        assert r.status_code == 400 and "invalid adapter_id" in r.json()["error"]["message"]
        assert not list((tmp_path / "t2" / "lora").iterdir())
    finally:
        proxy.terminate()
        proxy.wait()


@contextlib.contextmanager
def prometheus(tmp: Path):
    """A real, empty Prometheus on a free loopback port."""
    if not shutil.which("prometheus"):
        pytest.skip("prometheus comes with `make tools`")
    port = free_port()
    (tmp / "prometheus.yml").write_text("global: {scrape_interval: 15s}\n")
    prom = subprocess.Popen(["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{base}/-/ready", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        yield base
    finally:
        prom.terminate()
        prom.wait()


@fault("23.D2b", fault="`analysis report --all` aborted on one bad run and wrote nothing: a run directory "
                       "`nl1\\n`, a manifest run_id with a double quote (it broke the PromQL)",
       says="one `skipped <run>: …` line per bad run; every other run is reported",
       catches="cli:report skips a bad run")
def test_report_all_skips_a_run_with_a_bad_name_and_reports_the_others(tmp_path, sim):
    config = overlay(tmp_path, sim)
    proc = locust(config, env={"RUN_ID": "good1", "DURATION_S": "1"})
    assert proc.returncode == 0, proc.out[-2000:]
    results = tmp_path / "results"
    for name, run_id in (("nl1\n", "nl1\n"), ("quote1", 'q"1')):
        shutil.copytree(results / "good1", results / name)
        manifest = json.loads((results / name / "manifest.json").read_text())
        (results / name / "manifest.json").write_text(json.dumps({**manifest, "run_id": run_id}))
    with prometheus(tmp_path) as url:
        report = run_module("analysis", "--config", str(config), "--prometheus", url, "report", "--all",
                            "--out", str(tmp_path / "report"), timeout=180)
    assert report.returncode == 0, report.stderr[-3000:]
    skipped = [line for line in report.stderr.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 2 and skipped[0].startswith("skipped 'nl1\\n': ") and \
        skipped[1].startswith("skipped quote1: "), report.stderr[-3000:]
    assert set(json.loads((tmp_path / "report" / "verdict.json").read_text())) == {"good1"}
