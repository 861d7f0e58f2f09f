"""Name the common backprop mistakes from what a wrong gradient looks like.

Each check compares the student's gradient with a transformed reference: the
reference times a telling constant (1/n, n/(n-1), 2, -1), transposed, with one
branch of a tensor used twice left out, or with repeated indices overwritten
instead of accumulated. The first transformation that explains the student's
values is the diagnosis.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

__all__ = ["Mistake", "close", "diagnose", "factor_name", "fit_factor"]


def close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-3) -> bool:
    """Whether ``a`` matches ``b`` to ``rel`` of b's largest magnitude (a loose, scale-aware test)."""
    if a.shape != b.shape:
        return False
    a, b = a.detach().double(), b.detach().double().to(a.device)
    scale = b.abs().max().item() if b.numel() else 0.0
    if scale == 0.0:
        return bool(a.abs().max().item() == 0.0) if a.numel() else True
    return bool(torch.isfinite(a).all() and (a - b).abs().max().item() <= rel * scale)


def fit_factor(actual: torch.Tensor, expected: torch.Tensor) -> float | None:
    """The constant c with actual ≈ c * expected, when one explains actual; else None."""
    if actual.shape != expected.shape or not expected.numel():
        return None
    a, e = actual.detach().double(), expected.detach().double().to(actual.device)
    denominator = (e * e).sum().item()
    if denominator == 0.0 or not torch.isfinite(a).all():
        return None
    c = (a * e).sum().item() / denominator
    if not close(a, c * e):
        return None
    return c


def factor_name(c: float, n: int | None) -> str | None:
    """Name a constant factor the way a student would have written it, if it is a telling one."""
    candidates: dict[str, float] = {"-1 (the sign is flipped)": -1.0, "2": 2.0, "1/2": 0.5, "-2": -2.0, "0": 0.0}
    if n:
        candidates.update(
            {
                f"n = {n}": float(n),
                f"1/n = 1/{n}": 1.0 / n,
                f"n/(n-1) = {n}/{n - 1}": n / (n - 1),
                f"(n-1)/n = {n - 1}/{n}": (n - 1) / n,
                f"n-1 = {n - 1}": float(n - 1),
                f"1/(n-1) = 1/{n - 1}": 1.0 / (n - 1),
                f"-n = -{n}": -float(n),
                f"-1/n = -1/{n}": -1.0 / n,
            }
        )
    for label, value in candidates.items():
        if abs(c - value) <= 1e-3 * max(1.0, abs(value)):
            return label
    return None


@dataclass(frozen=True)
class Mistake:
    """A known wrong way to compute a gradient, and what to tell the student who made it.

    Attributes:
        key: a short identifier (``"biased-variance"``), used to look up a hint.
        message: what went wrong, in the student's terms.
        compute: builds the wrong gradient from the exercise's inputs.
    """

    key: str
    message: str
    compute: Callable[[], torch.Tensor]


def diagnose(
    actual: object,
    expected: torch.Tensor,
    *,
    n: int | None = None,
    mistakes: Sequence[Mistake] = (),
    branches: Mapping[str, torch.Tensor] | None = None,
) -> str | None:
    """Say which common mistake explains ``actual``, or None when none does.

    Args:
        actual: the student's gradient (already known to be wrong).
        expected: what it should have been (for a step: given the student's own upstream gradients).
        n: the batch size, to name factors such as 1/n and n/(n-1).
        mistakes: exercise-specific wrong variants to try first.
        branches: for a tensor used more than once, the contribution of each use,
            keyed by the tensor that uses it; their sum is ``expected``.

    Returns:
        A one-sentence diagnosis, or None.
    """
    if not isinstance(actual, torch.Tensor):
        return None
    if actual.dim() == 2 and expected.dim() == 2 and actual.shape == expected.T.shape:
        if close(actual.T, expected):
            return "it is the transpose of the right gradient: swap the order of the matmul or drop a .T"
    if actual.shape != expected.shape:
        return None
    if not torch.isfinite(actual).all():
        return None
    for mistake in mistakes:
        try:
            wrong = mistake.compute()
        except Exception:  # a variant that cannot be built for these shapes explains nothing
            continue
        if wrong.shape == actual.shape and close(actual, wrong) and not close(wrong, expected):
            return mistake.message
    if branches and len(branches) > 1:
        used = ", ".join(f"'{name}'" for name in branches)
        for name, branch in branches.items():
            others = sum(g for other, g in branches.items() if other != name)
            if not isinstance(others, torch.Tensor):
                continue
            if close(actual, others):
                return (
                    f"the contribution through '{name}' is missing: this tensor is used by {used}, "
                    "and its gradient is the sum over every use (accumulate with +=)"
                )
            c = fit_factor(actual - others, branch)
            if c is not None and not close(c * branch, branch):
                label = factor_name(c, n) or f"{c:.4g}"
                return f"the contribution through '{name}' is off by a constant factor of {label}; the others are right"
    c = fit_factor(actual, expected)
    if c is not None:
        label = factor_name(c, n)
        if label is not None:
            return f"off by a constant factor of {label}"
        return f"off by a constant factor of {c:.4g}"
    return None
