"""Known wrong gradients, and the fits that tell a wrong gradient from a right one.

A :class:`Mistake` builds the gradient a known wrong formula gives (the biased
variance, repeated indices overwritten instead of accumulated); :func:`close`,
:func:`fit_factor` and :func:`factor_name` are what the detectors of
:mod:`gradcheck_kit.grading.detectors` compare and name values with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["Mistake", "close", "factor_name", "fit_factor"]


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
