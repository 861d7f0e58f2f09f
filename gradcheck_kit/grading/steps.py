"""Grade hand-written gradients against a recorded forward pass, one backward step at a time.

Two questions are asked of every gradient:

1. Does it match autograd's total gradient? Then it passes.
2. If not, is the student's *own step* right? The step is replayed from the
   recording (the local vector-Jacobian product of every tensor that uses this
   one) on the student's own upstream gradients. When that matches, the error
   was made further up, the tensor passes as "inherited", and only the first
   wrong step costs points: no double penalty.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch

from gradcheck_kit.comparison import Comparison, compare
from gradcheck_kit.grading.mistakes import Mistake, diagnose
from gradcheck_kit.recording.recorder import Recording
from gradcheck_kit.report import ERROR, EXACT, INHERITED, NOT_STARTED, OK, WRONG, Row

__all__ = ["TOLERANCES", "grade_gradient", "grade_steps", "grading_tolerances", "row_for_error", "term_scales"]

#: Per dtype: (rtol, atol relative to the reference's largest magnitude).
#: Right answers written differently differ from autograd by rounding (about
#: 1e-7 of the scale in float32); the common mistakes are off by 1/n, n/(n-1) or
#: a whole term, orders of magnitude beyond these.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float16: (1e-2, 1e-3),
    torch.bfloat16: (5e-2, 1e-2),
    torch.float32: (1e-4, 1e-5),
    torch.float64: (1e-9, 1e-11),
}

_SHAPE_LIKE = ("type", "shape", "dtype", "device", "nonfinite")


def grading_tolerances(expected: torch.Tensor, scale: float = 0.0) -> tuple[float, float]:
    """The ``(rtol, atol)`` a gradient is graded with, by dtype and relative to its scale.

    Args:
        expected: the reference gradient.
        scale: a magnitude the gradient is computed from, when larger than its own. A
            gradient that is a sum of terms that cancel (``db1`` through a batchnorm is
            analytically zero) is rounding noise; it is judged against the size of the
            terms, not of the noise.
    """
    rtol, atol_scale = TOLERANCES.get(expected.dtype, (0.0, 0.0))
    own = expected.detach().abs().max().item() if expected.numel() else 0.0
    tiny = torch.finfo(expected.dtype).tiny if expected.is_floating_point() else 1.0
    return rtol, atol_scale * max(own, scale, tiny)


def graded_compare(name: str, actual: object, expected: torch.Tensor, scale: float = 0.0) -> Comparison:
    rtol, atol = grading_tolerances(expected, scale)
    return compare(name, actual, expected, rtol=rtol, atol=atol)


def _scale(tensors: Iterable[torch.Tensor]) -> float:
    """The largest finite magnitude among ``tensors`` (a student's upstream may hold NaN)."""
    finite = (t.detach()[torch.isfinite(t.detach())] for t in tensors)
    return max((t.abs().max().item() for t in finite if t.numel()), default=0.0)


#: A gradient below this fraction of the terms it sums is mostly cancellation: its
#: rounding error is that of the terms, and so is the error of what is computed from it.
_NOISE = 1e-2


def term_scales(
    recording: Recording, loss: torch.Tensor, grads: Mapping[str, torch.Tensor | None]
) -> Callable[[str], float]:
    """``scale(name)``: the size of the terms that ``name``'s reference gradient is the sum of.

    The terms are each use's gradient and what each use contributes through its
    step; terms that cancel (``db1`` sums ``dhprebn`` over a batch that a
    batchnorm centred) leave rounding noise, which is judged against their size,
    not its own. Where a use's own gradient is such noise (at a batch of two, the
    batchnorm makes ``dhprebn`` noise too), that use's terms count as well.
    Each name's scale is worked out once, whichever name asks for it.
    """
    upstream = {k: v for k, v in grads.items() if v is not None}
    loss_name = next((k for k, t in recording.intermediates.items() if t is loss), None)

    @functools.cache
    def scale(name: str) -> float:
        found = _scale(_step_branches(name, recording, upstream, loss_name, loss).values())
        for use in recording.consumers(name):
            g = upstream.get(use)
            if g is None or use == loss_name:
                continue
            found = max(found, _scale([g]))
            if _scale([g]) < _NOISE * scale(use):
                found = max(found, scale(use))
        return found

    return scale


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
        branches = _step_branches(name, recording, upstream, loss_name, loss) if not c.approximate else {}
        if c.problem in ("mismatch", "nonfinite") and branches:
            step = sum(branches.values())
            assert isinstance(step, torch.Tensor)
            source = f" (d{first_wrong})" if first_wrong else ""
            own = _own_step(name, actual, step, expected, _scale(upstream[u] for u in consumers if u in upstream))
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


def _step_branches(
    name: str,
    recording: Recording,
    upstream: Mapping[str, torch.Tensor],
    loss_name: str | None,
    loss: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """What each use of ``name`` contributes to its gradient, given the upstream gradients."""
    branches: dict[str, torch.Tensor] = {}
    for consumer in recording.consumers(name):
        if not recording.has_local_graph(consumer):
            return {}
        if consumer == loss_name:
            grad_output = torch.ones_like(loss)
        elif consumer in upstream:
            grad_output = upstream[consumer]
        else:
            return {}
        contribution = recording.local_vjp(consumer, grad_output).get(name)
        if contribution is not None:
            branches[consumer] = contribution
    return branches


def row_for_error(name: str, expected: torch.Tensor, verdict: str, message: str) -> Row:
    """A row for a gradient that could not be graded because the student's code failed."""
    c = compare(name, None, expected)
    return Row(c, verdict if verdict in (ERROR, NOT_STARTED) else ERROR, message)
