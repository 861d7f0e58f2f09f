"""The package keeps the layers pyproject.toml states, and no two of its modules import each other."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]

# lint-imports itself, run from the repository root, where it reads [tool.importlinter] in pyproject.toml.
LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def test_the_import_contracts_in_pyproject_are_kept() -> None:
    run = subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS, "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if run.returncode != 0:
        pytest.fail(f"lint-imports found imports that break the layers:\n{run.stdout}{run.stderr}", pytrace=False)


def test_no_two_modules_of_the_package_import_each_other() -> None:
    # The same graph as the contracts: an import under TYPE_CHECKING is only a type and runs nothing.
    graph = grimp.build_graph("gradcheck_kit", exclude_type_checking_imports=True, cache_dir=None)
    cycles = [" -> ".join(cycle) for cycle in import_cycles(graph)]
    if cycles:
        pytest.fail("modules that import each other, directly or through others:\n" + "\n".join(cycles), pytrace=False)


def import_cycles(graph: grimp.ImportGraph) -> Iterator[tuple[str, ...]]:
    """One cycle, as a chain of imports back to its start, for each group of modules that import each other."""
    for group in _strongly_connected(graph):
        if len(group) == 1:
            module = next(iter(group))
            if module in graph.find_modules_directly_imported_by(module):
                yield (module, module)
            continue
        start = min(group)
        step = min(m for m in graph.find_modules_directly_imported_by(start) if m in group)
        back = graph.find_shortest_chain(importer=step, imported=start)
        assert back is not None  # the group is strongly connected
        yield (start, *back)


def _strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """Tarjan's strongly connected components of the import graph: the modules that reach each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == module:
                    break
            groups.append(group)

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return groups
