"""Run one check of exercises 5 and 6 inside the sandbox's worker process.

The checks of :mod:`gradcheck_kit.course.layers_grading` build autograd references
next to the student's layers, so they run unguarded and guard the student's
calls themselves. What comes back is plain data: each check as a
``(name, actual, expected, rtol, atol)`` tuple, or why the student's code failed.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import torch

from gradcheck_kit.course import layers_grading
from gradcheck_kit.sandbox.guard import AutogradForbidden

__all__ = ["CHECKS", "run"]

#: The checks a grader may ask for, by the name of their function in layers_grading.
CHECKS = (
    "grade_linear",
    "grade_batchnorm",
    "grade_tanh",
    "grade_mlp",
    "grade_training_steps",
    "grade_calibration",
    "train_to_target",
)


def run(check: str, *paths: str, **options: Any) -> dict[str, Any]:
    """Run ``layers_grading.<check>`` on the student's files at ``paths``.

    Returns:
        ``{"status": "ok", "checks": [...]}`` (or ``"run"`` for :func:`train_to_target`),
        or ``{"status": "not_started" | "forbidden" | "error", "message": ...}``.
    """
    if check not in CHECKS:
        raise ValueError(f"unknown check {check!r}; one of {', '.join(CHECKS)}")
    try:
        result = getattr(layers_grading, check)(*paths, **options)
    except NotImplementedError as exc:
        if _student_line(exc, paths):
            return {"status": "not_started", "message": str(exc)}
        return {"status": "error", "message": _describe(exc, paths)}
    except AutogradForbidden as exc:
        return {"status": "forbidden", "message": str(exc)}
    except Exception as exc:
        return {"status": "error", "message": _describe(exc, paths)}
    if isinstance(result, layers_grading.TargetRun):
        run_data = {"loss": result.loss, "target": result.target, "reached": result.reached}
        return {"status": "ok", "run": {**run_data, "message": result.message}}
    checks = [(c.name, _sendable(c.actual), c.expected.detach(), c.rtol, c.atol) for c in result]
    return {"status": "ok", "checks": checks}


def _sendable(value: Any) -> Any:
    # The student's own objects cannot be unpickled by the grader; their type is what matters.
    if value is None or isinstance(value, (torch.Tensor, int, float)):
        return value.detach() if isinstance(value, torch.Tensor) else value
    return f"<{type(value).__module__}.{type(value).__qualname__} object>"


def _student_line(exc: BaseException, paths: tuple[str, ...]) -> str:
    files = {str(Path(p).resolve()) for p in paths}
    found = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if str(Path(frame.filename).resolve()) in files:
            found = f"at {Path(frame.filename).name}:{frame.lineno}: {(frame.line or '').strip()}"
    return found


def _describe(exc: BaseException, paths: tuple[str, ...]) -> str:
    text = f"{type(exc).__name__}: {exc}"
    where = _student_line(exc, paths)
    return f"{text} {where}" if where else text
