"""Which code of a notebook answers which exercise, found by the gradients it assigns.

- Exercise 1: every cell that assigns some of ``dlogprobs`` ... ``dC``, up to the last
  one that assigns ``dC``; after that, any such cell but those of exercises 2 and 3.
- Exercise 2: a later cell whose only gradient is ``dlogits`` (computed from the forward
  pass, not from exercise 1's ``dnorm_logits``).
- Exercise 3: a later cell that ends in ``dhprebn`` with batchnorm gradients only, from
  ``dhpreact``.
- Exercise 4: the training loop ("putting it all together"), a loop that assigns ``dC``
  with the rest of the backward pass: only its statements that compute ``dC`` are taken.

When a notebook holds several candidates for exercise 2, 3 or 4, the last one counts.
Cells that assign none of these (data loading, the forward pass, plots) are left out.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from gradcheck_kit.autograder.notebook.bindings import EX1_GRADIENTS
from gradcheck_kit.autograder.notebook.reading import Cell

__all__ = ["Piece", "definitions", "find_answers", "loads", "stores"]

_GRADIENTS = frozenset(EX1_GRADIENTS)
#: The gradients between hpreact and hprebn: what an exercise 3 cell may spell out on the way.
_BATCHNORM = frozenset({"dbnraw", "dbnvar_inv", "dbnvar", "dbndiff2", "dbndiff", "dbnmeani", "dhprebn"})
_FROM_DHPREACT = _BATCHNORM | {"dhpreact"}
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


@dataclass(frozen=True)
class Piece:
    """Code of one cell that answers an exercise: the whole cell, or some of its statements (exercise 4)."""

    cell: Cell
    statements: tuple[ast.stmt, ...] | None = None


@dataclass(frozen=True)
class _Uses:
    """The exercise 1 gradients a cell assigns and reads, and whether it is a training loop."""

    binds: frozenset[str]
    reads: frozenset[str]
    training: bool


def find_answers(cells: list[Cell], ex4_given: frozenset[str]) -> dict[str, list[Piece]]:
    """The code that answers each exercise found, by key ("ex1" ... "ex4").

    Args:
        cells: the notebook's code cells, in order.
        ex4_given: the names exercise 4's function binds before the notebook's code: the
            statements computing ``dC`` are followed back to these and no further.
    """
    uses = [_uses(cell) for cell in cells]
    found: dict[str, list[Piece]] = {}
    training = [cell for cell, use in zip(cells, uses, strict=True) if use.training]
    if training:
        found["ex4"] = [_training_piece(training[-1], ex4_given)]
    answering = [(cell, use) for cell, use in zip(cells, uses, strict=True) if use.binds and not use.training]
    last_dC = max((i for i, (_, use) in enumerate(answering) if "dC" in use.binds), default=-1)
    for i, (cell, use) in enumerate(answering):
        after_ex1 = i > last_dC
        if after_ex1 and use.binds == {"dlogits"} and use.reads <= {"dlogits"}:
            found["ex2"] = [Piece(cell)]
        elif after_ex1 and "dhprebn" in use.binds and use.binds <= _BATCHNORM and use.reads <= _FROM_DHPREACT:
            found["ex3"] = [Piece(cell)]
        else:
            found.setdefault("ex1", []).append(Piece(cell))
    return found


def _uses(cell: Cell) -> _Uses:
    if cell.tree is None:
        return _guessed_uses(cell.code)
    binds = stores(cell.tree) & _GRADIENTS
    reads = loads(cell.tree) & _GRADIENTS
    return _Uses(frozenset(binds), frozenset(reads), any(_is_training_loop(n) for n in _scope_walk(cell.tree)))


_ASSIGNED = re.compile(r"^([ \t]*)(d\w+(?:[ \t]*,[ \t]*d\w+)*)[ \t]*(?:[-+*/@%]|\*\*|//)?=(?!=)", re.MULTILINE)


def _guessed_uses(code: str) -> _Uses:
    """A cell that does not parse, read by pattern: its file will fail to import with the SyntaxError's line."""
    binds: set[str] = set()
    indented: set[str] = set()
    for match in _ASSIGNED.finditer(code):
        names = set(re.findall(r"\w+", match.group(2)))
        binds |= names
        if match.group(1):
            indented |= names
    loop = re.search(r"^[ \t]*(?:for|while)\b", code, re.MULTILINE) is not None
    training = loop and "dC" in indented and len(indented & _GRADIENTS) > 1
    reads = {name for name in _GRADIENTS if re.search(rf"\b{name}\b", code)} - binds
    return _Uses(frozenset(binds & _GRADIENTS), frozenset(reads), training)


def _is_training_loop(node: ast.AST) -> bool:
    """A loop that assigns ``dC`` and another gradient of the backward pass: the notebook's exercise 4."""
    if not isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
        return False
    assigned = set().union(*(stores(stmt) for stmt in node.body)) & _GRADIENTS
    return "dC" in assigned and len(assigned) > 1


def _training_piece(cell: Cell, given: frozenset[str]) -> Piece:
    """The statements of the training loop that compute ``dC``, or the whole cell when it does not parse."""
    if cell.tree is None:
        return Piece(cell)
    loop = next(n for n in _scope_walk(cell.tree) if _is_training_loop(n))
    blocks = [block for block in _blocks(loop.body) if any(_binds(stmt, "dC") for stmt in block)]
    # dC bound otherwise than by an assignment (a walrus, a with's target): the loop's own body.
    return Piece(cell, tuple(_slice(blocks[-1] if blocks else loop.body, "dC", given)))


def _slice(block: list[ast.stmt], target: str, given: frozenset[str]) -> list[ast.stmt]:
    """The statements of ``block`` that ``target``'s final value depends on, back to the names in ``given``.

    A statement is kept when it assigns or changes in place (``dC[ix] += ...``,
    ``dC.index_add_(...)``) a name still needed; what it reads is then needed in turn,
    but for what a compound statement binds itself (a loop's ``k``, ``j``, ``ix``).
    """
    needed = {target}
    kept = []
    for stmt in reversed(block):
        if not (_writes(stmt) & needed):
            continue
        kept.append(stmt)
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            needed -= stores(stmt)
            needed |= loads(stmt)
        elif isinstance(stmt, (ast.AugAssign, ast.Expr)):
            needed |= loads(stmt)
        else:
            needed |= loads(stmt) - stores(stmt)
        needed -= given
    return kept[::-1]


def _blocks(body: list[ast.stmt]) -> Iterator[list[ast.stmt]]:
    """``body`` and every statement list nested in it, in source order, but inside functions and classes."""
    yield body
    for stmt in body:
        if isinstance(stmt, _SCOPES):
            continue
        for field in ("body", "orelse", "finalbody"):
            value = getattr(stmt, field, None)
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                yield from _blocks(value)
        for inner in [*getattr(stmt, "handlers", []), *getattr(stmt, "cases", [])]:
            yield from _blocks(inner.body)


def _binds(stmt: ast.stmt, name: str) -> bool:
    """Whether ``stmt`` itself, not a statement nested in it, assigns ``name``."""
    if isinstance(stmt, ast.Assign):
        targets: Iterable[ast.expr] = stmt.targets
    elif isinstance(stmt, (ast.AugAssign, ast.AnnAssign)):
        targets = [stmt.target]
    else:
        return False
    return any(name in _target_names(t) for t in targets)


def _target_names(target: ast.expr) -> set[str]:
    """The names an assignment target binds: ``a`` and ``b`` in ``a, *b = ...``; none in ``a[i] = ...``."""
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    if isinstance(target, (ast.Tuple, ast.List)):
        return set().union(*(_target_names(t) for t in target.elts))
    return set()


def _writes(stmt: ast.stmt) -> set[str]:
    """The names ``stmt`` assigns or changes in place: ``x =``, ``x[i] +=``, ``x.a =``, ``x.add_(...)``, ``out=x``."""
    written = stores(stmt)
    for node in _scope_walk(stmt):
        if isinstance(node, (ast.Subscript, ast.Attribute)) and isinstance(node.ctx, ast.Store):
            written |= _base(node)
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr.endswith("_") and not func.attr.startswith("__"):
                written |= _base(func.value)
            for keyword in node.keywords:
                if keyword.arg == "out":
                    written |= _base(keyword.value)
    return written


def _base(expr: ast.expr) -> set[str]:
    while isinstance(expr, (ast.Subscript, ast.Attribute)):
        expr = expr.value
    return {expr.id} if isinstance(expr, ast.Name) else set()


def _scope_walk(node: ast.AST) -> Iterator[ast.AST]:
    """Every node under ``node`` that runs in its scope: not the bodies of functions, lambdas or classes."""
    todo = [node]
    while todo:
        current = todo.pop()
        yield current
        if current is not node and isinstance(current, _SCOPES):
            continue
        todo.extend(reversed(list(ast.iter_child_nodes(current))))


def stores(node: ast.AST) -> set[str]:
    """The names ``node`` binds in its scope: assignments, loop targets, imports, defs; not comprehension targets."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, ast.Lambda):
        return set()
    names: set[str] = set()
    comprehension_targets = {
        id(n) for c in _scope_walk(node) if isinstance(c, ast.comprehension) for n in ast.walk(c.target)
    }
    for n in _scope_walk(node):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store) and id(n) not in comprehension_targets:
            names.add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n is not node:
            names.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in n.names if a.name != "*")
    return names


def loads(node: ast.AST) -> set[str]:
    """Every name ``node`` reads, in any scope under it."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def definitions(cells: Iterable[Cell]) -> dict[str, tuple[Cell, ast.stmt]]:
    """What the cells define at their top level for later cells to use: imports, functions, classes, constants.

    A constant is a name assigned a literal (``eps = 1e-5``). The last definition of a name wins.
    """
    found: dict[str, tuple[Cell, ast.stmt]] = {}
    for cell in cells:
        if cell.tree is None:
            continue
        for stmt in cell.tree.body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = stores(ast.Module(body=[stmt], type_ignores=[]))
            elif isinstance(stmt, ast.Assign) and _is_literal(stmt.value):
                names = {t.id for t in stmt.targets if isinstance(t, ast.Name)}
            else:
                continue
            for name in names:
                found[name] = (cell, stmt)
    return found


def _is_literal(expr: ast.expr) -> bool:
    try:
        ast.literal_eval(expr)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True
