"""The house's floors: every import of every module, read from the source, points down or sideways
within its own package, and no chain of imports comes back to where it started.

- ``foundation`` imports nothing of the project;
- ``schemas`` and ``telemetry`` stand on it;
- ``receiver`` (HTTP receivers, normalizers) and ``sinks`` (spool, dispatcher, sinks) stand on
  those, side by side: neither imports the other;
- ``service`` (configuration, the running relay, the app, the CLI) wires them together.

Imports inside functions count too: a lazy import hides a cycle, it does not remove it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What each package may import, besides itself.
ALLOWED: dict[str, frozenset[str]] = {
    "foundation": frozenset(),
    "schemas": frozenset({"foundation"}),
    "telemetry": frozenset({"foundation", "schemas"}),
    "receiver": frozenset({"foundation", "schemas", "telemetry"}),
    "sinks": frozenset({"foundation", "schemas", "telemetry"}),
    "service": frozenset({"foundation", "schemas", "telemetry", "receiver", "sinks"}),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in ALLOWED
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def imported(path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The project modules ``path`` imports, anywhere in it (``from a import b`` names ``a.b``
    when that is a module, else ``a``)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in modules
                else node.module
                for alias in node.names
            ]
        else:
            continue
        for name in names:
            if name.split(".")[0] in ALLOWED:
                yield name


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: set(imported(path, modules)) for name, path in modules.items()}


def test_every_package_is_known() -> None:
    """A new top-level package must be given its floor here before it can be imported."""
    packages = {
        path.parent.name
        for path in ROOT.glob("*/__init__.py")
        if path.parent.name not in ("tests", "bench")
    }
    assert packages == set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_import_points_up_or_across(package: str) -> None:
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        if module.split(".")[0] == package
        for target in targets
        if target.split(".")[0] not in ALLOWED[package] | {package}
    )
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package])}: {wrong}"


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk meets, each as the chain of modules that closes it."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if target == module:
                continue
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_no_import_cycle() -> None:
    graph = import_graph()
    # Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first: edges to the parents too.
    for targets in graph.values():
        for target in list(targets):
            parts = target.split(".")
            targets.update(".".join(parts[:i]) for i in range(1, len(parts)))
    cycles = find_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checks_see_lazy_imports_and_cycles(tmp_path: Path) -> None:
    """Imports inside functions are read (that is how cycles used to hide), and a cycle is found."""
    source = tmp_path / "lazy.py"
    source.write_text("def build():\n    from service.config import load_config\n")
    assert list(imported(source, {})) == ["service.config"]
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
