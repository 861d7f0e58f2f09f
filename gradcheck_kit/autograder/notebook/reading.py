"""A notebook's code cells, read as data: nbformat 4 JSON parsed with ``json``, IPython's magics set aside.

Nothing here runs the notebook's code: cells are parsed with :mod:`ast` only.
nbformat itself is not needed: a cell's ``cell_type``, ``source`` and
``execution_count`` are all that is read, and every minor version of nbformat 4
(Jupyter's and Colab's) keeps them as they are.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Cell", "NotebookError", "code_cells", "neutralise_magics"]

#: Cell magics whose body is Python that IPython runs as it is (timed, captured, profiled).
_PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun"})

# A line IPython turns into a call rather than Python: `%magic`, `!shell`, `x = !shell`, `x = %magic`,
# `obj?`, `?obj`.
_MAGIC_LINE = re.compile(r"^[ \t]*(?:[%!?]|[\w.]+\?{1,2}[ \t]*$|[\w., \t]+=[ \t]*[%!])")

_WHAT_TO_DO = (
    "download it from Colab with File > Download > Download .ipynb, or save it from Jupyter, and grade that file"
)


class NotebookError(ValueError):
    """The file is not a notebook this can read, or holds no exercise: the message says which, and what to do."""


@dataclass(frozen=True)
class Cell:
    """One code cell of a notebook.

    Attributes:
        number: the cell's place in the notebook, counting every cell from 1.
        execution_count: the ``In [N]`` Jupyter shows beside it, when it was run.
        code: the cell's source with each IPython magic or shell line, and each ``cmp(...)``
            call, replaced by ``pass`` at its indentation, so that its lines keep their numbers.
        tree: the parsed code, or None when it does not parse (its exercise file then fails
            to import, with the SyntaxError's line).
    """

    number: int
    execution_count: int | None
    code: str
    tree: ast.Module | None

    def label(self, notebook: str) -> str:
        """``notebook.ipynb, cell 12 (In [14])``: how a student finds the cell."""
        run = f" (In [{self.execution_count}])" if self.execution_count is not None else ""
        return f"{notebook}, cell {self.number}{run}"


def code_cells(path: Path) -> list[Cell]:
    """The code cells of the notebook at ``path``, in order.

    Raises:
        NotebookError: when the file cannot be read, is not JSON, or is not an nbformat 4 notebook; the
            message says what is wrong and what to do, and leaves naming the file to the caller.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise NotebookError(f"the file could not be read ({exc}); {_WHAT_TO_DO}") from exc
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise NotebookError(f"not a Jupyter notebook: it is not JSON ({exc}); {_WHAT_TO_DO}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        if isinstance(data, dict) and "worksheets" in data:
            raise NotebookError(
                "an nbformat 3 notebook; open it in Jupyter and save it again to convert it to "
                "version 4, then grade that file"
            )
        raise NotebookError(f"JSON, but not a Jupyter notebook (it has no list of cells); {_WHAT_TO_DO}")
    version = data.get("nbformat")
    if isinstance(version, int) and version < 4:
        raise NotebookError(f"an nbformat {version} notebook; save it from Jupyter as version 4")
    cells = []
    for number, raw in enumerate(data["cells"], start=1):
        if not isinstance(raw, dict) or raw.get("cell_type") != "code":
            continue
        source = raw.get("source", "")
        if isinstance(source, list) and all(isinstance(line, str) for line in source):
            source = "".join(source)
        if not isinstance(source, str):
            raise NotebookError(f"cell {number} has a source that is not text; {_WHAT_TO_DO}")
        try:
            source.encode("utf-8")
        except UnicodeEncodeError as exc:  # JSON's "\ud800" escapes decode to characters no file can hold
            raise NotebookError(
                f"cell {number} holds text that is not valid Unicode ({exc.reason}); {_WHAT_TO_DO}"
            ) from None
        count = raw.get("execution_count")
        cell = _cell(number, count if isinstance(count, int) and not isinstance(count, bool) else None, source)
        if cell is not None:
            cells.append(cell)
    return cells


def _cell(number: int, execution_count: int | None, source: str) -> Cell | None:
    """The cell with its magics set aside, parsed; None for a cell that is not Python (``%%bash``, ``%%html``)."""
    lines = source.replace("\r\n", "\n").split("\n")
    first = lines[0].strip()
    if first.startswith("%%"):
        name = first[2:].split(maxsplit=1)[0] if first[2:].strip() else ""
        if name not in _PYTHON_CELL_MAGICS:
            return None
        lines[0] = "pass"
    code = neutralise_magics("\n".join(lines))
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # null bytes, nesting too deep to parse
        return Cell(number, execution_count, code, None)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Expr) and _is_cmp_call(n.value)]
    if calls:
        inert = _without(code, calls)
        try:
            tree, code = ast.parse(inert), inert
        except (SyntaxError, ValueError, RecursionError, MemoryError):  # keep the cell as written, cmp and all
            pass
    return Cell(number, execution_count, code, tree)


def _is_cmp_call(node: ast.expr) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "cmp"


def _without(code: str, statements: list[ast.Expr]) -> str:
    """``code`` with each of ``statements`` replaced by ``pass``, every line keeping its number.

    The notebook's ``cmp('hprebn', dhprebn, hprebn)`` checks a gradient against
    ``hprebn.grad``; an exercise given fewer names than the notebook (exercise 3 has no
    ``hprebn``) would fail on its arguments alone, and the grader compares anyway.
    """
    lines = code.split("\n")  # ast's columns count UTF-8 bytes
    for stmt in sorted(statements, key=lambda s: (s.lineno, s.col_offset), reverse=True):
        first, last = stmt.lineno - 1, (stmt.end_lineno or stmt.lineno) - 1
        head = lines[first].encode("utf-8")[: stmt.col_offset].decode("utf-8", errors="replace")
        tail = lines[last].encode("utf-8")[stmt.end_col_offset or 0 :].decode("utf-8", errors="replace")
        if first == last and not tail.strip():  # the call stays readable, as a comment
            call = lines[first].encode("utf-8")[stmt.col_offset :].decode("utf-8", errors="replace").rstrip()
            lines[first] = f"{head}pass  # {call}"
        else:
            lines[first : last + 1] = [head + "pass" + tail] + [""] * (last - first)
    return "\n".join(lines)


def neutralise_magics(code: str) -> str:
    """Replace each line IPython would not run as Python (``%matplotlib inline``, ``!pip install ...``) by ``pass``.

    A line counts only where a statement may start: the ``%`` that begins the
    second line of ``(a\\n% b)`` is Python's modulo, and a ``!`` inside a multi-line
    string is text. One pass over the cell, however many such lines it has.
    """
    lines = code.split("\n")
    depth, quote, continued = 0, "", False
    for row, line in enumerate(lines):
        if not (depth or quote or continued) and _MAGIC_LINE.match(line):
            lines[row] = line[: len(line) - len(line.lstrip())] + "pass"
            continue
        depth, quote, continued = _after(line, depth, quote)
    return "\n".join(lines)


def _after(line: str, depth: int, quote: str) -> tuple[int, str, bool]:
    """What is left open after ``line``: brackets, the quote of a string, and whether it ends in a backslash.

    Args:
        depth: brackets open before the line.
        quote: the quotes of a string open before it (``\'\'\'``, ``"``), or "".
    """
    i, comment = 0, False
    while i < len(line):
        c = line[i]
        if quote:
            if c == "\\":
                i += 2
            elif line.startswith(quote, i):
                i, quote = i + len(quote), ""
            else:
                i += 1
            continue
        if c == "#":
            comment = True
            break
        if c in "\"'":
            quote = c * 3 if line.startswith(c * 3, i) else c
            i += len(quote)
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth = max(depth - 1, 0)
        i += 1
    escaped_end = i > len(line)  # a backslash escaped the line's end, inside a string
    if len(quote) == 1 and not escaped_end:
        quote = ""  # a one-quote string cannot go on to the next line: the cell does not parse anyway
    continued = not quote and not comment and line.endswith("\\")
    return depth, quote, continued
