"""Sizes written into a student's code as numbers: found when a solution right at one shape fails at another.

A solution that hard-codes the notebook's batch of 32 or its vocabulary of 27 is
right at the notebook's shapes and wrong, or failing, at any other. When the
grader sees that pattern, :func:`hard_coded` says so, and names each of those
numbers it finds in the student's function, with its line, by reading the source
with :mod:`ast` (nothing is run).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gradcheck_kit.report import Diagnosis

__all__ = ["Literal", "hard_coded", "literals"]


@dataclass(frozen=True)
class Literal:
    """A whole number written in the source: its value, where it stands, and its line's text."""

    value: int
    line: int
    col: int
    text: str


def literals(source: str, function: str, values: set[int]) -> list[Literal]:
    """The whole numbers among ``values`` written in ``function`` (the whole file when it has none by that name)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    scope: ast.AST = next(
        (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == function),
        tree,
    )
    lines = source.splitlines()
    found = []
    for node in ast.walk(scope):
        if isinstance(node, ast.Constant) and type(node.value) is int and node.value in values:
            text = lines[node.lineno - 1].strip() if 0 < node.lineno <= len(lines) else ""
            found.append(Literal(node.value, node.lineno, node.col_offset, text))
    return sorted(found, key=lambda lit: (lit.line, lit.col))


def hard_coded(path: str | Path, function: str, notebook: Mapping[str, int], here: Mapping[str, int]) -> Diagnosis:
    """The diagnosis of a solution right at the notebook's sizes and not at ``here``.

    Args:
        path: the student's file.
        function: the graded function in it.
        notebook: the notebook's sizes by name (``{"n": 32, "vocab_size": 27, ...}``).
        here: the sizes of the failing configuration, by the same names. Names that are not
            identifiers ("n-1") are sizes computed from the others: looked for in the source, and
            not listed as the configuration's.
    """
    differing = {value: name for name, value in notebook.items() if here.get(name) != value}
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except OSError:
        source = ""
    found = literals(source, function, set(differing))
    # Sizes computed from others ("n-1") are looked for in the source, not listed as the configuration.
    sizes = ", ".join(
        f"{name}={here[name]}"
        for name in notebook
        if name.isidentifier() and here.get(name, notebook[name]) != notebook[name]
    )
    evidence = f"right at the notebook's sizes, not at {sizes}"
    if not found:
        return Diagnosis(
            "it depends on the notebook's sizes: a size is fixed somewhere (a shape built from numbers, or taken "
            "from a tensor it should not be)",
            evidence,
        )
    by_line: dict[int, list[Literal]] = {}
    for lit in found:
        by_line.setdefault(lit.line, []).append(lit)
    named = "; ".join(
        " and ".join(f"{lit.value} ({differing[lit.value]})" for lit in lits)
        + f" at {path.name}:{line}: {lits[0].text}"
        for line, lits in list(by_line.items())[:4]
    )
    more = f" and {len(by_line) - 4} more lines" if len(by_line) > 4 else ""
    return Diagnosis(
        f"a size of the notebook is written as a number: {named}{more}; take it from the tensors' shapes instead",
        evidence,
    )
