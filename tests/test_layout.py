"""The house's layout: no import circle between our modules (the exporters' cli <-> collectors circle
was one), so any module can be read, tested and changed from the bottom up."""
import ast
import subprocess

import pytest

from conftest import ROOT

PACKAGES = ("analysis", "bench", "configs", "exporters", "grafana", "locustfiles", "prometheus", "rig", "stacksim")
# Floors, ground up: a module imports only from its own package or a lower floor.
FLOORS = {"configs": 0, "exporters": 1, "stacksim": 1, "analysis": 1, "grafana": 1, "prometheus": 1,
          "locustfiles": 2, "rig": 3, "bench": 4}


def module_name(path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> our modules it imports (at any depth of its code, lazy imports included)."""
    paths = {module_name(p): p for top in PACKAGES for p in (ROOT / top).rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]) if node.level else ""
                target = ".".join(x for x in (base, node.module or "") if x)
                for alias in node.names:        # a submodule if it is one, else a name from the module
                    deps |= next(({c} for c in (f"{target}.{alias.name}", target) if c in paths), set())
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in paths}
        graph[name] = deps - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state, found = {}, []

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                found.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = "done"
    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def test_no_import_circle():
    graph = import_graph()
    assert len(graph) > 60 and graph["exporters.cli"] and graph["configs.model"]
    assert cycles(graph) == []


def test_the_circle_check_sees_circles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Imports that point up a floor or sideways into another package of the same floor."""
    return sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps
                  if (a := m.split(".")[0]) != (b := d.split(".")[0]) and FLOORS[b] >= FLOORS[a])


def test_every_import_points_down():
    """configs, then exporters/stacksim/analysis, then locustfiles, then rig: the load generator found
    Prometheus through rig.promconfig, and rig reached back into locustfiles for its readiness probe;
    discovery and the probe live on the ground floor now (configs.discovery, configs.probe)."""
    graph = import_graph()
    assert set(FLOORS) == set(PACKAGES)
    assert upward(graph) == []


def test_the_direction_check_sees_an_upward_import():
    assert upward({"locustfiles.lib.state": {"rig.local", "configs.model"}, "rig.local": {"configs.model"},
                   "analysis.run": {"exporters.registry"}}) == \
        ["analysis.run -> exporters.registry", "locustfiles.lib.state -> rig.local"]


def test_the_run_lives_on_locusts_environment():
    """No module global holds the run (#25.2): each Locust environment carries its own, as Locust's examples
    attach their state, and its records, metrics and manifest (the sink) and fio, proxy and Grafana (the side
    jobs) are parts of their own."""
    from types import SimpleNamespace
    import pytest
    from locustfiles.lib import state
    assert not hasattr(state, "STATE") and not hasattr(state, "current")
    with pytest.raises(AssertionError):
        state.of(SimpleNamespace())
    run = SimpleNamespace(sparkrig=object())
    assert state.of(run) is run.sparkrig
    assert {"sink", "side"} <= set(vars(state.RunState("H0", {})))


def test_each_rig_command_is_registered_by_its_own_module():
    """`python -m rig` dispatches through argparse's set_defaults(func=...), each module adding its own
    subcommands (#25.5): no if-ladder in __main__ to keep in step with them."""
    import argparse
    import rig.__main__ as cli
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd")
    for module in cli.COMMANDS:
        module.register(sub)
    names = set(sub.choices)
    assert names == {"up", "down", "status", "render", "demo", "sweep", "pairs", "rehydrate", "pack", "hygiene",
                     "ratesweep", "capacity", "dynamo", "doctor"}
    assert all(callable(ap.parse_args([n] + {"pack": ["x"], "ratesweep": ["H0"], "capacity": ["H0"],
                                             "dynamo": ["status"]}.get(n, []))
                        .func) for n in names)
    assert "if args.cmd" not in (ROOT / "rig" / "__main__.py").read_text()


@pytest.mark.parametrize("target", ["up", "demo"])
def test_make_up_and_demo_install_only_what_they_use(target):
    """#29.3: docker-compose, nats-server and victoria-metrics are the compose check's, the real Dynamo's and
    the store tests'; `make up` on a DGX host never installs them (make -n prints what it would run)."""
    dry = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "smartmontools" in dry and not {"docker-compose", "nats-server", "victoria-metrics"} & set(dry.split())
    test = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert {"docker-compose:docker-compose", "nats-server:nats-server"} <= set(test.split())
