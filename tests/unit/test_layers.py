"""The layout's rules, enforced over the import graph of the package (every import statement, including
those under TYPE_CHECKING and inside functions):

    rtvi.errors, rtvi.settings  <-  rtvi.core  <-  rtvi.http  <-  rtvi.services.NAME  <-  rtvi.cli

A layer imports only from layers to its left; route modules never import each other; services never
import each other. The core imports no web framework, and the package has no import cycle (a cycle
closed by an import inside a function is still one).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rtvi

PACKAGE_DIR = Path(rtvi.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _all_imports(path: Path, module: str | None = None) -> set[str]:
    """Every module an import statement of `path` names, third-party ones included."""
    module = module or _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
    return found


def _imports(path: Path, module: str | None = None) -> set[str]:
    return {name for name in _all_imports(path, module) if name == "rtvi" or name.startswith("rtvi.")}


FILES = {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}
GRAPH = {module: _imports(path) for module, path in FILES.items()}
# The web layer's frameworks (and their OpenTelemetry instrumentations): only rtvi.http and the services
# may import them.
WEB_FRAMEWORKS = (
    "fastapi",
    "starlette",
    "sse_starlette",
    "uvicorn",
    "opentelemetry.instrumentation.fastapi",
    "opentelemetry.instrumentation.asgi",
    "opentelemetry.instrumentation.starlette",
)


def _layer(module: str) -> int:
    for prefix, layer in (
        ("rtvi.errors", 0),
        ("rtvi.settings", 0),
        ("rtvi.core", 1),
        ("rtvi.http", 2),
        ("rtvi.services", 3),
        ("rtvi.cli", 4),
        ("rtvi.__main__", 4),
    ):
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return 0  # the package root (its version)


def _is_route_module(module: str) -> bool:
    parts = module.split(".")
    return (parts[:3] == ["rtvi", "http", "routes"] and len(parts) == 4) or (
        parts[:2] == ["rtvi", "services"] and parts[-1] == "routes"
    )


def test_the_graph_covers_the_package() -> None:
    assert "rtvi.core.pipeline.batcher" in GRAPH and "rtvi.services.embed.serving" in GRAPH
    assert "rtvi.core.pipeline.results" in GRAPH["rtvi.core.pipeline.file_job"]


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_import_reaches_up_a_layer(module: str) -> None:
    upward = sorted(name for name in GRAPH[module] if _layer(name) > _layer(module))
    assert not upward, f"{module} imports from a higher layer: {upward}"


def test_route_modules_do_not_import_each_other() -> None:
    routes = {m for m in GRAPH if _is_route_module(m)}
    assert {"rtvi.http.routes.files", "rtvi.services.embed.routes"} <= routes
    crossing = {m: sorted(GRAPH[m] & (routes - {m})) for m in routes if GRAPH[m] & (routes - {m})}
    assert not crossing


def test_services_do_not_import_each_other() -> None:
    def service(name: str) -> str | None:
        parts = name.split(".")
        return parts[2] if parts[:2] == ["rtvi", "services"] and len(parts) > 2 else None

    crossing = {
        m: sorted(n for n in GRAPH[m] if service(n) not in (None, service(m)))
        for m in GRAPH
        if service(m) is not None
    }
    assert not any(crossing.values()), crossing


def _web_imports(names: set[str]) -> list[str]:
    return sorted(n for n in names if any(n == w or n.startswith(w + ".") for w in WEB_FRAMEWORKS))


@pytest.mark.parametrize("module", sorted(m for m in FILES if _layer(m) <= _layer("rtvi.core")))
def test_the_core_imports_no_web_framework(module: str) -> None:
    web = _web_imports(_all_imports(FILES[module]))
    assert not web, f"{module} imports the web layer's frameworks: {web}"


# A service's web face: its routes, its spec (routers for the app) and its request / response models. The
# package's own __init__ finds the specs. Everything else in a service is logic the web layer calls.
WEB_FACING = ("routes", "spec", "protocol")


def _service_logic(module: str) -> bool:
    parts = module.split(".")
    return parts[:2] == ["rtvi", "services"] and len(parts) > 2 and parts[-1] not in WEB_FACING


@pytest.mark.parametrize("module", sorted(m for m in FILES if _service_logic(m)))
def test_service_logic_imports_no_web_layer(module: str) -> None:
    names = _all_imports(FILES[module])
    web = _web_imports(names) + sorted(n for n in names if n == "rtvi.http" or n.startswith("rtvi.http."))
    assert not web, f"{module} is a service's logic but imports the web layer: {web}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of `graph`: one per strongly connected component, as a path back to its start."""
    modules = set(graph)
    edges = {m: sorted(n for n in graph[m] if n in modules) for m in sorted(graph)}
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(m: str) -> None:  # Tarjan's algorithm
        order[m] = low[m] = len(order)
        stack.append(m)
        on_stack.add(m)
        for n in edges[m]:
            if n not in order:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on_stack:
                low[m] = min(low[m], order[n])
        if low[m] == order[m]:
            component: list[str] = []
            while not component or component[-1] != m:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1 or m in edges[m]:
                cycles.append(_path_back(m, set(component), edges))

    for m in edges:
        if m not in order:
            visit(m)
    return cycles


def _path_back(start: str, component: set[str], edges: dict[str, list[str]]) -> list[str]:
    """A shortest import path from `start` back to itself within its component."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for m in frontier:
            for n in edges[m]:
                if n == start:
                    return [*paths[m], start]
                if n in component and n not in paths:
                    paths[n] = [*paths[m], n]
                    nxt.append(n)
        frontier = nxt
    raise AssertionError(f"{start} is not on a cycle")


def test_no_import_cycles() -> None:
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_a_cycle_and_a_web_import(tmp_path: Path) -> None:
    graph = {"a": {"b"}, "b": {"c", "x"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}
    assert sorted(_cycles(graph)) == [["a", "b", "c", "a"], ["d", "d"]]
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from starlette.requests import Request\n    import fastapi\nimport numpy\n")
    assert _web_imports(_all_imports(bad, "rtvi.core.bad")) == [
        "fastapi",
        "starlette.requests",
        "starlette.requests.Request",
    ]


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    # The rules above must be able to fail: a core module importing the web layer is caught.
    bad = tmp_path / "bad.py"
    bad.write_text("from ...http.errors import error_response\nimport rtvi.services.embed\n")
    assert _imports(bad, "rtvi.core.assets.bad") >= {"rtvi.http.errors", "rtvi.services.embed"}
    assert _layer("rtvi.http.errors") > _layer("rtvi.core.assets.store")
