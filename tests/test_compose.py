"""docker-compose.yml, validated by the Debian docker-compose (no Docker engine needed for `config`)."""
import os
import re
import shutil
import subprocess

import pytest
import yaml

from configs import load
from conftest import ROOT

pytestmark = pytest.mark.skipif(not shutil.which("docker-compose"), reason="docker-compose comes with `make tools-test`")


def compose_config(**env):
    base = {k: v for k, v in os.environ.items()
            if k not in ("GF_SECURITY_ADMIN_PASSWORD", "DYN_KVBM_TIER2_PATH", "HARNESS_CONFIG")}
    base["SPARKRIG_RIG"] = "spark-01"
    return subprocess.run(["docker-compose", "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml"),
                           "config"], capture_output=True, text=True, env={**base, **env}, cwd="/")


@pytest.fixture(scope="module")
def resolved():
    proc = compose_config(GF_SECURITY_ADMIN_PASSWORD="s3cret", DYN_KVBM_TIER2_PATH="/nvme/kvbm/l70b")
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def test_no_password_no_grafana():
    proc = compose_config(DYN_KVBM_TIER2_PATH="/nvme/kvbm/l70b")
    assert proc.returncode != 0 and "GF_SECURITY_ADMIN_PASSWORD" in proc.stderr
    example = (ROOT / ".env.example").read_text()
    assert re.search(r"^GF_SECURITY_ADMIN_PASSWORD=$", example, re.M)
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_images_are_pinned_and_everything_binds_loopback(resolved):
    cfg = load()
    services = resolved["services"]
    assert {"prometheus", "grafana", "exporter-nvme", "exporter-uma", "exporter-gpu", "exporter-kvbm"} <= set(services)
    for name, svc in services.items():
        assert re.search(r":v?\d+\.\d+", svc["image"]) or svc["image"].endswith(":local"), name
        assert svc.get("network_mode") in ("host", "none") and "ports" not in svc, name
        assert "--listen" not in " ".join(svc.get("command") or []), name    # exporters keep configs' 127.0.0.1
    assert cfg.exporters.listen == "127.0.0.1"
    prom = services["prometheus"]["command"]
    assert f"--web.listen-address=127.0.0.1:{cfg.prometheus.port}" in prom
    assert f"--storage.tsdb.retention.time={cfg.prometheus.retention}" in prom
    assert services["grafana"]["environment"]["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"
    assert services["exporter-gpu"]["runtime"] == "nvidia"
    assert "prometheus-data" in resolved["volumes"]
    # the rig's name reaches external_labels through the environment; the central store is opt-in
    assert "--enable-feature=expand-external-labels" in prom
    assert services["prometheus"]["environment"]["SPARKRIG_RIG"] == "spark-01"
    if "victoriametrics" in services:             # docker-compose lists profiled services in `config`
        assert services["victoriametrics"]["profiles"] == ["store"]
        assert "-httpListenAddr=127.0.0.1:8428" in services["victoriametrics"]["command"]


def test_mounts_are_the_repository_config(resolved):
    mounts = {v.split(":")[1]: v.split(":")[0] for v in resolved["services"]["prometheus"]["volumes"]
              if isinstance(v, str)} if isinstance(resolved["services"]["prometheus"]["volumes"][0], str) else {
        v["target"]: v["source"] for v in resolved["services"]["prometheus"]["volumes"]}
    assert mounts["/etc/prometheus/prometheus.yml"] == str(ROOT / "prometheus" / "prometheus.yml")
    assert mounts["/etc/prometheus/rules"] == str(ROOT / "prometheus" / "rules")
    gmounts = resolved["services"]["grafana"]["volumes"]
    text = yaml.safe_dump(gmounts)
    assert str(ROOT / "grafana" / "provisioning") in text and str(ROOT / "grafana" / "dashboards") in text
    for svc in ("exporter-nvme", "exporter-uma"):
        vols = yaml.safe_dump(resolved["services"][svc]["volumes"])
        assert "/host/proc" in vols and "/host/sys" in vols and "ro" in vols


def test_ports_come_from_env_and_must_match_configs(tmp_path):
    proc = compose_config(GF_SECURITY_ADMIN_PASSWORD="s3cret", DYN_KVBM_TIER2_PATH="/nvme/kvbm/l70b",
                          PROMETHEUS_PORT="9191", GRAFANA_PORT="3300")
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    assert "--web.listen-address=127.0.0.1:9191" in services["prometheus"]["command"]
    assert services["grafana"]["environment"]["PROMETHEUS_URL"] == "http://127.0.0.1:9191"
    assert str(services["grafana"]["environment"]["GF_SERVER_HTTP_PORT"]) == "3300"
    assert services["targets"]["environment"]["PROMETHEUS_PORT"] == "9191"
    # the targets job (what compose runs first) refuses a .env that disagrees with configs
    from conftest import run_module
    env = {**os.environ, "PROMETHEUS_PORT": "9191"}
    refused = run_module("rig", "render", "--targets-dir", str(tmp_path / "t"), env=env)
    assert refused.returncode == 2 and "PROMETHEUS_PORT=9191 in .env but 9090 in configs" in refused.stderr
    env["PROMETHEUS_PORT"] = str(load().prometheus.port)
    assert run_module("rig", "render", "--targets-dir", str(tmp_path / "t"), env=env).returncode == 0
    # the rig's name too, where configs set one (unset there: .env's name stands)
    overlay = tmp_path / "rig.yaml"
    overlay.write_text("rig: spark-07\n")
    env.update(SPARKRIG_RIG="spark-08", HARNESS_CONFIG=str(overlay))
    refused = run_module("rig", "render", "--targets-dir", str(tmp_path / "t"), env=env)
    assert refused.returncode == 2 and "SPARKRIG_RIG=spark-08 in .env but spark-07 in configs" in refused.stderr
    env["SPARKRIG_RIG"] = "spark-07"
    assert run_module("rig", "render", "--targets-dir", str(tmp_path / "t"), env=env).returncode == 0


def test_the_overlay_reaches_every_sparkrig_container(tmp_path, resolved):
    """HARNESS_CONFIG on the host is each sparkrig container's overlay (#29.5): the exporters scrape the stacks
    and the targets job renders the ports that the operator's overlay names, not the shipped defaults."""
    overlay = tmp_path / "my-rig.yaml"
    overlay.write_text("stacks: {stackB: {kvbm_metrics_url: 'http://127.0.0.1:6881/metrics'}}\n")
    proc = compose_config(GF_SECURITY_ADMIN_PASSWORD="s3cret", DYN_KVBM_TIER2_PATH="/nvme/kvbm/l70b",
                          HARNESS_CONFIG=str(overlay))
    assert proc.returncode == 0, proc.stderr
    with_overlay = yaml.safe_load(proc.stdout)["services"]
    ours = [n for n, s in with_overlay.items() if s.get("image") == "sparkrig:local"]
    assert {"targets", "exporter-nvme", "exporter-uma", "exporter-kvbm", "exporter-gpu"} <= set(ours)

    def mount(svc):
        vols = [v if isinstance(v, str) else f"{v['source']}:{v['target']}{':ro' if v.get('read_only') else ''}"
                for v in svc["volumes"]]
        return [v for v in vols if ":/etc/sparkrig/overlay.yaml" in v]
    for name in ours:
        svc = with_overlay[name]
        assert svc["environment"]["HARNESS_CONFIG"] == "/etc/sparkrig/overlay.yaml", name
        assert mount(svc) == [f"{overlay}:/etc/sparkrig/overlay.yaml:ro"], name
        assert mount(resolved["services"][name]) == ["/dev/null:/etc/sparkrig/overlay.yaml:ro"], name
    assert with_overlay["exporter-gpu"]["environment"]["NVIDIA_VISIBLE_DEVICES"] == "all"
