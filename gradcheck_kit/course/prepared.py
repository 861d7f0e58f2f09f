"""A check ready to run: the student's code to call, what it is given, its reference, and how its answer is graded.

Every exercise is graded by the same steps (see :class:`~gradcheck_kit.course.grader.Grader`):
the check is prepared in the grading process, its reference computed there with
autograd and timed; the worker runs the student's code alone, under the guard;
what comes back is graded in the grading process by the check's ``grade``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from gradcheck_kit.report import Report

__all__ = ["NotGradable", "Prepared"]


class NotGradable(Exception):
    """What the student's code returned cannot be graded at all (a list where a dict is asked for, say)."""


@dataclass(frozen=True)
class Prepared:
    """One check of an exercise, ready for the worker.

    Attributes:
        function: the function to call: the student's own (exercises 1-4, 7), or, when
            ``driver`` is set, one of :mod:`gradcheck_kit.course.drivers`, which gets the
            student's loaded files first.
        files: the exercises whose files the call needs, in the driver's argument order;
            ``"layers"`` is exercise 5's file, ``"reference_layers"`` the library's
            (:mod:`gradcheck_kit.makemore.manual_layers`).
        args: the function's arguments, after the student's modules.
        kwargs: its keyword arguments.
        grade: turns the returned value into the table's rows (a report without a title);
            raises :class:`NotGradable`.
        expected: the names and reference values of what is graded, for the rows of a
            call that failed; ``kind`` says what they are.
        reference_seconds: how long the reference took here, in this run.
        driver: whether ``function`` is a driver's rather than the student's.
        kind: what the rows of a failed call hold (see :data:`~gradcheck_kit.report.KINDS`).
        note: said with the table, e.g. that exercise 6 ran on the reference layers.
        partial: for a function that raised, grades what it had computed (see
            :attr:`~gradcheck_kit.sandbox.outcome.Outcome.value`) with the failure's description
            and the source of the line that raised; None: every row of a failed call is the failure.
    """

    function: str
    files: tuple[str, ...]
    grade: Callable[[Any], Report]
    expected: Mapping[str, torch.Tensor]
    reference_seconds: float
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    driver: bool = False
    kind: str = "gradient"
    note: str = ""
    partial: Callable[[Any, str, str], Report] | None = None
