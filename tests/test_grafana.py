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
            assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"]
        [source] = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
        assert source["name"] == "datasource" and source["query"] == ds["type"] == "prometheus"
    assert titles == {"Is the NVMe tier shaping p99?", "Run overview", "KV tiers", "NVMe", "UMA & host", "GPU"}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["grafana"]["environment"]
    home = compose["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == "/var/lib/grafana/dashboards/sparkrig-home.json" and (GRAFANA / "dashboards" / "sparkrig-home.json").exists()


def test_every_variable_is_used_inputs_resolve_and_boards_link_and_annotate():
    """#26.3: a variable a board declares filters something on it (the KV board declared run_id, stack and
    instance and used none); every ${DS_…} names one of the board's __inputs and every input is used, so it
    imports into an existing Grafana; boards link to each other keeping time and variables; each shows the
    load generator's annotations (by their tag) and the step series; the lines where a number turns bad come
    from one place (the knee ratio, the r_await objective)."""
    from configs import load
    from configs.vocabulary import rules as R
    from configs.vocabulary import series as S
    for name, board in dashboards().items():
        text = json.dumps(board)
        queries = [t["expr"] for p in board["panels"] for t in p["targets"]] + \
            [a["expr"] for a in board["annotations"]["list"] if "expr" in a] + \
            [v.get("definition", "") for v in board["templating"]["list"]]
        for v in board["templating"]["list"]:
            uses = [q for q in queries if f"${v['name']}" in q and q != v.get("definition")]
            if v["type"] == "datasource":
                uses = [p for p in board["panels"] if p["datasource"]["uid"] == f"${{{v['name']}}}"]
            assert uses, f"{name}: variable {v['name']} is declared and used nowhere"
        panels_exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
        assert all('rig=~"$rig"' in e and 'site=~"$site"' in e for e in panels_exprs if not e.startswith("vector(")), name
        inputs = {i["name"] for i in board["__inputs"]}
        referenced = set(re.findall(r"\$\{(DS_[A-Z_]+)\}", text))
        assert referenced == inputs == {"DS_PROMETHEUS"}, name
        [link] = board["links"]
        assert link["type"] == "dashboards" and link["keepTime"] and link["includeVars"] and link["tags"] == board["tags"]
        names = [a["name"] for a in board["annotations"]["list"]]
        assert "Steps" in names
        [posted] = [a for a in board["annotations"]["list"] if a.get("target", {}).get("type") == "tags"]
        assert posted["target"]["tags"] == [S.ANNOTATION_TAG]
    boards = dashboards()
    knee = next(p for p in boards["sparkrig-run.json"]["panels"] if p["title"].startswith("TTFT p99 / p50"))
    assert knee["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"] == R.KNEE_RATIO
    r_await = next(p for p in boards["sparkrig-home.json"]["panels"] if p["title"] == "kv_tier2 r_await")
    assert r_await["type"] == "stat" and \
        r_await["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"] == load().objectives.nvme_r_await_ms / 1000
    stats = [p["title"] for p in boards["sparkrig-home.json"]["panels"] if p["type"] == "stat"]
    assert stats == ["TTFT p99", "TTFT p99 / p50", "kv_tier2 r_await", "Onboarded from disk", "kv_tier2 read MB/s",
                     "CPU iowait"]


def test_scoped_puts_the_fleet_matchers_in_every_selector_and_nowhere_else():
    f = build.scoped
    assert f('max by (stack) (a:b:c{run_id=~"$run_id"})') == 'max by (stack) (a:b:c{rig=~"$rig", site=~"$site", ' \
                                                             'run_id=~"$run_id"})'
    assert f("histogram_quantile(0.99, sum by (le) (rate(x_bucket[30s])))") == \
        'histogram_quantile(0.99, sum by (le) (rate(x_bucket{rig=~"$rig", site=~"$site"}[30s])))'
    assert f("a / b > 0 and on() c == 1") == \
        'a{rig=~"$rig", site=~"$site"} / b{rig=~"$rig", site=~"$site"} > 0 and on() c{rig=~"$rig", site=~"$site"} == 1'
    assert f('rate({__name__=~"t[_:]x"}[1m])') == 'rate({rig=~"$rig", site=~"$site", __name__=~"t[_:]x"}[1m])'
    assert f("vector(0.005)") == "vector(0.005)"
    assert f("clamp_min(a, 1e-9) * 2.5e3") == 'clamp_min(a{rig=~"$rig", site=~"$site"}, 1e-9) * 2.5e3'    # numbers


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
    values = {"run_id": "|".join(scraped["run_ids"]), "stack": ".*", "instance": ".*", "device": ".*", "rig": ".*",
              "site": ".*"}
    empty, checked = [], 0
    for board in dashboards().values():
        for v in board["templating"]["list"]:
            if v["type"] == "datasource" or v["name"] in build.FLEET_LABELS:   # fleet labels: none on a rig's own
                continue
            assert query(scraped["base"], substitute(label_values_query(v["definition"]), values), scraped["at"]), \
                f"{board['title']}: variable {v['name']} has no values"
        for panel in board["panels"]:
            needs = build.NEEDS.get((board["uid"], panel["title"]))
            for target in panel["targets"]:
                result = query(scraped["base"], substitute(target["expr"], values), scraped["at"])
                checked += 1
                if not result and not needs:
                    empty.append(f"{board['title']} / {panel['title']}: {target['expr']}")
        for ann in [a for a in board["annotations"]["list"] if "expr" in a]:
            r = requests.get(f"{scraped['base']}/api/v1/query_range", timeout=10, params={
                "query": substitute(ann["expr"], values), "start": scraped["start"], "end": scraped["at"] + 2,
                "step": 1}).json()
            assert r["status"] == "success" and r["data"]["result"], f"{board['title']}: annotation {ann['name']}"
    assert checked > 40
    assert not empty, "panels without series:\n" + "\n".join(empty)
