"""The project's packages import downward only, in layers, and without cycles.

Layers, lowest first (``LAYERS``): ``core`` (config, storage, errors, hashing, redaction: no
project imports), ``transforms`` (the stage logic), ``schemas`` (tables, rows, the store and
the release reader), ``evaluation`` (recommenders and encoder tuning), ``pipelines`` (runs,
engines, commits), ``jobs`` (the CLI), ``video_enrich`` (the public API and the installed
entry point), ``dags`` (Airflow). A module imports its own layer or lower ones.

The rule: every ``import`` counts, at module level and inside functions alike. A lazy import
only delays a cycle; the two modules still cannot be understood, tested or moved apart. Lazy
imports stay fine for what they are for, keeping an optional heavy dependency (apache_beam,
pyspark, torch, an engine module that imports one) off the import path; they just must not
close a loop. Not counted: the implicit import of a parent package when a submodule loads (a
package ``__init__`` may re-export its submodules; its submodules import siblings, not it).
The graph is read with ``ast`` from the source, so no module is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = (
    "core",
    "transforms",
    "schemas",
    "evaluation",
    "pipelines",
    "jobs",
    "video_enrich",
    "dags",
)
PACKAGES = LAYERS


def module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name → source file, for every module of ``packages`` under ``root``."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imported_names(module: str, path: Path) -> list[tuple[str, int]]:
    """Absolute dotted names this module imports (``from a import b`` gives ``a.b``), with
    their line numbers; relative imports are resolved."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                package = parts if path.name == "__init__.py" else parts[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            names += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return names


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """module → {project module it imports: first line of that import}."""
    modules = module_files(root, packages)

    def owner(name: str) -> str | None:  # the longest project module the name lies in
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges = graph.setdefault(module, {})
        for name, line in imported_names(module, path):
            target = owner(name)
            if target and target != module:
                edges.setdefault(target, line)
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, str] = {}  # "open" while on the path, "done" once fully explored
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph.get(module, {})):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    return (
        " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False))
        + f" -> {cycle[-1]}"
    )


def test_the_packages_import_each_other_without_a_cycle():
    graph = import_graph(REPO, PACKAGES)
    assert len(graph) > 50 and graph["pipelines.driver"], "the graph missed the project's modules"
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {describe(cycle, graph)}"


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    """Each import of a higher layer, as "importer (line n) -> imported"."""
    layer = {package: rank for rank, package in enumerate(LAYERS)}
    return [
        f"{module} (line {line}) -> {target}"
        for module, edges in sorted(graph.items())
        for target, line in sorted(edges.items())
        if layer[target.split(".")[0]] > layer[module.split(".")[0]]
    ]


def test_every_import_goes_down_the_layers():
    graph = import_graph(REPO, PACKAGES)
    assert {module.split(".")[0] for module in graph} == set(LAYERS)
    assert upward_imports(graph) == []


def test_an_upward_import_is_found_and_named(tmp_path):
    for package in ("core", "pipelines"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "core" / "config.py").write_text("def f():\n    from pipelines.driver import run\n")
    (tmp_path / "pipelines" / "driver.py").write_text("from core.config import f\n")
    graph = import_graph(tmp_path, ("core", "pipelines"))
    assert upward_imports(graph) == ["core.config (line 2) -> pipelines.driver"]


def test_a_cycle_through_a_relative_lazy_import_is_found_and_named(tmp_path):
    package = tmp_path / "jobs"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "cli.py").write_text("from jobs.helpers import shared\n")
    (package / "helpers.py").write_text(
        "def shared():\n    from .cli import main  # lazy and relative: still a cycle\n"
    )
    graph = import_graph(tmp_path, ("jobs",))
    cycle = find_cycle(graph)
    assert cycle == ["jobs.cli", "jobs.helpers", "jobs.cli"]
    assert describe(cycle, graph) == "jobs.cli (line 1) -> jobs.helpers (line 2) -> jobs.cli"
