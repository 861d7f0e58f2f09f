"""How close a hand-written gradient must be to autograd's: per dtype, and relative to what it sums.

Right answers written differently differ from autograd by rounding; the tolerance
follows the size of the numbers that rounding acts on. For most gradients that is
the gradient's own largest magnitude. A gradient that sums terms which cancel
(``db1`` through a batchnorm is analytically zero) is rounding noise of the size of
those terms, so :func:`term_scales` works out that size from the recording.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import torch

from gradcheck_kit.comparison import Comparison, compare

if TYPE_CHECKING:
    from gradcheck_kit.recording.recording import Recording

__all__ = [
    "TOLERANCES",
    "graded_compare",
    "grading_tolerances",
    "largest_magnitude",
    "step_branches",
    "term_scales",
]

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
    """Compare ``actual`` with ``expected`` under :func:`grading_tolerances`."""
    rtol, atol = grading_tolerances(expected, scale)
    return compare(name, actual, expected, rtol=rtol, atol=atol)


def largest_magnitude(tensors: Iterable[torch.Tensor]) -> float:
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
        found = largest_magnitude(step_branches(name, recording, upstream, loss_name, loss).values())
        for use in recording.consumers(name):
            g = upstream.get(use)
            if g is None or use == loss_name:
                continue
            found = max(found, largest_magnitude([g]))
            if largest_magnitude([g]) < _NOISE * scale(use):
                found = max(found, scale(use))
        return found

    return scale


def step_branches(
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
