"""The implementation under test: a directory of exercise files, loaded once and called by name."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from gradcheck_kit.sandbox.loading import load_module

__all__ = ["Implementation", "default_impl_dir", "triton_available"]


class Implementation:
    """The exercise files in ``directory``; each is imported when one of its functions is first called.

    A file that fails to import still yields its functions: calling one raises the
    import error, so the failure is reported where the function is checked.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._modules: dict[str, ModuleType | BaseException] = {}

    @property
    def label(self) -> str:
        """How result tables name this implementation: ``"exercises/"``."""
        return f"{self.directory.name}/"

    def has(self, filename: str) -> bool:
        return (self.directory / filename).is_file()

    def function(self, filename: str, name: str) -> Callable[..., Any]:
        """Return a callable that runs ``name`` from ``filename``, loading the file on its first call."""
        resolved: list[Callable[..., Any]] = []

        def call(*args: Any, **kwargs: Any) -> Any:
            if not resolved:
                resolved.append(self._resolve(filename, name))
            return resolved[0](*args, **kwargs)

        return call

    def _resolve(self, filename: str, name: str) -> Callable[..., Any]:
        module = self._module(filename)
        if isinstance(module, BaseException):
            return _raiser(module)
        fn = getattr(module, name, None)
        if fn is None:
            return _raiser(AttributeError(f"{filename} defines no function {name!r}"))
        return fn

    def _module(self, filename: str) -> ModuleType | BaseException:
        if filename not in self._modules:
            try:
                self._modules[filename] = load_module(self.directory / filename)
            except Exception as exc:  # a student's file: any import-time failure is reported, not raised
                self._modules[filename] = exc
        return self._modules[filename]


def _raiser(exc: BaseException) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return fail


def default_impl_dir(root: str | Path = ".") -> Path | None:
    """The student's ``exercises/`` under ``root`` if there is one, else ``solutions/``, else None."""
    for name in ("exercises", "solutions"):
        candidate = Path(root) / name
        if candidate.is_dir():
            return candidate
    return None


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None
