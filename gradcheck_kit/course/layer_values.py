"""What the checks of exercises 5 and 6 share: their rows, the reference model, and how a check is prepared.

A value the driver sends back becomes a row graded like a gradient and named as
what it is (a forward output, a buffer, a flag, a metric); when it is wrong, a
detector of :mod:`gradcheck_kit.course.layer_mistakes` may name its mistake, and
otherwise the row says none was recognised and carries the exercise's hint.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch

from gradcheck_kit.course.prepared import Prepared
from gradcheck_kit.grading.steps import grade_gradient
from gradcheck_kit.makemore import layers as reference_layers
from gradcheck_kit.makemore.training import MLP, autograd_twin, build_mlp, perturb
from gradcheck_kit.report import NO_DIAGNOSIS, NOT_STARTED, Diagnosis, Report, Row

__all__ = [
    "EPS",
    "MOMENTUM",
    "explained",
    "from_values",
    "graded",
    "layer_attr",
    "layer_states",
    "listed",
    "prepared",
    "reference_model",
    "tensor_list",
    "timed",
    "value_row",
]

EPS = 1e-5
MOMENTUM = 0.1


def prepared(
    driver: str,
    files: tuple[str, ...],
    inputs: Mapping[str, Any],
    rows: Callable[[Any], list[Row]],
    seconds: float,
    note: str = "",
) -> Prepared:
    """A check run by ``driver`` of :mod:`gradcheck_kit.course.drivers`, graded into rows by ``rows``."""
    return Prepared(
        function=driver,
        files=files,
        grade=lambda value: Report("", rows(value if isinstance(value, Mapping) else {})),
        expected={},
        reference_seconds=seconds,
        kwargs=inputs,
        driver=True,
        kind="value",
        note=note,
    )


def value_row(name: str, actual: object, expected: torch.Tensor, kind: str, *, n: int | None = None) -> Row:
    """A forward output, buffer, flag or metric, graded like a gradient and named as what it is."""
    row = grade_gradient(name, actual, expected, n=n)
    note = "no value yet" if row.verdict == NOT_STARTED else row.note
    return replace(row, kind=kind, note=note)


def explained(row: Row, detect: Callable[[], Diagnosis | None] | None = None, hint: str = "") -> Row:
    """``row`` with the mistake ``detect`` recognises in its values, and the hint to show when none is recognised.

    Only a row whose values are off is looked at: a missing value, a wrong shape,
    dtype or device, or NaN already says what it is. A detector of this exercise
    takes the place of the generic one's diagnosis; the verdict is left as it is.
    """
    if row.passed or row.comparison.problem != "mismatch":
        return row
    diagnosis = (detect() if detect is not None else None) or row.diagnosis
    remark = "" if row.note == NO_DIAGNOSIS else row.note
    return replace(row, note=NO_DIAGNOSIS if diagnosis is None else remark, diagnosis=diagnosis, hint=hint)


def graded(
    name: str,
    actual: object,
    expected: torch.Tensor,
    kind: str = "gradient",
    *,
    n: int | None = None,
    scale: float = 0.0,
    detect: Callable[[], Diagnosis | None] | None = None,
    hint: str = "",
) -> Row:
    """A value graded like a gradient, named as what it is, its mistake named when a detector finds one."""
    row = grade_gradient(name, actual, expected, n=n, scale=scale)
    if kind != "gradient":
        row = replace(row, kind=kind, note="no value yet" if row.verdict == NOT_STARTED else row.note)
    return explained(row, detect, hint)


def tensor_list(values: Sequence[object]) -> object:
    """A list of numbers as a tensor, or the list as it is when it holds anything else (graded as a type error)."""
    numbers = [v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v for v in values]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        return torch.tensor(numbers, dtype=torch.float32)
    return f"<a list of {', '.join(sorted({type(v).__name__ for v in numbers}))}>"


def timed(compute: Callable[[], Any]) -> tuple[Any, float]:
    """``compute()``'s value and the seconds it took: the reference's time, which the student's limit follows."""
    started = time.perf_counter()
    value = compute()
    return value, time.perf_counter() - started


def layer_states(model: MLP) -> tuple[list[str], list[dict[str, Any]]]:
    """Each layer's class name and the state a driver gives the student's layer of that class."""
    kinds, states = [], []
    for layer in model.layers:
        kinds.append(type(layer).__name__)
        state: dict[str, Any] = {}
        for attr in ("weight", "bias", "gamma", "beta", "running_mean", "running_var"):
            value = getattr(layer, attr, None)
            if isinstance(value, torch.Tensor):
                state[attr] = value.detach().clone()
        if hasattr(layer, "training"):
            state["training"] = bool(layer.training)
        states.append(state)
    return kinds, states


def reference_model(*, vocab_size: int, n_hidden: int, seed: int, **sizes: int) -> MLP:
    """The notebook's deep MLP on the reference layers, its gains, shifts and biases moved off 1 and 0."""
    return perturb(build_mlp(reference_layers, vocab_size=vocab_size, n_hidden=n_hidden, seed=seed, **sizes), seed)


def from_values(model: MLP, parameters: Mapping[str, object], buffers: Mapping[str, object]) -> MLP | None:
    """The reference model with a run's parameters and buffers, or None when they do not fit it.

    A buffer that is missing or of another shape keeps the model's own: a run is measured
    after :func:`calibrate_batchnorm`, which sets them all again.
    """
    rebuilt = autograd_twin(model)
    with torch.no_grad():
        for name, p in rebuilt.named_parameters():
            value = parameters.get(name)
            if not isinstance(value, torch.Tensor) or value.shape != p.shape or not value.is_floating_point():
                return None
            p.copy_(value)
        for i, layer in enumerate(rebuilt.layers):
            for attr in ("running_mean", "running_var"):
                value = buffers.get(f"layers[{i}].{attr}")
                if (
                    hasattr(layer, attr)
                    and isinstance(value, torch.Tensor)
                    and value.shape == getattr(layer, attr).shape
                ):
                    setattr(layer, attr, value.float().clone())
    return rebuilt


def listed(names: Sequence[str]) -> str:
    """``a`` or ``a and 3 more``: the first of several names, and how many follow."""
    return names[0] if len(names) == 1 else f"{names[0]} and {len(names) - 1} more"


def layer_attr(name: str) -> tuple[int, str]:
    """``("layers[4].running_var")`` -> ``(4, "running_var")``."""
    layer, attr = name.split(".", 1)
    return int(layer[len("layers[") : -1]), attr
