"""Load an implementation file (a student's exercise or a solution) by path."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import itertools
import linecache
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["load_module"]

_counter = itertools.count()


def load_module(path: str | Path, source: bytes | None = None) -> ModuleType:
    """Import the Python file at ``path`` as a fresh module.

    Each call executes the file again under a unique module name, so two
    implementations with the same file name (``exercises/ex2_cross_entropy.py``
    and ``solutions/ex2_cross_entropy.py``) never shadow each other.

    Args:
        path: the file; its module's ``__file__`` and its code's file name.
        source: the file's contents, read by someone who could; given, the file is not read
            (nor any cached bytecode), and tracebacks quote these lines.

    Raises:
        FileNotFoundError: when there is no such file.
    """
    path = Path(path).resolve()
    if source is None and not path.is_file():
        raise FileNotFoundError(f"no implementation file at {path}")
    name = f"_gradcheck_impl_{path.stem}_{next(_counter)}"
    if source is None:
        spec = importlib.util.spec_from_file_location(name, path)
    else:
        spec = importlib.util.spec_from_file_location(name, path, loader=_GivenSource(name, str(path), source))
        lines = importlib.util.decode_source(source).splitlines(keepends=True)
        linecache.cache[str(path)] = (len(source), None, lines, str(path))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


class _GivenSource(importlib.machinery.SourceFileLoader):
    """Loads a file from the source it was given: no read of the file or of its bytecode, nothing written."""

    def __init__(self, name: str, path: str, source: bytes) -> None:
        super().__init__(name, path)
        self._source = source

    def get_data(self, path: str) -> bytes:
        if path == self.path:
            return self._source
        raise OSError(f"only {self.path} is given")

    def set_data(self, path: str, data: bytes, *, _mode: int = 0o666) -> None:
        pass
