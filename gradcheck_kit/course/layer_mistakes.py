"""What the common mistakes of exercises 5 and 6 look like in the values a driver sends back.

Each detector is given the student's value, the right one, and the inputs the
grading process drew, builds what a known wrong version would have produced
(the batchnorm backward with the biased variance, the Tanh derivative taken
from the input, the running mean moved 90% of the way instead of 10%...) and
says which one the student's value is. A detector only ever names a mistake:
the verdict is the comparison's, made before any detector runs. A value is
recognised as a wrong version when it lies within a tenth of the gap between
the wrong and the right value from the wrong one: rounding cannot make a right
answer look like a mistake, however small the gap (the biased variance of the
28800 training contexts differs from the right one by 3.5e-5 of itself, below
the float32 tolerance).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from gradcheck_kit.grading.mistakes import fit_factor
from gradcheck_kit.report import Diagnosis

__all__ = [
    "Version",
    "accumulated",
    "batchnorm_dx",
    "batchnorm_dx_versions",
    "batchnorm_out",
    "calibrated_variance",
    "eval_with_changed_statistics",
    "explains",
    "left_in_training",
    "running_statistic",
    "tanh_dx",
    "tanh_dx_versions",
    "unchanged",
]

#: A wrong version explains a value within this fraction of the wrong-to-right gap from it.
_CLOSER = 0.1


#: A known wrong version of a value, and the diagnosis of a value that is it.
Version = tuple[torch.Tensor, Diagnosis]


def explains(actual: object, wrong: torch.Tensor, right: torch.Tensor) -> bool:
    """Whether ``actual`` is the ``wrong`` version rather than the ``right`` one: within a tenth of their gap of it."""
    if not isinstance(actual, torch.Tensor) or actual.shape != wrong.shape or wrong.shape != right.shape:
        return False
    if not actual.is_floating_point() or not torch.isfinite(actual).all():
        return False
    a, w, r = (t.detach().double().cpu() for t in (actual, wrong, right))
    gap = (w - r).abs().max().item() if w.numel() else 0.0
    return gap > 0.0 and (a - w).abs().max().item() <= _CLOSER * gap


def _first(actual: object, right: torch.Tensor, candidates: Sequence[Version]) -> Diagnosis | None:
    return next((d for wrong, d in candidates if explains(actual, wrong, right)), None)


# ----------------------------------------------------------------------------
# Exercise 5: the layers


def _normalised(
    x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    var_inv = (var + eps) ** -0.5
    return (x - mean) * var_inv, var_inv


def _batch_backward(dxhat: torch.Tensor, xhat: torch.Tensor, var_inv: torch.Tensor, bessel: float) -> torch.Tensor:
    """dx through the batch mean and variance; ``bessel`` is n/(n-1) for the notebook's variance, 1 without it."""
    n = dxhat.shape[0]
    return var_inv / n * (n * dxhat - dxhat.sum(0) - bessel * xhat * (dxhat * xhat).sum(0))


def batchnorm_dx(actual: object, right: torch.Tensor, **inputs: Any) -> Diagnosis | None:
    """``BatchNorm1d.backward``'s dx: see :func:`batchnorm_dx_versions` for ``inputs``."""
    return _first(actual, right, batchnorm_dx_versions(**inputs))


def batchnorm_dx_versions(
    *,
    x: torch.Tensor,
    gamma: torch.Tensor,
    dout: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    training: bool,
    eps: float,
) -> list[Version]:
    """Wrong versions of ``BatchNorm1d.backward``'s dx: the biased variance, or in eval mode the batch formula."""
    n = x.shape[0]
    dxhat = gamma * dout
    batch_mean, unbiased, biased = x.mean(0), x.var(0, unbiased=True), x.var(0, unbiased=False)
    if training:
        xhat, var_inv = _normalised(x, batch_mean, unbiased, eps)
        xhat_b, var_inv_b = _normalised(x, batch_mean, biased, eps)
        return [
            (_batch_backward(dxhat, xhat, var_inv, 1.0), Diagnosis(
                "the backward pass used the biased variance, divided by n instead of n-1",
                f"dx matches the batchnorm backward whose variance term lacks the factor n/(n-1) = {n}/{n - 1}, "
                "while the forward pass divides by n-1")),
            (_batch_backward(dxhat, xhat_b, var_inv_b, 1.0), Diagnosis(
                "the layer used the biased variance, divided by n instead of n-1",
                "dx is the gradient of a batchnorm normalised with x.var(0, unbiased=False); "
                "the notebook's divides by n-1")),
        ]  # fmt: skip
    xhat, var_inv = _normalised(x, running_mean, running_var, eps)
    xhat_batch, var_inv_batch = _normalised(x, batch_mean, unbiased, eps)
    evidence = "in eval mode they are constants, so dx = gamma * dout / sqrt(running_var + eps)"
    return [
        (_batch_backward(dxhat, xhat, var_inv, n / (n - 1)), Diagnosis(
            "the eval-mode backward used the training-mode formula, with the paths through the batch statistics",
            f"dx matches that formula applied to the running statistics; {evidence}")),
        (_batch_backward(dxhat, xhat_batch, var_inv_batch, n / (n - 1)), Diagnosis(
            "the eval-mode backward used the batch statistics",
            f"dx matches the training-mode backward of this batch; {evidence}")),
    ]  # fmt: skip


def batchnorm_out(
    actual: object,
    right: torch.Tensor,
    *,
    x: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    training: bool,
    eps: float,
) -> Diagnosis | None:
    """``BatchNorm1d``'s output: the biased variance in training mode, the batch statistics in eval mode."""
    mean = x.mean(0)
    if training:
        xhat, _ = _normalised(x, mean, x.var(0, unbiased=False), eps)
        found = Diagnosis(
            "the forward pass normalised with the biased variance, divided by n instead of n-1",
            "out equals gamma * (x - mean) / sqrt(x.var(0, unbiased=False) + eps) + beta",
        )
    else:
        xhat, _ = _normalised(x, mean, x.var(0, unbiased=True), eps)
        found = Diagnosis(
            "the eval-mode forward pass normalised with the batch's mean and variance",
            "out equals the training-mode output of this batch; in eval mode it uses running_mean and running_var",
        )
    return _first(actual, right, [(gamma * xhat + beta, found)])


def eval_with_changed_statistics(
    name: str,
    actual: object,
    right: torch.Tensor,
    *,
    x: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    dout: torch.Tensor,
    running_mean: object,
    running_var: object,
    eps: float,
) -> Diagnosis | None:
    """An eval-mode ``out``, ``dx`` or ``dgamma`` computed with the running statistics the layer changed.

    ``running_mean`` and ``running_var`` are the student's buffers after the forward pass.
    """
    stats = (running_mean, running_var)
    if not all(isinstance(t, torch.Tensor) and t.shape == gamma.shape and t.is_floating_point() for t in stats):
        return None
    mean, var = (t.detach().to(gamma.device, gamma.dtype) for t in stats)  # type: ignore[union-attr]
    xhat, var_inv = _normalised(x, mean, var, eps)
    yours = {"out": gamma * xhat + beta, "x": gamma * dout * var_inv, "gamma": (dout * xhat).sum(0)}
    if name not in yours:
        return None
    label = "out" if name == "out" else f"d{name}"
    return _first(actual, right, [(yours[name], Diagnosis(
        "the running statistics changed in eval mode before the batch was normalised",
        f"{label} is what your updated running_mean and running_var give; in eval mode they stay as they are",
    ))])  # fmt: skip


def _fraction(f: float) -> str:
    return f"{100 * f:.0f}%"


def running_statistic(
    name: str,
    actual: object,
    right: torch.Tensor,
    *,
    before: torch.Tensor,
    x: torch.Tensor,
    momentum: float,
    training: bool,
) -> Diagnosis | None:
    """A running buffer after one forward pass: momentum swapped or replaced, the biased variance, eval updates.

    Args:
        name: ``running_mean`` or ``running_var`` (the buffer's attribute, maybe prefixed by its layer).
        actual: the student's buffer after the forward pass.
        right: what it should be.
        before: the buffer before the forward pass.
        x: the batch the layer normalised.
        momentum: the layer's momentum (0.1).
        training: whether the forward pass was in training mode.
    """
    if not isinstance(actual, torch.Tensor) or actual.shape != before.shape or not actual.is_floating_point():
        return None
    if name.endswith("running_mean"):
        batches = [(x.mean(0), "the batch mean", "")]
    else:
        batches = [
            (x.var(0, unbiased=True), "the batch variance", ""),
            (
                x.var(0, unbiased=False),
                "the biased batch variance, divided by n instead of n-1,",
                "x.var(0, unbiased=False)",
            ),
        ]
    actual = actual.detach().to(before.device, before.dtype)
    if not training:
        batch, what, _ = batches[0]
        f = fit_factor(actual - before, batch - before)
        moved = f is not None and explains(actual, before + f * (batch - before), right)
        seen = f"{name} moved {_fraction(f)} of the way to {what}" if moved else f"{name} is not the value it was given"
        return Diagnosis("the running statistics changed in eval mode", f"{seen}; in eval mode they stay as they are")
    if torch.equal(actual, before):
        return Diagnosis(
            f"{name} did not change", f"a training-mode forward pass moves it {_fraction(momentum)} of the way to "
            f"{batches[0][1]}; it is still the value the layer was given"
        )  # fmt: skip
    for batch, what, formula in batches:
        f = fit_factor(actual - before, batch - before)
        if f is None or not explains(actual, before + f * (batch - before), right):
            continue
        if abs(f - momentum) < 1e-3:
            if not formula:
                return None  # the right update: a mismatch the detectors cannot name
            return Diagnosis(
                f"{name} is updated with {what}".rstrip(","),
                f"it equals (1 - momentum) * {name.rsplit('.', 1)[-1]} + momentum * {formula}",
            )
        biased = " and the biased variance" if formula else ""
        if abs(f - (1 - momentum)) < 1e-3:
            return Diagnosis(
                f"momentum swapped{biased}",
                f"{name} moved {_fraction(f)} of the way to {what} instead of {_fraction(momentum)}: "
                "the update is (1 - momentum) * running + momentum * batch",
            )
        if abs(f - 1) < 1e-3:
            return Diagnosis(f"{name} is replaced by {what}", f"it should move {_fraction(momentum)} of the way to it")
        return Diagnosis(
            f"{name} moved {_fraction(f)} of the way to {what}".rstrip(","),
            f"with momentum {momentum:g} it moves {_fraction(momentum)} of the way",
        )
    return None


def tanh_dx(actual: object, right: torch.Tensor, *, x: torch.Tensor, dout: torch.Tensor) -> Diagnosis | None:
    """``Tanh.backward``'s dx taken from the layer's input instead of its output."""
    return _first(actual, right, tanh_dx_versions(x=x, dout=dout))


def tanh_dx_versions(*, x: torch.Tensor, dout: torch.Tensor) -> list[Version]:
    """The wrong version of ``Tanh.backward``'s dx: the derivative taken from the input."""
    return [(dout * (1 - x**2), Diagnosis(
        "Tanh.backward used the input",
        "dx equals dout * (1 - x**2); the derivative is 1 - tanh(x)**2, so dout * (1 - out**2) is expected",
    ))]  # fmt: skip


def accumulated(name: str, first: object, again: object, right: torch.Tensor) -> Diagnosis | None:
    """A parameter's gradient on a second backward call with the same input, when it differs from the first."""
    if not isinstance(again, torch.Tensor) or not isinstance(first, torch.Tensor) or first.shape != right.shape:
        return None
    first = first.detach().to(right.device, right.dtype)
    if again.shape == first.shape and torch.equal(again.detach().to(first.device, first.dtype), first):
        return None  # the same on both calls: whatever is wrong, it is not carried over
    if explains(again, 2 * first, first):
        return Diagnosis(
            f"{name} is accumulated (+=) and never reset",
            "it doubled on a second backward call with the same input; each call must set it afresh",
        )
    return Diagnosis(
        f"the gradient {name} changed on a second backward call with the same input",
        "the layer carries state from one call into the next",
    )


# ----------------------------------------------------------------------------
# Exercise 6: training and calibration


def unchanged(
    name: str, actual: object, before: torch.Tensor, right: torch.Tensor, steps: int, same_tensor: bool = True
) -> Diagnosis | None:
    """A parameter that training left exactly as it was given.

    Args:
        name: the parameter (``C``, ``layers[0].weight``).
        actual: its value after training.
        before: its value before.
        right: its value after the reference's training.
        steps: how many steps were taken.
        same_tensor: whether the layer still holds the tensor it was given (the driver saw it by identity).
    """
    if not isinstance(actual, torch.Tensor) or actual.shape != before.shape or torch.equal(before, right):
        return None
    if not torch.equal(actual.detach().to(before.device, before.dtype), before):
        return None
    held = "the same tensor, with" if same_tensor else "another tensor, with"
    p, grad = ("C", "dC") if name == "C" else ("p", "grad")
    return Diagnosis(
        f"{name} did not change in {steps} steps",
        f"after them it is {held} the values it was given; {p} -= lr * {grad} changes the tensor in place, "
        f"{p} = {p} - lr * {grad} makes a new one and rebinds only the name {p}",
    )


def calibrated_variance(
    name: str, actual: object, unbiased: torch.Tensor, biased: torch.Tensor, rows: int
) -> Diagnosis | None:
    """A calibrated running variance that is the biased variance of the layer's input, of ``rows`` rows."""
    if not explains(actual, biased, unbiased):
        return None
    return Diagnosis(
        f"{name} is the biased variance, divided by N instead of N-1",
        f"it equals the expected one times (N-1)/N, N = {rows}",
    )


def left_in_training(flags: Sequence[object]) -> Diagnosis | None:
    """Layers whose ``training`` flag is not False after calibration."""
    still = [i for i, flag in enumerate(flags) if flag is not False]
    if not still:
        return None
    return Diagnosis(
        "calibrate left the layers in training mode",
        f"{len(still)} of {len(flags)} batchnorm layers do not have training = False after it; "
        "it must leave every batchnorm in eval mode",
    )
