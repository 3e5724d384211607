"""The Dockerfile compose builds, without Docker (#29.5): the packages it copies are enough for every command
the compose services run in it, and every dependency it installs has a wheel for a DGX Spark (aarch64)."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
# Only the image's own files: the editable install of this checkout is taken out of the import system, so a
# module the Dockerfile does not COPY cannot be found by accident.
ISOLATED = """import runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")]
sys.path[:] = [sys.argv.pop(1)] + [p for p in sys.path[1:] if "__editable__" not in p]
module = sys.argv.pop(1)
sys.argv[0] = module
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def image_tree(dest):
    """What the Dockerfile's COPY lines put in its WORKDIR."""
    dest.mkdir()
    for src, _dst in re.findall(r"^COPY\s+(.+?)\s+(\S+)\s*$", DOCKERFILE, re.M):
        for name in src.split():
            path = ROOT / name
            (shutil.copytree if path.is_dir() else shutil.copy)(path, dest / name)
    return dest


def image_services():
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return {name: svc for name, svc in doc["services"].items() if svc.get("image") == "sparkrig:local"}


def in_image(tree, command, env=None, timeout=60):
    assert command[:2] == ["python", "-m"], command
    args = [a.replace("${DYN_KVBM_TIER2_PATH}", str(tree)) for a in command[2:]]
    return subprocess.run([sys.executable, "-c", ISOLATED, str(tree), *args], cwd=tree, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_the_image_holds_what_its_services_run(tmp_path):
    tree = image_tree(tmp_path / "image")
    services = image_services()
    assert {"targets", "exporter-nvme", "exporter-uma", "exporter-kvbm", "exporter-gpu"} <= set(services)
    for name, svc in services.items():
        command = list(svc["command"])
        if "--targets-dir" in command:              # the targets job runs for real: it only writes its files
            command[command.index("--targets-dir") + 1] = str(tmp_path / "targets")
            proc = in_image(tree, command, env={"HARNESS_CONFIG": "/dev/null", "PROMETHEUS_PORT": "",
                                                "PROMETHEUS_RETENTION": "", "SPARKRIG_RIG": ""})
            assert proc.returncode == 0, (name, proc.stderr[-2000:])
            assert list((tmp_path / "targets").glob("*.json")), name
        else:                                       # a server: its modules import and its arguments parse
            proc = in_image(tree, command + ["--help"])
            assert proc.returncode == 0 and "usage:" in proc.stdout, (name, proc.stderr[-2000:])
    # the isolation is real: a package the Dockerfile does not copy is not importable in the tree
    missing = in_image(tree, ["python", "-m", "bench.fleet_sizing", "--help"])
    assert missing.returncode != 0 and "No module named 'bench'" in missing.stderr


NETWORK = re.compile(r"NewConnectionError|Temporary failure in name resolution|Network is unreachable|"
                     r"Could not fetch URL|ConnectTimeout|ReadTimeout")


def test_every_dependency_has_an_aarch64_wheel(tmp_path):
    """pip resolves what the Dockerfile installs (`pip install -e .`) for linux/aarch64 and the image's Python,
    binary wheels only, reading the wheels' metadata without installing them: a dependency with no aarch64
    wheel (one that would need a compiler on a Spark, or cannot be had at all) fails here."""
    python = re.search(r"^FROM python:(\d+)\.(\d+)", DOCKERFILE, re.M)
    assert python, "the Dockerfile's base image is not python:<major>.<minor>"
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--disable-pip-version-check", "--report", str(report), "--only-binary=:all:",
         "--platform", "manylinux2014_aarch64", "--platform", "manylinux_2_28_aarch64", "--implementation", "cp",
         "--python-version", "".join(python.groups()), "--target", str(tmp_path / "t"), str(ROOT)],
        capture_output=True, text=True, timeout=240)
    if proc.returncode != 0 and NETWORK.search(proc.stderr) and "No matching distribution" not in proc.stderr:
        pytest.skip("no package index reachable: " + proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    installs = json.loads(report.read_text())["install"]
    wheels = {i["metadata"]["name"]: i["download_info"]["url"].rsplit("/", 1)[-1] for i in installs
              if i["download_info"]["url"].endswith(".whl")}
    names = {n.lower().replace("_", "-") for n in wheels}
    assert {"prometheus-client", "pandas", "numpy", "gevent", "tokenizers"} <= names
    for name, wheel in wheels.items():
        platform = wheel[:-4].split("-")[-1]
        assert platform == "any" or "aarch64" in platform, (name, wheel)
