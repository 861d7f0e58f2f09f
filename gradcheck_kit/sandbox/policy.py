"""Per-check isolation for a course's run: each exercise's own time limit, and a failure kept to its check."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from gradcheck_kit.sandbox.box import Outcome, Sandbox

__all__ = ["ExerciseSandbox"]


class ExerciseSandbox:
    """A :class:`~gradcheck_kit.sandbox.box.Sandbox` that gives each exercise a fresh worker and its own limit.

    The worker is replaced whenever a call is for another exercise than the last,
    so nothing one exercise's code leaves behind (patched modules, changed
    settings) reaches the next; a call that hangs or crashes takes its worker with
    it, and the next call gets a fresh one. Once a *check* (one graded call of an
    exercise, whatever configuration hypothesis draws for it) has timed out or
    crashed, or could not find or import the student's code, its later calls fail
    at once with the same outcome instead of being run again: a hang costs one
    time limit, not one per configuration. Other checks, of the same exercise
    too, are still run.

    Args:
        sandbox: the sandbox whose worker is used.
        limits: seconds per call, by exercise key (``"ex2"``).
        default: seconds per call for exercises not in ``limits``.
        compiling: the exercises whose calls on CUDA may start processes: Triton (exercise 7)
            compiles a kernel by running ``ptxas`` (and a C compiler, once). Any other call
            that starts a process fails.
    """

    # Outcomes that every later call of the check would repeat, or that cost a time limit or a new worker each.
    _FATAL = ("timeout", "crashed", "import_error", "missing_function")

    def __init__(
        self, sandbox: Sandbox, limits: Mapping[str, float], default: float, compiling: Collection[str] = ("ex7",)
    ) -> None:
        self.sandbox = sandbox
        self.limits = dict(limits)
        self.default = default
        self.compiling = frozenset(compiling)
        self._current: str | None = None
        self._fatal: dict[tuple[str, str], Outcome] = {}

    def limit(self, exercise: str) -> float:
        """The exercise's configured seconds per call."""
        return self.limits.get(exercise, self.default)

    def call(
        self,
        path: str | Path,
        func_name: str,
        *args: Any,
        exercise: str,
        check: str,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Outcome:
        """Call ``func_name`` from ``path`` like :meth:`Sandbox.call`, as check ``check`` of ``exercise``.

        Args:
            exercise: the exercise the call is graded under; its limit applies.
            check: what the call checks; a hang or crash skips this check's later calls only.
            timeout: seconds for this call, instead of the exercise's limit.
        """
        key = (exercise, check)
        if key in self._fatal:
            first = self._fatal[key]
            message = (
                f"not run again: this check's first call ended with {first.status}, and every configuration "
                f"calls the same code\n{first.message}"
            )
            return dataclasses.replace(first, message=message, duration=0.0, stdout="")
        if self._current != exercise:
            self.sandbox.close()
            self._current = exercise
        if exercise in self.compiling and str(kwargs.get("device", "cpu")).startswith("cuda"):
            kwargs["processes"] = True
        outcome = self.sandbox.call(path, func_name, *args, timeout=timeout or self.limit(exercise), **kwargs)
        if outcome.status in self._FATAL:
            self._fatal[key] = outcome
        return outcome

    def close(self) -> None:
        self.sandbox.close()
