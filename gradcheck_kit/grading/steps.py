"""Grade hand-written gradients against a recorded forward pass, one backward step at a time.

Two questions are asked of every gradient:

1. Does it match autograd's total gradient? Then it passes.
2. If not, is the student's *own step* right? The step is replayed from the
   recording (the local vector-Jacobian product of every tensor that uses this
   one) on the student's own upstream gradients. When that matches, the error
   was made further up, the tensor passes as "inherited", and only the first
   wrong step costs points: no double penalty.

How close "matches" must be is :mod:`gradcheck_kit.grading.tolerances`; what a
wrong gradient looks like is :mod:`gradcheck_kit.grading.mistakes`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch

from gradcheck_kit.comparison import Comparison, compare
from gradcheck_kit.grading.mistakes import Mistake, diagnose
from gradcheck_kit.grading.tolerances import (
    TOLERANCES,
    graded_compare,
    grading_tolerances,
    largest_magnitude,
    step_branches,
    term_scales,
)
from gradcheck_kit.report import ERROR, EXACT, INHERITED, NOT_STARTED, OK, WRONG, Row

if TYPE_CHECKING:
    # Only the type: the recording's own check() grades with this module.
    from gradcheck_kit.recording.recording import Recording

__all__ = ["TOLERANCES", "grade_gradient", "grade_steps", "grading_tolerances", "row_for_error", "term_scales"]

_SHAPE_LIKE = ("type", "shape", "dtype", "device", "nonfinite")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def grade_gradient(
    name: str,
    actual: object,
    expected: torch.Tensor,
    *,
    n: int | None = None,
    mistakes: Sequence[Mistake] = (),
    hint: str = "",
    scale: float = 0.0,
) -> Row:
    """Grade a single gradient (exercises 2-4): verdict, and a diagnosis when it is wrong.

    ``scale`` is the size of the terms the gradient is a sum of, when larger than its own
    (see :func:`term_scales`).
    """
    c = graded_compare(name, actual, expected, scale)
    return _verdict(c, actual, expected, n=n, mistakes=mistakes, hint=hint)


def _verdict(
    c: Comparison,
    actual: object,
    expected: torch.Tensor,
    *,
    n: int | None,
    mistakes: Sequence[Mistake] = (),
    branches: Mapping[str, torch.Tensor] | None = None,
    hint: str = "",
) -> Row:
    if c.problem == "missing":
        return Row(c, NOT_STARTED, "no gradient yet")
    if c.approximate:
        return Row(c, EXACT if c.exact else OK)
    if c.problem in _SHAPE_LIKE:
        found = diagnose(actual, expected, n=n) if c.problem == "shape" else None
        return Row(c, WRONG, found or " ".join(c.message.split("\n")))
    found = diagnose(actual, expected, n=n, mistakes=mistakes, branches=branches)
    if found in {m.message for m in mistakes}:
        return Row(c, WRONG, found)  # a recognised mistake says all there is to say
    return Row(c, WRONG, _join(found or "", hint) or _first_line(c.message))


def _join(*parts: str) -> str:
    return " — ".join(p for p in parts if p)


def _usable(value: object, like: torch.Tensor) -> torch.Tensor | None:
    """The student's gradient as an upstream for the next step, when it can serve as one (NaN included)."""
    if not isinstance(value, torch.Tensor) or value.shape != like.shape or not value.is_floating_point():
        return None
    return value.detach().to(device=like.device, dtype=like.dtype)


def grade_steps(
    student: Mapping[str, object],
    recording: Recording,
    loss: torch.Tensor,
    reference: Mapping[str, torch.Tensor],
    *,
    n: int | None = None,
    hints: Mapping[str, str] | None = None,
    mistakes: Mapping[str, Sequence[Mistake]] | None = None,
) -> list[Row]:
    """Grade every gradient in ``reference`` (in its order) with the no-double-penalty rule.

    A step is only credited as inherited where it can be checked: when the
    student's upstream gradients make the step zero or NaN everywhere (a
    placeholder of zeros upstream, say), any output of zeros or NaN would
    "match", so the gradient must match the reference itself.

    Args:
        student: the student's gradients by name; missing or None means not started.
        recording: the recorded forward pass the references come from.
        loss: the recorded scalar the gradients are of.
        reference: autograd's gradients by name, in backward order.
        n: the batch size, to name factors such as 1/n in diagnoses.
        hints: a hint per tensor name, shown when that tensor's own step is wrong.
        mistakes: known wrong variants per tensor name, tried first when diagnosing.

    Returns:
        One :class:`Row` per name in ``reference``.
    """
    hints = hints or {}
    mistakes = mistakes or {}
    every = recording.grads(loss)
    upstream: dict[str, torch.Tensor] = {}
    for name, ref in every.items():
        if ref is not None:
            upstream[name] = _usable(student.get(name), ref) if name in reference else None  # type: ignore[assignment]
            if upstream[name] is None:
                upstream[name] = ref
    loss_name = next((k for k, t in recording.intermediates.items() if t is loss), None)
    scale = term_scales(recording, loss, every)

    rows: list[Row] = []
    first_wrong: str | None = None
    for name, expected in reference.items():
        actual = student.get(name)
        consumers = recording.consumers(name)
        # The reference's terms set the scale: a student's huge upstream must not widen the tolerance.
        c = graded_compare(name, actual, expected, scale(name))
        known = mistakes.get(name, ())
        branches = step_branches(name, recording, upstream, loss_name, loss) if not c.approximate else {}
        if c.problem in ("mismatch", "nonfinite") and branches:
            step = sum(branches.values())
            assert isinstance(step, torch.Tensor)
            source = f" (d{first_wrong})" if first_wrong else ""
            upstream_scale = largest_magnitude(upstream[u] for u in consumers if u in upstream)
            own = _own_step(name, actual, step, expected, upstream_scale)
            if own is None:
                rows.append(Row(c, WRONG, f"cannot be checked: your upstream gradients{source} make this step "
                                          "zero or NaN everywhere; fix them first"))  # fmt: skip
                continue
            if own:
                where = "the NaN/Inf values come from upstream" if c.problem == "nonfinite" else "the error is upstream"
                rows.append(Row(c, INHERITED, f"your step is right; {where}{source}"))
                continue
            row = _verdict(c, actual, step, n=n, mistakes=known, branches=branches, hint=hints.get(name, ""))
        else:
            row = _verdict(c, actual, expected, n=n, mistakes=known, hint=hints.get(name, ""))
        if row.verdict == WRONG and first_wrong is None:
            first_wrong = name
            row = Row(row.comparison, row.verdict, _join("first wrong step", row.note))
        rows.append(row)
    return rows


def _own_step(name: str, actual: object, step: torch.Tensor, expected: torch.Tensor, scale: float) -> bool | None:
    """Whether ``actual`` is the student's upstream taken through this step's true local derivative.

    Returns None when that cannot be told: the step is zero or NaN everywhere
    while the gradient itself is not zero, so no output would show the step wrong.
    """
    finite = torch.isfinite(step)
    if not bool(step[finite].any()) and bool(expected.any()):
        return None
    if not isinstance(actual, torch.Tensor) or actual.shape != step.shape or not actual.is_floating_point():
        return False
    actual = actual.detach().to(device=step.device, dtype=step.dtype)
    if not torch.equal(torch.isfinite(actual), finite):  # NaN/Inf exactly where the upstream's flow
        return False
    return graded_compare(name, actual[finite], step[finite], scale).approximate


def row_for_error(name: str, expected: torch.Tensor, verdict: str, message: str) -> Row:
    """A row for a gradient that could not be graded because the student's code failed."""
    c = compare(name, None, expected)
    return Row(c, verdict if verdict in (ERROR, NOT_STARTED) else ERROR, message)
