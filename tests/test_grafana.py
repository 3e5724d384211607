"""Dashboards: the committed JSON is what grafana/build.py makes, provisioning is consistent, and every
panel query runs without error — and returns series unless it needs hardware this machine lacks —
against a real Prometheus that scraped the simulator, the exporters and two short Locust runs."""
import importlib.util
import json
import re
import subprocess
import sys

import requests
import yaml

from conftest import ROOT

GRAFANA = ROOT / "grafana"
spec = importlib.util.spec_from_file_location("grafana_build", GRAFANA / "build.py")
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)


def dashboards() -> dict:
    return {name: json.loads(text) for name, text in build.render_all().items()}


def test_committed_dashboards_are_up_to_date():
    proc = subprocess.run([sys.executable, str(GRAFANA / "build.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_provisioning_matches_the_dashboards():
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "sparkrig.yml").read_text())["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"
    titles = set()
    for name, board in dashboards().items():
        assert name == f"{board['uid']}.json"
        titles |= {board["title"]}
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == ds["uid"] and panel["targets"]
    assert titles == {"Run overview", "KV tiers", "NVMe", "UMA & host", "GPU"}


def substitute(expr: str, values: dict) -> str:
    return re.sub(r"\$(\w+)", lambda m: values[m.group(1)], expr)


def label_values_query(definition: str) -> str:
    """Grafana's label_values(metric, label) as the PromQL that has to return something."""
    m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", definition)
    return f"count by ({m.group(2)}) ({m.group(1)})"


def query(base, expr, at):
    r = requests.get(f"{base}/api/v1/query", params={"query": expr, "time": at}, timeout=10).json()
    assert r["status"] == "success", f"{expr}: {r.get('error')}"
    return r["data"]["result"]


def test_every_panel_query_runs_against_real_prometheus(observed):
    scraped = observed
    assert len(scraped["run_ids"]) == 2
    values = {"run_id": "|".join(scraped["run_ids"]), "stack": ".*", "instance": ".*", "device": ".*"}
    empty, checked = [], 0
    for board in dashboards().values():
        for v in board["templating"]["list"]:
            assert query(scraped["base"], substitute(label_values_query(v["definition"]), values), scraped["at"]), \
                f"{board['title']}: variable {v['name']} has no values"
        for panel in board["panels"]:
            needs = build.NEEDS.get((board["uid"], panel["title"]))
            for target in panel["targets"]:
                result = query(scraped["base"], substitute(target["expr"], values), scraped["at"])
                checked += 1
                if not result and not needs:
                    empty.append(f"{board['title']} / {panel['title']}: {target['expr']}")
        for ann in board["annotations"]["list"][1:]:
            r = requests.get(f"{scraped['base']}/api/v1/query_range", timeout=10, params={
                "query": substitute(ann["expr"], values), "start": scraped["start"], "end": scraped["at"] + 2,
                "step": 1}).json()
            assert r["status"] == "success" and r["data"]["result"], f"{board['title']}: annotation {ann['name']}"
    assert checked > 40
    assert not empty, "panels without series:\n" + "\n".join(empty)
