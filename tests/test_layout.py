"""The house's layout: no import circle between our modules (the exporters' cli <-> collectors circle
was one), so any module can be read, tested and changed from the bottom up."""
import ast

from conftest import ROOT

PACKAGES = ("analysis", "bench", "configs", "exporters", "grafana", "locustfiles", "prometheus", "rig", "stacksim")


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
