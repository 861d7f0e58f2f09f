"""Grade hand-written gradients against a recorded forward pass, one backward step at a time.

Two questions are asked of every gradient:

1. Does it match autograd's total gradient? Then it passes.
2. If not, is the student's *own step* right? The step is replayed from the
   recording (the local vector-Jacobian product of every tensor that uses this
   one) on the student's own upstream gradients. When that matches, the error
   was made further up, the tensor passes as "inherited", and only the first
   wrong step costs points: no double penalty.

How close "matches" must be is :mod:`gradcheck_kit.grading.tolerances`; which
mistake a wrong gradient shows is :mod:`gradcheck_kit.grading.detectors`. A wrong
row carries the detector's :class:`~gradcheck_kit.report.Diagnosis` when one
recognised the mistake, and says that none did otherwise; the hint travels apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from gradcheck_kit.comparison import Comparison, compare
from gradcheck_kit.grading.detectors import diagnose
from gradcheck_kit.grading.mistakes import Mistake
from gradcheck_kit.grading.tolerances import (
    TOLERANCES,
    graded_compare,
    grading_tolerances,
    largest_magnitude,
    step_branches,
    term_scales,
)
from gradcheck_kit.report import ERROR, EXACT, INHERITED, NO_DIAGNOSIS, NOT_STARTED, OK, UNCHECKED, WRONG, Row

if TYPE_CHECKING:
    # Only the type: the recording's own check() grades with this module.
    from gradcheck_kit.recording.recording import Recording

__all__ = ["TOLERANCES", "grade_gradient", "grade_steps", "grading_tolerances", "row_for_error", "term_scales"]

_STRUCTURAL = ("type", "dtype", "device", "nonfinite")


def grade_gradient(
    name: str,
    actual: object,
    expected: torch.Tensor,
    *,
    n: int | None = None,
    mistakes: Sequence[Mistake] = (),
    hint: str = "",
    scale: float = 0.0,
    terms: Mapping[str, torch.Tensor] | None = None,
    factors: Mapping[str, torch.Tensor] | None = None,
) -> Row:
    """Grade a single gradient (exercises 2-4): verdict, and a diagnosis when it is wrong.

    ``scale`` is the size of the terms the gradient is a sum of, when larger than its own
    (see :func:`term_scales`); ``terms`` and ``factors`` are handed to
    :func:`~gradcheck_kit.grading.detectors.diagnose`.
    """
    c = graded_compare(name, actual, expected, scale)
    return _verdict(c, actual, expected, n=n, mistakes=mistakes, hint=hint, terms=terms, factors=factors, scale=scale)


def _verdict(
    c: Comparison,
    actual: object,
    expected: torch.Tensor,
    *,
    n: int | None,
    hint: str = "",
    **evidence: Any,
) -> Row:
    """The row of one gradient: its verdict, and when it is wrong, the diagnosis or that there is none."""
    if c.problem == "missing":
        return Row(c, NOT_STARTED, "no gradient yet")
    if c.approximate:
        return Row(c, EXACT if c.exact else OK)
    if c.problem in _STRUCTURAL:
        return Row(c, WRONG, " ".join(c.message.split("\n")))
    found = diagnose(actual, expected, n=n, name=c.name, **evidence)
    if c.problem == "shape":
        # The comparison's own guess from the shapes alone gives way to what the values show.
        said = c.message.split("\n")[:1] if found else c.message.split("\n")
        return Row(c, WRONG, " ".join(said), diagnosis=found, hint=hint)
    return Row(c, WRONG, "" if found else NO_DIAGNOSIS, diagnosis=found, hint=hint)


def _join(*parts: str) -> str:
    return " — ".join(p for p in parts if p)


def _usable(value: object, like: torch.Tensor) -> torch.Tensor | None:
    """The student's gradient as an upstream for the next step, when it can serve as one (NaN included).

    A gradient wrong only in its shape (``(32,)`` where ``(32, 1)`` belongs: the same
    elements, size-1 dimensions added or dropped) serves with its values reshaped, so
    the steps below it are checked on what the student computed: one mistake, one charge.
    """
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        return None
    if value.shape != like.shape:
        if [s for s in value.shape if s != 1] != [s for s in like.shape if s != 1]:
            return None
        value = value.reshape(like.shape)
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
    # What the detectors may name: the forward pass's tensors, and the student's other gradients.
    factors = {k: t.detach() for k, t in recording.tensors.items() if k != loss_name}
    others = {k: (student.get(k), ref) for k, ref in reference.items()}
    # The student's gradients of the wrong shape, as they are: a right step written by hand computes
    # from them with broadcasting, which is replayed below, so that such a step is inherited, not charged.
    misshapen = {
        k: v.detach().to(device=ref.device, dtype=ref.dtype)
        for k, ref in reference.items()
        if isinstance(v := student.get(k), torch.Tensor) and v.is_floating_point() and v.shape != ref.shape
    }

    rows: list[Row] = []
    first_wrong: str | None = None
    for name, expected in reference.items():
        actual = student.get(name)
        consumers = recording.consumers(name)
        # The reference's terms set the scale: a student's huge upstream must not widen the tolerance.
        c = graded_compare(name, actual, expected, scale(name))
        # A gradient aliased with another is one set to its neighbour's in the chain (dhprebn = dbndiff).
        neighbours = {*consumers, *recording.inputs.get(name, ())}
        evidence: dict[str, Any] = {
            "mistakes": mistakes.get(name, ()),
            "factors": factors,
            "others": {k: v for k, v in others.items() if k in neighbours},
            "scale": scale(name),
        }
        branches = step_branches(name, recording, upstream, loss_name, loss) if not c.approximate else {}
        wrong_shapes = [u for u in consumers if u in misshapen]
        if c.problem in ("mismatch", "shape") and branches and wrong_shapes:
            replayed = _broadcast_step(name, recording, branches, misshapen)
            if replayed is not None and _matches(name, actual, replayed, scale(name)):
                shapes = ", ".join(
                    f"d{u} has shape {tuple(misshapen[u].shape)}, not {tuple(reference[u].shape)}" for u in wrong_shapes
                )
                rows.append(Row(c, INHERITED, f"your step is right; the error is upstream ({shapes})"))
                continue
        if c.problem in ("mismatch", "nonfinite") and branches:
            step = sum(branches.values())
            assert isinstance(step, torch.Tensor)
            upstream_scale = largest_magnitude(upstream[u] for u in consumers if u in upstream)
            own = _own_step(name, actual, step, expected, upstream_scale)
            if own is None:
                rows.append(Row(c, UNCHECKED, _unchecked(consumers, upstream, reference, first_wrong)))
                continue
            if own:
                source = f" (d{first_wrong})" if first_wrong else ""
                where = "the NaN/Inf values come from upstream" if c.problem == "nonfinite" else "the error is upstream"
                rows.append(Row(c, INHERITED, f"your step is right; {where}{source}"))
                continue
            row = _verdict(c, actual, step, n=n, branches=branches, hint=hints.get(name, ""), **evidence)
        else:
            row = _verdict(c, actual, expected, n=n, hint=hints.get(name, ""), **evidence)
        if row.verdict == WRONG and first_wrong is None:
            first_wrong = name
            row = replace(row, note=_join("first wrong step", row.note))
        rows.append(row)
    return rows


def _broadcast_step(
    name: str, recording: Recording, branches: Mapping[str, torch.Tensor], misshapen: Mapping[str, torch.Tensor]
) -> torch.Tensor | None:
    """The step that produces ``name``'s gradient, as a right step computes it from upstreams of the wrong shape.

    A right step written by hand broadcasts whatever shape its upstream has: through an
    elementwise use, ``local_derivative * g``; through a sum, ``g`` spread over what was
    summed. Uses of another kind cannot be replayed on a misshapen upstream: None.
    """
    total: torch.Tensor | None = None
    for use, branch in branches.items():
        part = branch
        if use in misshapen:
            g = misshapen[use]
            like = recording[use]
            probe = torch.linspace(1.0, 2.0, like.numel(), dtype=like.dtype, device=like.device).reshape(like.shape)
            derivative = recording.local_vjp(use, torch.ones_like(like)).get(name)
            probed = recording.local_vjp(use, probe).get(name)
            if derivative is None or probed is None:
                return None
            try:
                if derivative.shape == like.shape and torch.allclose(probed, derivative * probe):
                    part = derivative * g  # elementwise: the local derivative times the upstream, broadcast
                elif torch.allclose(probed, torch.broadcast_to(probe, probed.shape)):
                    part = torch.broadcast_to(g, probed.shape)  # a sum: the upstream spread back
                else:
                    return None
                total = part if total is None else total + part
            except RuntimeError:  # shapes that do not broadcast: no right step computes anything from them
                return None
        else:
            total = part if total is None else total + part
    return total


def _matches(name: str, actual: object, replayed: torch.Tensor, scale: float) -> bool:
    """Whether ``actual`` has the replayed step's shape and values, to the grading tolerance."""
    if not isinstance(actual, torch.Tensor) or actual.shape != replayed.shape or not actual.is_floating_point():
        return False
    actual = actual.detach().to(device=replayed.device, dtype=replayed.dtype)
    return graded_compare(name, actual, replayed, scale).approximate


def _unchecked(
    consumers: Sequence[str],
    upstream: Mapping[str, torch.Tensor],
    reference: Mapping[str, torch.Tensor],
    first_wrong: str | None,
) -> str:
    """Why a step cannot be checked, naming the student's upstream gradients that are all zeros."""
    zeros = [u for u in consumers if u in reference and u in upstream and not bool(upstream[u].any())]
    source = first_wrong or (zeros[0] if zeros else None)
    text = f"your upstream gradients{f' (d{source})' if source else ''} make this step zero or NaN everywhere, "
    text += "so no answer would show it right or wrong"
    if zeros:
        named = ", ".join(f"d{u}" for u in zeros)
        text += f", and {named} {'is' if len(zeros) == 1 else 'are'} all zeros (a placeholder not written yet?)"
    return text + "; it is checked once they are fixed"


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
