"""The integrity scan of one source file: parsed with ``ast``, every use looked up by what it stands for, nothing run.

Each name, attribute chain and import is resolved to a dotted path
(:class:`~gradcheck_kit.autograder.integrity.names.Names`) and looked up in
:mod:`~gradcheck_kit.autograder.integrity.rules`; a few patterns are checked on the
code itself: ``.backward()`` on a tensor, files opened outside the submission,
finite differences, loops with no way out.

What a scan cannot see is a value computed at run time (an attribute name read
from a file, a module reached through an object's attributes). Those calls are
flagged where they are made (``getattr`` with a computed name, ``exec``,
``importlib``); the rest is what the guard around the student's process is for.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import re
import tokenize
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from gradcheck_kit.autograder.integrity.names import Names
from gradcheck_kit.autograder.integrity.patterns import code_patterns
from gradcheck_kit.autograder.integrity.rules import (
    FORBIDDEN,
    KNOWN_MODULES,
    SUSPICIOUS,
    TOOLCHAIN_SETTINGS,
    Rule,
    Severity,
    rule_for_attribute,
    rule_for_path,
)

__all__ = ["Finding", "SourceScan", "scan_source"]


@dataclass(frozen=True)
class Finding:
    """One thing flagged in a file: where (line and 1-based column), the line's code, its category, and why."""

    file: str
    line: int
    column: int
    code: str
    category: str
    severity: Severity
    what: str

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SourceScan:
    """A file's findings, and the modules of the submission's own folder it imports (to be scanned as well)."""

    findings: tuple[Finding, ...]
    local_imports: tuple[str, ...] = ()


_ATTRIBUTE_FUNCTIONS = frozenset({"builtins.getattr", "builtins.setattr", "builtins.delattr"})
_OPENERS = frozenset(
    {"builtins.open", "io.open", "os.open", "codecs.open", "pathlib.Path", "pathlib.PosixPath", "pathlib.PurePath"}
)
_OPEN_BY_PATH = frozenset({"builtins.open", "io.open", "os.open", "codecs.open"})
# Arguments that only tensor.backward takes; a layer's own backward(dout) (exercise 5) takes one positional.
_AUTOGRAD_KEYWORDS = frozenset({"gradient", "retain_graph", "create_graph", "inputs"})
_AUTOGRAD_ATTRIBUTES = frozenset({"backward", "grad", "requires_grad", "requires_grad_", "retain_grad"})
_GRAD_SWITCHES = frozenset({"torch.set_grad_enabled"})
_ENV_READS = frozenset({"os.environ.get", "os.getenv", "os.environb.get"})

# Flags such as torch.backends.cuda.matmul.allow_tf32 are settings of the worker, not functions to replace.
_SETTINGS = ("torch.backends.",)
_ABSOLUTE = re.compile(r"(?:/|~[/\\]|[A-Za-z]:[/\\])[\w.~-][^\s]*")

_FILESYSTEM = Rule("filesystem", SUSPICIOUS, "")
_FILE_OUTSIDE = Rule("filesystem", FORBIDDEN, "")
_INTROSPECTION = Rule("introspection", SUSPICIOUS, "")
_PROC = Rule("introspection", FORBIDDEN, "")
_AUTOGRAD = Rule("autograd", FORBIDDEN, "")
_AUTOGRAD_MAYBE = Rule("autograd", SUSPICIOUS, "")
_MONKEYPATCH = Rule("monkeypatch", FORBIDDEN, "")
_UNKNOWN = Rule("unknown-import", SUSPICIOUS, "")
_UNSCANNABLE = Rule("unscannable", SUSPICIOUS, "")


def scan_source(source: str | bytes, filename: str = "<submission>", local_modules: Collection[str] = ()) -> SourceScan:
    """Scan one file's source for what a submission should not do; never runs it.

    Args:
        source: the file's text, or its bytes (an encoding cookie is honoured).
        filename: what the findings name as their file.
        local_modules: names of the modules in the submission's own folder: importing
            them is not an unknown import (the submission scan follows them instead).

    Returns:
        The findings in the order of the file, at most one per line and category (the more
        serious one), and the local modules the file imports.
    """
    text = _decode(source) if isinstance(source, bytes) else source
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    try:
        with warnings.catch_warnings():
            # Invalid escapes and the like are the student's to fix, not something to print here.
            warnings.simplefilter("ignore")
            tree = ast.parse(source, filename=filename)
    except SyntaxError as error:
        line = error.lineno or 1
        code = (error.text or _line(lines, line)).strip()
        what = f"does not parse, so nothing in it was scanned: {error.msg}"
        return SourceScan((Finding(filename, line, error.offset or 1, code, "syntax-error", SUSPICIOUS, what),))
    except (ValueError, RecursionError, MemoryError) as error:
        what = f"does not parse, so nothing in it was scanned: {error or type(error).__name__}"
        return SourceScan((Finding(filename, 1, 1, _line(lines, 1).strip(), "syntax-error", SUSPICIOUS, what),))
    scanner = _Scanner(Names(tree), lines, filename, frozenset(local_modules))
    scanner.run()
    findings = sorted(scanner.found.values(), key=lambda f: (f.line, f.column, f.category))
    return SourceScan(tuple(findings), tuple(sorted(scanner.local_imports)))


def _decode(source: bytes) -> str:
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(source).readline)
    except (SyntaxError, LookupError):
        encoding = "utf-8"
    try:
        return source.decode(encoding, "replace")
    except LookupError:
        return source.decode("utf-8", "replace")


def _line(lines: list[str], number: int) -> str:
    return lines[number - 1] if 0 < number <= len(lines) else ""


def _upward(path: str) -> bool:
    parts = re.split(r"[/\\]", path)
    return ".." in parts and all(part.strip() == part for part in parts)


def _only_false(args: list[ast.expr]) -> bool:
    # set_grad_enabled(False), requires_grad_(False): the call switches autograd off, not on.
    return len(args) == 1 and isinstance(args[0], ast.Constant) and args[0].value is False


def _short(text: str, width: int = 40) -> str:
    return repr(text) if len(text) <= width else repr(text[: width - 1] + "…")


class _Scanner:
    """One pass over a file's nodes, flagging each use by what its names stand for."""

    def __init__(self, names: Names, lines: list[str], filename: str, local_modules: frozenset[str]) -> None:
        self.names = names
        self.lines = lines
        self.filename = filename
        self.local_modules = local_modules
        self.local_imports: set[str] = set()
        self.found: dict[tuple[int, str], Finding] = {}

    def run(self) -> None:
        visitors = self._visitors()
        for node in self.names.nodes:
            visit = visitors.get(type(node))
            if visit is None:
                continue
            try:
                visit(node)
            except RecursionError:
                self._too_deep(node)
        for pattern in code_patterns(self.names):
            self.flag(pattern.node, pattern.rule, pattern.what)

    def _too_deep(self, node: ast.AST) -> None:
        # Expressions are resolved recursively; one nested past the interpreter's limit is skipped, not the file.
        self.flag(node, _UNSCANNABLE, "an expression nested too deeply to scan: it was skipped")

    # -- findings -----------------------------------------------------------------------

    def flag(self, node: ast.AST, rule: Rule, what: str) -> None:
        line = getattr(node, "lineno", 1)
        raw = _line(self.lines, line)
        offset = getattr(node, "col_offset", 0)
        # ast counts columns in UTF-8 bytes; editors count characters.
        column = len(raw.encode("utf-8")[:offset].decode("utf-8", "replace")) + 1
        finding = Finding(self.filename, line, column, raw.strip(), rule.category, rule.severity, what)
        key = (line, rule.category)
        kept = self.found.get(key)
        if kept is None or (kept.severity == SUSPICIOUS and rule.severity == FORBIDDEN):
            self.found[key] = finding

    def _flag_rule(self, node: ast.AST, rule: Rule, name: str) -> None:
        self.flag(node, rule, f"{name}: {rule.why}")

    # -- uses ---------------------------------------------------------------------------

    def _visitors(self) -> dict[type, Callable[[Any], None]]:
        # By exact node type: the scan's time goes into this dispatch, once per node.
        return {
            ast.Import: self._import,
            ast.ImportFrom: self._import,
            ast.Name: self._name,
            ast.Attribute: self._attribute,
            ast.Call: self._call,
            ast.Subscript: self._subscript,
            ast.Constant: self._string,
            ast.FunctionDef: self._definition,
            ast.AsyncFunctionDef: self._definition,
        }

    def _name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load) and self.names.maximal(node):
            self._use(node)
            if node.id == "__file__":
                self.flag(node, _FILESYSTEM, "__file__: where the file lies, to reach files beside or above it")

    def _subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, ast.Load) and self.names.maximal(node):
            self._use(node)

    def _definition(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        rule = rule_for_attribute(node.name) if node.name.startswith("__") else None
        if rule is not None:
            self._flag_rule(node, rule, f"def {node.name}")

    def _use(self, node: ast.AST) -> bool:
        matched = False
        for path in sorted(self.names.paths(node)):
            rule = rule_for_path(path)
            if rule is not None and not self._exempt(node, path):
                self._flag_rule(node, rule, path)
                matched = True
        return matched

    def _exempt(self, node: ast.AST, path: str) -> bool:
        parent = self.names.parent.get(node)
        args = self._arguments(node)
        if path in _ENV_READS:
            return bool(args) and self._toolchain(args[0])
        if path == "os.environ":
            if isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Load):
                return self._toolchain(parent.slice)
            if isinstance(parent, ast.Compare) and all(isinstance(op, (ast.In, ast.NotIn)) for op in parent.ops):
                return self._toolchain(parent.left)
        if path in _GRAD_SWITCHES:
            return _only_false(args)
        return False

    def _arguments(self, node: ast.AST) -> list[ast.expr]:
        """The positional arguments node is called with, empty when it is not called."""
        parent = self.names.parent.get(node)
        return parent.args if isinstance(parent, ast.Call) and parent.func is node else []

    def _toolchain(self, node: ast.AST) -> bool:
        name = self.names.text(node)
        return name is not None and name.startswith(TOOLCHAIN_SETTINGS)

    def _import(self, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                self._imported(node, alias.name)
            return
        if node.level:
            if node.level > 1:
                self.flag(node, _INTROSPECTION, "relative import from above the submission folder")
            else:
                names = [node.module] if node.module else [alias.name for alias in node.names]
                self.local_imports.update(name.split(".")[0] for name in names)
            return
        module = node.module or ""
        if self._imported(node, module):
            return
        for alias in node.names:
            rule = rule_for_path(f"{module}.{alias.name}") if alias.name != "*" else None
            if rule is not None:
                self._flag_rule(node, rule, f"from {module} import {alias.name}")

    def _imported(self, node: ast.AST, module: str) -> bool:
        rule = rule_for_path(module)
        if rule is not None:
            self._flag_rule(node, rule, f"import {module}")
            return True
        top = module.split(".")[0]
        if top in self.local_modules:
            self.local_imports.add(top)
        elif top not in KNOWN_MODULES:
            self.flag(node, _UNKNOWN, f"import {module}: not a module the course uses, and not scanned")
        return False

    def _attribute(self, node: ast.Attribute) -> None:
        rule = rule_for_attribute(node.attr)
        if rule is not None:
            self._flag_rule(node, rule, f".{node.attr}")
        if not isinstance(node.ctx, ast.Load):
            statement = self.names.parent.get(node)
            off = isinstance(statement, ast.Assign) and _only_false([statement.value])
            if node.attr in ("requires_grad", "grad") and not off:
                self.flag(node, _AUTOGRAD_MAYBE, f".{node.attr} set: only autograd uses it")
            targets = {path for path in self.names.paths(node.value) if path.split(".")[0] not in self.local_modules}
            for path in sorted(t for t in targets if not t.startswith(_SETTINGS)):
                self.flag(node, _MONKEYPATCH, f"{path}.{node.attr} replaced in the running process")
            return
        if not self.names.maximal(node) or self._use(node):
            return
        parent = self.names.parent.get(node)
        called = isinstance(parent, ast.Call) and parent.func is node
        if node.attr == "backward" and not called:
            self.flag(node, _AUTOGRAD_MAYBE, ".backward taken as a value: may run autograd elsewhere")
        elif node.attr == "grad":
            self.flag(node, _AUTOGRAD_MAYBE, ".grad: a gradient only autograd fills in")
        elif node.attr == "retain_grad":
            self.flag(node, _AUTOGRAD_MAYBE, ".retain_grad: keeps a gradient only autograd fills in")
        elif node.attr == "requires_grad_":
            if not _only_false(self._arguments(node)):
                self.flag(node, _AUTOGRAD_MAYBE, ".requires_grad_(): asks autograd to track the tensor")

    def _call(self, node: ast.Call) -> None:
        functions = self.names.paths(node.func)
        # getattr(torch, "_C"), __import__("os"), vars(torch): calls that stand for a module or one of its names.
        if self.names.maximal(node) and self.names.paths(node):
            self._use(node)
        if functions & _ATTRIBUTE_FUNCTIONS:
            self._attribute_by_name(node, functions)
        if functions & _OPENERS:
            self._opened(node, functions)
        method = node.func.attr if isinstance(node.func, ast.Attribute) else None
        if method == "backward" and not functions:
            self._backward(node)
        for keyword in node.keywords:
            value = keyword.value
            if keyword.arg == "requires_grad" and not (isinstance(value, ast.Constant) and value.value is False):
                self.flag(keyword.value, _AUTOGRAD_MAYBE, "requires_grad=: asks autograd to track the tensor")

    def _backward(self, node: ast.Call) -> None:
        keywords = {keyword.arg for keyword in node.keywords}
        if any(isinstance(arg, ast.Starred) for arg in node.args) or None in keywords:
            self.flag(node, _AUTOGRAD_MAYBE, ".backward(*args): tensor.backward or a layer's, the scan cannot tell")
        elif not node.args or keywords & _AUTOGRAD_KEYWORDS:
            self.flag(node, _AUTOGRAD, ".backward(): autograd computes the gradient")
        # One positional argument and no autograd keyword: a layer's own backward(dout), exercise 5's interface.

    def _attribute_by_name(self, node: ast.Call, functions: set[str]) -> None:
        if len(node.args) < 2:
            return
        function = min(functions & _ATTRIBUTE_FUNCTIONS).removeprefix("builtins.")
        name = self.names.text(node.args[1])
        if name is None:
            # On a module it may reach anything; on an object (getattr(self, "d" + name)) it reaches that object's own.
            modules = sorted(self.names.paths(node.args[0]))
            if modules:
                what = f"{function}({modules[0]}, <computed>): the scan cannot see what it reaches"
                self.flag(node, _INTROSPECTION, what)
            return
        rule = rule_for_attribute(name)
        if rule is not None:
            self._flag_rule(node, rule, f"{function}(…, {name!r})")
        if name in _AUTOGRAD_ATTRIBUTES:
            self.flag(node, _AUTOGRAD_MAYBE, f"{function}(…, {name!r}): autograd by another name")
        if function != "getattr":
            for path in sorted(self.names.paths(node.args[0])):
                self.flag(node, _MONKEYPATCH, f"{function}({path}, {name!r}): changes a module in the running process")

    def _opened(self, node: ast.Call, functions: set[str]) -> None:
        function = min(functions & _OPENERS)
        arguments = [*node.args, *(keyword.value for keyword in node.keywords)]
        texts = [self.names.text(arg) for arg in arguments]
        texts += [n.value for arg in arguments for n in ast.walk(arg) if isinstance(n, ast.Constant)]
        for text in texts:
            if isinstance(text, str) and (_ABSOLUTE.fullmatch(text) or _upward(text)):
                self.flag(node, _FILE_OUTSIDE, f"{function}({_short(text)}): a file outside the submission folder")
                return
        if functions & _OPEN_BY_PATH and node.args and self.names.text(node.args[0]) is None:
            self.flag(node, _FILESYSTEM, f"{function}() of a path computed at run time")

    def _string(self, node: ast.Constant) -> None:
        text = node.value
        if not isinstance(text, str) or self._docstring(node):
            return
        if text.startswith("/proc") or "/proc/" in text:
            self.flag(node, _PROC, f"{_short(text)}: another process's state, the grader's included")
        elif "results.json" in text or text.startswith("/autograder"):
            self.flag(node, _FILE_OUTSIDE, f"{_short(text)}: names the grader's files")
        elif _upward(text):
            self.flag(node, _FILESYSTEM, f"{_short(text)}: a path leading out of the submission folder")
        elif _ABSOLUTE.fullmatch(text):
            self.flag(node, _FILESYSTEM, f"{_short(text)}: an absolute path, outside the submission folder")

    def _docstring(self, node: ast.Constant) -> bool:
        statement = self.names.parent.get(node)
        owner = self.names.parent.get(statement) if isinstance(statement, ast.Expr) else None
        if not isinstance(owner, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            return False
        return bool(owner.body) and owner.body[0] is statement
