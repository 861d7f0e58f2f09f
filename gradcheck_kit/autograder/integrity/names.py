"""What each name of a source file stands for: the dotted path of a module or one of its names, a string, a step.

The bindings are collected over the whole file, not statement by statement: a name
stands for everything it was ever bound to (``import torch._C as C``, ``from torch
import _C``, ``sp = subprocess``, ``C = getattr(torch, "_C")``, ``m =
__import__("subprocess")``), which can only add to what a scan flags. Strings built
from constants are folded (``"_" + "C"``), so that ``getattr(torch, "_" + "C")`` is
``torch._C`` too.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable

__all__ = ["Names", "is_number"]

# Builtins resolved to ``builtins.<name>`` when the file does not bind the name itself.
_BUILTINS = frozenset(
    {"open", "exec", "eval", "compile", "__import__", "globals", "vars", "breakpoint", "exit", "quit"}
    | {"getattr", "setattr", "delattr", "hasattr", "SystemExit", "float"}
)
_GETATTR = "builtins.getattr"
_IMPORTERS = frozenset({"builtins.__import__", "importlib.import_module", "importlib.__import__"})
_BINDINGS = (ast.Assign, ast.AnnAssign, ast.NamedExpr, ast.arguments)
# A step small enough to be a finite difference's: far below any constant the exercises divide by.
_SMALL = 1e-2
_EPS_NAME = re.compile(r"_*eps(ilon)?(_\w*|\d*)", re.IGNORECASE)
_EPS_CALLS = frozenset({"float", "sqrt", "tensor", "as_tensor"})


class Names:
    """The names of one parsed file: every node with its parent, and what each name was bound to.

    Args:
        tree: the parsed file.
    """

    def __init__(self, tree: ast.AST) -> None:
        self.nodes, self.parent = _tree(tree)
        self.aliases: dict[str, set[str]] = {}
        self.strings: dict[str, set[str]] = {}
        self.bound: set[str] = set()
        self.stars: list[str] = []
        self.eps_names: set[str] = set()
        self._bind()

    def maximal(self, node: ast.AST) -> bool:
        """Whether a node is a whole chain: in ``a.b.c`` only the chain is looked up, ``a`` and ``a.b`` are parts."""
        parent = self.parent.get(node)
        return not (isinstance(parent, ast.Attribute) and parent.value is node)

    def _bind(self) -> None:
        assigned: dict[str, list[ast.expr]] = {}
        stores: dict[str, int] = {}
        for node in self.nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    top = alias.name.split(".")[0]
                    self.aliases.setdefault(alias.asname or top, set()).add(alias.name if alias.asname else top)
            elif isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if node.level or not node.module:
                        self.bound.add(alias.asname or alias.name)
                    elif alias.name == "*":
                        self.stars.append(node.module)
                    else:
                        self.aliases.setdefault(alias.asname or alias.name, set()).add(f"{node.module}.{alias.name}")
            elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
                self.bound.add(node.id)
                stores[node.id] = stores.get(node.id, 0) + 1
            elif isinstance(node, ast.arg):
                self.bound.add(node.arg)
                stores[node.arg] = stores.get(node.arg, 0) + 1
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.bound.add(node.name)
            if isinstance(node, _BINDINGS):
                for name, value in self._assignments(node):
                    assigned.setdefault(name, []).append(value)
        # A name stands for an epsilon only when every binding of it is one.
        eps_candidates = {name for name, values in assigned.items() if len(values) == stores.get(name, 0)}
        for _ in range(8):
            changed = False
            for name, values in assigned.items():
                try:
                    for value in values:
                        changed |= self._add(self.aliases, name, self.paths(value))
                        text = self.text(value)
                        changed |= text is not None and self._add(self.strings, name, {text})
                    if name in eps_candidates and name not in self.eps_names and all(map(self.eps_like, values)):
                        self.eps_names.add(name)
                        changed = True
                except RecursionError:
                    continue  # the use of the value is reported where it is visited
            if not changed:
                break

    @staticmethod
    def _add(table: dict[str, set[str]], name: str, values: set[str]) -> bool:
        if not values or values <= table.get(name, set()):
            return False
        table.setdefault(name, set()).update(values)
        return True

    def _assignments(self, node: ast.AST) -> Iterable[tuple[str, ast.expr]]:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                yield from _pairs(target, node.value)
        elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
            yield from _pairs(node.target, node.value)
        elif isinstance(node, ast.arguments):
            positional = [*node.posonlyargs, *node.args]
            for arg, default in zip(positional[len(positional) - len(node.defaults) :], node.defaults, strict=True):
                yield arg.arg, default
            for arg, default in zip(node.kwonlyargs, node.kw_defaults, strict=True):
                if default is not None:
                    yield arg.arg, default

    def paths(self, node: ast.AST) -> set[str]:
        """The dotted paths an expression may stand for (empty when it is not a module or one of its names)."""
        if isinstance(node, ast.Name):
            if node.id in self.aliases:
                return set(self.aliases[node.id])
            if node.id in self.bound:
                return set()
            if node.id == "__builtins__":
                return {"builtins"}
            if node.id in _BUILTINS:
                return {f"builtins.{node.id}"}
            return {f"{module}.{node.id}" for module in self.stars}
        if isinstance(node, ast.Attribute):
            return {f"{path}.{node.attr}" for path in self.paths(node.value)}
        if isinstance(node, ast.Call) and node.args:
            functions = self.paths(node.func)
            if _GETATTR in functions and len(node.args) >= 2:
                name = self.text(node.args[1])
                return set() if name is None else {f"{path}.{name}" for path in self.paths(node.args[0])}
            if functions & _IMPORTERS:
                name = self.text(node.args[0])
                return set() if name is None else {name}
            if "builtins.vars" in functions:
                return {f"{path}.__dict__" for path in self.paths(node.args[0])}
        if isinstance(node, ast.Subscript):
            key = self.text(node.slice)
            if key is None:
                return set()
            found = set()
            for path in self.paths(node.value):
                if path == "sys.modules":
                    found.add(key)
                elif path.endswith(".__dict__"):
                    found.add(f"{path.removesuffix('.__dict__')}.{key}")
            return found
        return set()

    def text(self, node: ast.AST) -> str | None:
        """A string built from constants only: ``"_" + "C"``, ``f"{'sub'}process"``, ``"".join(["o", "s"])``."""
        if isinstance(node, ast.Constant):
            return node.value if isinstance(node.value, str) else None
        if isinstance(node, ast.Name):
            values = self.strings.get(node.id, set())
            return next(iter(values)) if len(values) == 1 else None
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = self.text(node.left), self.text(node.right)
            return None if left is None or right is None else left + right
        if isinstance(node, ast.JoinedStr):
            parts = [self.text(v.value if isinstance(v, ast.FormattedValue) else v) for v in node.values]
            return None if None in parts else "".join(p for p in parts if p is not None)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "join"
            and len(node.args) == 1
            and isinstance(node.args[0], (ast.List, ast.Tuple))
        ):
            glue = self.text(node.func.value)
            parts = [self.text(e) for e in node.args[0].elts]
            return None if glue is None or None in parts else glue.join(p for p in parts if p is not None)
        return None

    def eps_like(self, node: ast.AST) -> bool:
        """Whether an expression is a small step: a constant up to 1e-2, a name bound to one, ``eps``, ``2 * eps``."""
        if isinstance(node, ast.Constant):
            return type(node.value) in (int, float) and 0 < abs(node.value) <= _SMALL
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return self.eps_like(node.operand)
        if isinstance(node, ast.Name):
            return node.id in self.eps_names or _EPS_NAME.fullmatch(node.id) is not None
        if isinstance(node, ast.Attribute):
            return _EPS_NAME.fullmatch(node.attr) is not None
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.Mult):
                return (self.eps_like(node.left) and is_number(node.right)) or (
                    self.eps_like(node.right) and is_number(node.left)
                )
            if isinstance(node.op, (ast.Div, ast.Pow)):
                return self.eps_like(node.left) and is_number(node.right) and not isinstance(node.right, ast.UnaryOp)
        if isinstance(node, ast.Call) and node.args:
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            return name in _EPS_CALLS and self.eps_like(node.args[0])
        return False


def is_number(node: ast.AST) -> bool:
    """Whether a node is a number written as a constant, signed or not."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        node = node.operand
    return isinstance(node, ast.Constant) and type(node.value) in (int, float)


def _tree(tree: ast.AST) -> tuple[list[ast.AST], dict[ast.AST, ast.AST]]:
    """Every node, parents before children, and each node's parent: ast.walk and a parent map in one pass."""
    nodes: list[ast.AST] = [tree]
    parent: dict[ast.AST, ast.AST] = {}
    for node in nodes:  # grows as it goes: a breadth-first walk
        for field in node._fields:
            value = getattr(node, field, None)
            if isinstance(value, ast.AST):
                parent[value] = node
                nodes.append(value)
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, ast.AST):
                        parent[item] = node
                        nodes.append(item)
    return nodes, parent


def _pairs(target: ast.AST, value: ast.expr) -> Iterable[tuple[str, ast.expr]]:
    if isinstance(target, ast.Name):
        yield target.id, value
    elif (
        isinstance(target, (ast.Tuple, ast.List))
        and isinstance(value, (ast.Tuple, ast.List))
        and len(target.elts) == len(value.elts)
        and not any(isinstance(e, ast.Starred) for e in (*target.elts, *value.elts))
    ):
        for element, element_value in zip(target.elts, value.elts, strict=True):
            yield from _pairs(element, element_value)
