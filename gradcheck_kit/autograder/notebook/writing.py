"""The exercise files written from a notebook: each function binds the notebook's names, then runs its code.

The notebook's code is copied verbatim, indented into the function, and each of
its lines ends with a comment naming its cell and its line in the cell: the
sandbox quotes the line an exception comes from, so the message names the cell.
Lines inside a multi-line string are neither indented nor marked (either would
change the string); a line continued with a backslash is not marked (a comment
cannot follow the backslash).
"""

from __future__ import annotations

import ast
import builtins
import io
import re
import tokenize

from gradcheck_kit.autograder.notebook.bindings import BINDINGS, EX1_GRADIENTS
from gradcheck_kit.autograder.notebook.finding import Piece, definitions, loads, stores
from gradcheck_kit.autograder.notebook.reading import Cell
from gradcheck_kit.course.catalogue import EXERCISES
from gradcheck_kit.makemore.model import GRADED

__all__ = ["exercise_source", "not_started_source", "safe_name"]

_INDENT = "    "
#: Always there, as in the notebook's first cell; ``cmp`` is defined inert.
_PROVIDED = frozenset({"torch", "F", "cmp"})

_HEADER = '''\
"""Exercise {number} of {notebook}: {what}, with the notebook's names bound from the grader's inputs.

Written by gradcheck-kit from the notebook. Each line of the notebook's code ends with a comment
naming its cell and its line there: an error at that line is an error in that cell.
"""

import torch
import torch.nn.functional as F
'''

_CMP = '''

def cmp(*args, **kwargs):
    """The notebook's cmp, inert here: the grader compares every gradient itself."""
'''


def safe_name(name: str) -> str:
    """``name`` with anything that could end a comment or a string (a newline, a quote) replaced."""
    return re.sub(r"[^\w .()\[\]+,-]", "_", name)[:120]


def exercise_source(key: str, pieces: list[Piece], earlier: list[Cell], notebook: str) -> str:
    """The exercise file for ``key``: the pieces' code in the exercise's function.

    Args:
        key: "ex1" ... "ex4".
        pieces: the code that answers the exercise, in notebook order.
        earlier: the notebook's code cells before the first piece: their imports, functions
            and constants are copied when the pieces use them.
        notebook: the notebook's file name, for the comments.
    """
    binding = BINDINGS[key]
    body: list[str] = []
    for piece in pieces:
        label = piece.cell.label(notebook)
        if piece.statements is None:
            body.append(f"{_INDENT}# ---- {label} ----")
            body += _marked(piece.cell.code, label, first_line=1, dedent=0, indent=_INDENT)
        else:
            body.append(f"{_INDENT}# ---- {label}: the statements of its loop that compute {binding.outputs[0]} ----")
            for stmt in piece.statements:
                segment = ast.get_source_segment(piece.cell.code, stmt, padded=True) or ""
                dedent = len(segment) - len(segment.lstrip(" \t"))  # its first line's indentation, in characters
                body += _marked(segment, label, first_line=stmt.lineno, dedent=dedent, indent=_INDENT)
    cells = ", ".join(f"cell {p.cell.number}" for p in pieces)
    what = f"{'the training loop of ' if key == 'ex4' else ''}{cells}"
    text = _HEADER.format(number=key[2:], notebook=notebook, what=what)
    text += "".join(f"\n{line}" for line in _helpers(pieces, binding.given, earlier, notebook))
    text += _CMP
    function = EXERCISES[key].function
    lines = [f"\n\ndef {function}({binding.arguments}):"]
    lines += [_INDENT + line for line in binding.prelude]
    lines += [f"{_INDENT}{name} = None" for name in binding.outputs]
    lines.append("")
    lines += body
    lines.append("")
    lines += [_INDENT + line for line in _returns(key, pieces, notebook)]
    return text + "\n".join(lines) + "\n"


def _returns(key: str, pieces: list[Piece], notebook: str) -> list[str]:
    if key == "ex1":
        # As the stub: a gradient still None is "not started".
        pairs = [f'{_INDENT}"{name}": {grad},' for name, grad in zip(GRADED, EX1_GRADIENTS, strict=True)]
        return ["return {", *pairs, "}"]
    (name,) = BINDINGS[key].outputs
    where = ", ".join(p.cell.label(notebook) for p in pieces)
    why = f"{name} is None after {where}: not written yet"
    return [f"if {name} is None:", f"{_INDENT}raise NotImplementedError({why!r})", f"return {name}"]


def _helpers(pieces: list[Piece], given: frozenset[str], earlier: list[Cell], notebook: str) -> list[str]:
    """The imports, functions and constants of earlier cells that the pieces use, in notebook order."""
    code: list[ast.AST] = [s for p in pieces for s in (p.statements or ([p.cell.tree] if p.cell.tree else []))]
    known = definitions(earlier)
    bound = set(given) | _PROVIDED | set(dir(builtins)) | set(BINDINGS["ex1"].outputs)
    for node in code:
        bound |= stores(node)
    wanted: dict[int, tuple[Cell, ast.stmt]] = {}
    todo = sorted({name for node in code for name in loads(node)} - bound)
    while todo:
        name = todo.pop()
        if name not in known or id(known[name][1]) in wanted:
            continue
        cell, stmt = known[name]
        wanted[id(stmt)] = (cell, stmt)
        todo += sorted(loads(stmt) - bound - stores(stmt))
    order = sorted(wanted.values(), key=lambda pair: (pair[0].number, pair[1].lineno))
    lines: list[str] = []
    for cell, stmt in order:
        label = cell.label(notebook)
        segment = ast.get_source_segment(cell.code, stmt, padded=True) or ""
        # A function's or class's source starts at its first decorator.
        first = min([stmt.lineno, *(d.lineno for d in getattr(stmt, "decorator_list", []))])
        segment = "".join(cell.code.splitlines(keepends=True)[first - 1 : stmt.lineno - 1]) + segment
        lines += ["", f"# ---- from {label} ----", *_marked(segment, label, first_line=first, dedent=0, indent="")]
    return lines


def _marked(code: str, label: str, *, first_line: int, dedent: int, indent: str) -> list[str]:
    """``code``'s lines, indented by ``indent`` instead of ``dedent`` columns, each ending with ``# <label>, line N``.

    Lines inside a multi-line string stay as they are, and carry no comment.
    """
    inside, ends = _line_kinds(code)
    out = []
    for row, line in enumerate(code.split("\n"), start=1):
        if row in inside:
            out.append(line)
            continue
        if dedent and line[:dedent].strip() == "":
            line = line[dedent:]
        if row in ends:
            line = f"{line}  # {label}, line {first_line + row - 1}"
        out.append(f"{indent}{line}" if line.strip() else "")
    return out


def _line_kinds(code: str) -> tuple[set[int], set[int]]:
    """The rows inside a multi-line string, and the rows of code that a comment may end."""
    inside: set[int] = set()
    code_rows: set[int] = set()
    line_ends: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    try:
        for token in tokenize.generate_tokens(io.StringIO(code + "\n").readline):
            (start, _), (end, _) = token.start, token.end
            if end > start:
                inside.update(range(start + 1, end + 1))
            if token.type in (tokenize.NL, tokenize.NEWLINE):
                line_ends.add(start)
            elif token.type not in skip:
                code_rows.add(start)
    except (tokenize.TokenError, SyntaxError):
        pass  # a cell that does not parse: the rows read before the error are marked all the same
    return inside, (code_rows & line_ends) - inside


def not_started_source(key: str, why: str, notebook: str) -> str:
    """An exercise file that answers nothing: whatever the grader asks it for raises NotImplementedError(``why``).

    That is how an untouched stub of ``exercises/`` reads to the grader: "not started", with the reason.
    """
    return f'''\
"""Exercise {key[2:]} of {notebook}: not started.

Written by gradcheck-kit from the notebook: {why}
"""

_WHY = {why!r}


class _NotWritten:
    """Stands for every function and class the grader asks this file for."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError(_WHY)


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _NotWritten
'''
