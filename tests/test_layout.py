"""The code's layout keeps the three trust domains apart (docs/architecture.md, "Where code runs").

Read from the source with ``ast``, counting function-level (lazy) imports and
``importlib.import_module("station....")`` too:

- no import circle among ``station.*`` modules;
- ``station.console`` imports only shared modules and its own: never the recorder, the capture or
  the engine (an assessor's laptop runs none of them);
- ``station.capture`` (in the candidate's session) never imports the recorder or the console, and
  ``station.recorder`` never imports the capture or the console;
- shared top-level modules import only shared modules;
- input backends import ``_base``, never the front that chooses them.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import REPO

ROOT = REPO / "station"
ENTRY_POINTS = {"station.cli", "station.__main__", "station.agent", "station.demo"}   # put domains together


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "station":
                    add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "station":
                continue
            for a in node.names:
                full = f"{module}.{a.name}"
                add(full if full in modules else module)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("station")):
            add(node.args[0].value)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(paths)
    return {name: _imports(p, name, modules) for name, p in paths.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


PACKAGES = ("capture", "recorder", "console", "engine", "scenario", "commands", "ops")


def _domain(name: str) -> str:
    """entry, shared, or the package: capture, recorder, console, engine, scenario, commands, ops."""
    if name in ENTRY_POINTS:
        return "entry"
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in PACKAGES else "shared"


ALLOWED = {
    "shared": {"shared"},
    "capture": {"shared", "capture", "scenario"},    # the scenario source plays the demo's exam
    "recorder": {"shared", "recorder", "engine"},
    "console": {"shared", "console"},
    "engine": {"shared", "engine"},
    "scenario": {"shared", "scenario", "engine"},    # ground truth uses the engine's definitions
    "ops": {"shared", "ops", "capture"},             # the doctor asks the capture's platform probe
}


def test_no_import_circle_among_station_modules():
    assert _cycles(import_graph()) == []


def test_each_domain_imports_only_shared_modules_and_its_own():
    graph = import_graph()
    bad = [(m, d) for m, deps in graph.items() if _domain(m) in ALLOWED
           for d in deps if _domain(d) not in ALLOWED[_domain(m)]]
    assert bad == []


def test_console_never_imports_recorder_capture_or_engine():
    graph = import_graph()
    console = [m for m in graph if m.startswith("station.console")]
    assert len(console) >= 5
    forbidden = ("station.recorder", "station.capture", "station.engine")
    assert [(m, d) for m in console for d in graph[m] if d.startswith(forbidden)] == []


def test_input_backends_import_base_not_the_front():
    graph = import_graph()
    for backend in ("station.capture.input._xi2", "station.capture.input._pynput"):
        assert "station.capture.input._base" in graph[backend]
        assert "station.capture.input" not in graph[backend]


def test_the_checks_see_lazy_imports_and_circles():
    """The graph counts an import inside a function, and the circle finder finds a circle."""
    graph = import_graph()
    # station.capture.input chooses its backend inside start(): a function-level import
    assert "station.capture.input._xi2" in graph["station.capture.input"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
