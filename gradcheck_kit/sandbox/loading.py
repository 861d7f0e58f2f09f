"""Load an implementation file (a student's exercise or a solution) by path."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["load_module"]

_counter = itertools.count()


def load_module(path: str | Path) -> ModuleType:
    """Import the Python file at ``path`` as a fresh module.

    Each call executes the file again under a unique module name, so two
    implementations with the same file name (``exercises/ex2_cross_entropy.py``
    and ``solutions/ex2_cross_entropy.py``) never shadow each other.

    Raises:
        FileNotFoundError: when there is no such file.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no implementation file at {path}")
    name = f"_gradcheck_impl_{path.stem}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
