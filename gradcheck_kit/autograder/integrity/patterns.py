"""Code that gets a gradient or a grade without an API to flag: finite differences, and loops with no way out.

A finite difference is found by its quotient, a difference divided by a small
step (``(f(x + eps) - f(x - eps)) / (2 * eps)``), and by its nudges, an element
moved by a small step inside a loop (``x[i] += eps``). A step is a constant up to
1e-2, a name bound only to one, or a name such as ``eps``. float64 is flagged only
in a function that takes finite differences: there it is the precision that lets
them pass the float32 tolerances; elsewhere (exercise 3 computed in double and cast
back) it is honest.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass

from gradcheck_kit.autograder.integrity.names import Names, is_number
from gradcheck_kit.autograder.integrity.rules import SUSPICIOUS, Rule

__all__ = ["ENDLESS", "NUMERICAL", "Pattern", "code_patterns"]

NUMERICAL = Rule("numerical-diff", SUSPICIOUS, "a gradient from finite differences, not derived")
ENDLESS = Rule("endless-loop", SUSPICIOUS, "a loop that ends only at the time limit")

_DIVISIONS = frozenset({"div", "div_", "divide", "true_divide"})
_NUDGES = frozenset({"add_", "sub_"})
_FLOAT64 = frozenset({"torch.float64", "torch.double", "numpy.float64"})
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.Module)
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
_LOOPS = (ast.For, ast.AsyncFor, ast.While)
_QUOTIENT = "divides by a small epsilon, as a finite difference does"
_NUDGE = "nudges an element by a small epsilon in a loop, as a finite difference does"


@dataclass(frozen=True)
class Pattern:
    """A node that matches a pattern, with the rule it falls under and what it does."""

    node: ast.AST
    rule: Rule
    what: str


def code_patterns(names: Names) -> list[Pattern]:
    """The finite differences and endless loops of a parsed file, in the order of its nodes."""
    found: list[Pattern] = []
    difference_scopes: set[ast.AST] = set()
    for node in names.nodes:
        try:
            for pattern in _match(names, node):
                found.append(pattern)
                if pattern.rule is NUMERICAL:
                    difference_scopes.add(_scope(names, node))
        except RecursionError:
            continue  # the scan reports the expression as too deep where it visits it
    if difference_scopes:
        found += [
            Pattern(node, NUMERICAL, "float64 next to a finite difference, for the precision it needs")
            for node in names.nodes
            if _scope(names, node) in difference_scopes and _float64(names, node)
        ]
    return found


def _match(names: Names, node: ast.AST) -> Iterator[Pattern]:
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Div) and names.eps_like(node.right) and not is_number(node.left):
            yield Pattern(node, NUMERICAL, _QUOTIENT)
        elif isinstance(node.op, ast.Mult) and any(
            isinstance(factor, ast.BinOp)
            and isinstance(factor.op, ast.Div)
            and is_number(factor.left)
            and names.eps_like(factor.right)
            and not is_number(other)
            for factor, other in ((node.left, node.right), (node.right, node.left))
        ):
            yield Pattern(node, NUMERICAL, "multiplies by 1/epsilon, as a finite difference does")
    elif isinstance(node, ast.AugAssign):
        if isinstance(node.op, ast.Div) and names.eps_like(node.value):
            yield Pattern(node, NUMERICAL, _QUOTIENT)
        elif (
            isinstance(node.op, (ast.Add, ast.Sub))
            and isinstance(node.target, ast.Subscript)
            and names.eps_like(node.value)
            and _in_loop(names, node)
        ):
            yield Pattern(node, NUMERICAL, _NUDGE)
    elif isinstance(node, ast.Assign):
        value = node.value
        if (
            isinstance(node.targets[0], ast.Subscript)
            and isinstance(value, ast.BinOp)
            and isinstance(value.op, (ast.Add, ast.Sub))
            and (names.eps_like(value.left) or names.eps_like(value.right))
            and _in_loop(names, node)
        ):
            yield Pattern(node, NUMERICAL, _NUDGE)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
        method = node.func.attr
        if method in _DIVISIONS and names.eps_like(node.args[-1]):
            yield Pattern(node, NUMERICAL, f".{method} by a small epsilon, as a finite difference does")
        elif method in _NUDGES and names.eps_like(node.args[0]) and _in_loop(names, node):
            yield Pattern(node, NUMERICAL, _NUDGE)
    elif isinstance(node, ast.While):
        yield from _endless(node)


def _endless(node: ast.While) -> Iterator[Pattern]:
    if not (isinstance(node.test, ast.Constant) and node.test.value):
        # Without a call in its test, a loop whose body does nothing cannot change what it waits for.
        idle = all(
            isinstance(s, ast.Pass) or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
            for s in node.body
        )
        if idle and not any(isinstance(n, (ast.Call, ast.Await, ast.NamedExpr)) for n in ast.walk(node.test)):
            yield Pattern(node, ENDLESS, "a loop whose body does nothing: once entered it never ends")
        return
    # A break counts at this loop's own level; a return, raise or yield at any depth.
    stack: list[tuple[ast.AST, int]] = [(statement, 0) for statement in node.body]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, (ast.Return, ast.Raise, ast.Yield, ast.YieldFrom)):
            return
        if isinstance(current, ast.Break) and depth == 0:
            return
        if isinstance(current, _DEFINITIONS):
            continue
        inner = depth + 1 if isinstance(current, _LOOPS) else depth
        stack.extend((child, inner) for child in ast.iter_child_nodes(current))
    yield Pattern(node, ENDLESS, "while True with no break, return or raise: it ends only at the time limit")


def _in_loop(names: Names, node: ast.AST) -> bool:
    current = names.parent.get(node)
    while current is not None and not isinstance(current, _DEFINITIONS):
        if isinstance(current, _LOOPS):
            return True
        current = names.parent.get(current)
    return False


def _scope(names: Names, node: ast.AST) -> ast.AST:
    current = names.parent.get(node)
    while current is not None and not isinstance(current, _SCOPES):
        current = names.parent.get(current)
    return current if current is not None else node


def _float64(names: Names, node: ast.AST) -> bool:
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Attribute) and node.func.attr == "double"
    if isinstance(node, ast.Constant):
        return node.value == "float64"
    try:
        return isinstance(node, ast.Attribute) and names.maximal(node) and bool(names.paths(node) & _FLOAT64)
    except RecursionError:
        return False
