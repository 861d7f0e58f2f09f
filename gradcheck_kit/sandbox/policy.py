"""Per-exercise isolation for a course's run: a fresh worker and the exercise's own time limit."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gradcheck_kit.sandbox.box import Outcome, Sandbox

__all__ = ["ExerciseSandbox"]


class ExerciseSandbox:
    """A :class:`~gradcheck_kit.sandbox.box.Sandbox` that runs each exercise in a fresh worker with its own time limit.

    The worker is replaced whenever a call is for another exercise's file than the
    last, so nothing one exercise's code leaves behind (patched modules, changed
    settings) reaches the next. Once a call of a file has timed out or crashed, or
    the file could not be imported or lacks the function, the file's later calls
    fail at once with the same outcome instead of being run again: a hang costs
    one time limit, not one per configuration that hypothesis tries.

    Args:
        sandbox: the sandbox whose worker is used.
        limits: seconds per call, by file name (``"ex2_cross_entropy.py"``).
        default: seconds per call for files not in ``limits``.
    """

    # Outcomes that every later call would repeat, or that cost a time limit or a new worker each.
    _FATAL = ("timeout", "crashed", "import_error", "missing_function")

    def __init__(self, sandbox: Sandbox, limits: Mapping[str, float], default: float) -> None:
        self.sandbox = sandbox
        self.limits = dict(limits)
        self.default = default
        self._current: str | None = None
        self._fatal: dict[str, Outcome] = {}

    def limit(self, path: str | Path) -> float:
        return self.limits.get(Path(path).name, self.default)

    def call(
        self, path: str | Path, func_name: str, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> Outcome:
        """Call ``func_name`` from ``path`` like :meth:`Sandbox.call`, under the file's own time limit."""
        key = str(Path(path).resolve())
        if key in self._fatal:
            first = self._fatal[key]
            message = (
                f"not run: an earlier call of {func_name} in this run ended with {first.status} and the file "
                f"is not called again\n{first.message}"
            )
            return dataclasses.replace(first, message=message, duration=0.0, stdout="")
        if self._current != key:
            self.sandbox.close()
            self._current = key
        outcome = self.sandbox.call(path, func_name, *args, timeout=timeout or self.limit(path), **kwargs)
        if outcome.status in self._FATAL:
            self._fatal[key] = outcome
        return outcome

    def close(self) -> None:
        self.sandbox.close()
