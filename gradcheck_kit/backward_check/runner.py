"""``check_backward``: a custom backward against PyTorch's autograd, at each dtype, shape and device.

For every shape drawn and every dtype and device it runs three backward passes on the same
inputs: the reference ``forward`` under autograd in float64 (inputs rounded to the dtype,
then upcast, so that rounding the inputs is nobody's error), PyTorch's autograd through
the same ``forward`` at the dtype (the baseline), and the kernel at the dtype. Each
gradient is then judged by :func:`~gradcheck_kit.backward_check.error.measure_error`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from hypothesis import strategies as st

from gradcheck_kit.backward_check.calls import (
    Kernel,
    Layout,
    copies,
    gradients,
    is_float,
    kernel_call,
    kernel_gradients,
    placed,
    run_forward,
)
from gradcheck_kit.backward_check.draw import DEFAULT_SHAPES, Draw, GradOutputs, Inputs, Shape, draw_shapes
from gradcheck_kit.backward_check.error import DEFAULT_K, ErrorMeasure, measure_error
from gradcheck_kit.backward_check.report import (
    ERROR,
    FAILED,
    PASSED,
    SKIPPED,
    BackwardReport,
    GradientCheck,
    KernelTime,
)

__all__ = ["check_backward", "device_unavailable"]


def check_backward(
    forward: Callable[..., Any],
    backward: Callable[..., Any] | type[torch.autograd.Function],
    inputs: Inputs,
    *,
    shapes: st.SearchStrategy[Shape | int] | Iterable[Shape | int] | None = None,
    dtypes: Iterable[torch.dtype] = (torch.float32, torch.bfloat16),
    devices: Iterable[str | torch.device] = ("cpu", "cuda"),
    grad_outputs: GradOutputs | None = None,
    wrt: Iterable[str | int] | None = None,
    k: float = DEFAULT_K,
    examples: int = 6,
    seed: int = 0,
    benchmark: bool | Literal["quick"] = False,
    title: str | None = None,
) -> BackwardReport:
    """Check a custom backward against PyTorch's autograd, with PyTorch's own error as the yardstick.

    Args:
        forward: the reference, a plain PyTorch function of the inputs, differentiable by autograd.
        backward: the kernel under test: a custom ``torch.autograd.Function`` (the class or its
            ``apply``), whose own backward runs; or a function ``backward(grad_output, *inputs)``
            (``**inputs`` when they are named) that returns the gradients: one tensor, one per
            input (``None`` for those without), one per input in ``wrt``, or a dict by name.
        inputs: ``inputs(shape, generator)`` returns the inputs at a shape, drawn from the
            generator on the CPU; floating-point tensors are rounded to each dtype and moved
            to each device, other tensors only moved, anything else passed as it is.
        shapes: a hypothesis strategy (see :func:`~gradcheck_kit.backward_check.draw.shapes`)
            of which ``examples`` distinct shapes are drawn, the same on every run; or a list.
            By default (rows, features) matrices up to 64 x 4096.
        dtypes: the dtypes to check at.
        devices: where to check; an absent device (``"cuda"`` on a CPU machine) is skipped with the reason.
        grad_outputs: ``grad_outputs(shape, generator)`` for each output; standard normal by default.
        wrt: the inputs (names or positions) to check the gradients of; every floating-point tensor by default.
        k: how many times PyTorch's error the kernel's may be (FlashAttention uses 2).
        examples: how many shapes to draw from a strategy.
        seed: seeds the inputs: shape ``i`` is drawn from ``torch.Generator().manual_seed(seed + i)``.
        benchmark: also time the kernel's backward at the largest shape, with
            :func:`~gradcheck_kit.bench.measure_kernel` (time, and bandwidth as a share of a
            copy's); ``"quick"`` for a smoke test's budget.
        title: the report's title; ``"<forward> vs <backward>"`` by default.

    Returns:
        A :class:`~gradcheck_kit.backward_check.report.BackwardReport`; ``report.passed`` is the verdict.

    Raises:
        ValueError: when there is nothing to check, or the float64 reference is not finite.
        RuntimeError: when the reference itself fails at a shape.
    """
    dtypes, devices = list(dtypes), [torch.device(d) for d in devices]
    if not dtypes or not devices:
        raise ValueError("check_backward needs at least one dtype and one device")
    for dtype in dtypes:
        if not dtype.is_floating_point:
            raise ValueError(f"dtypes must be floating point, not {dtype}")
    kernel = Kernel.of(backward)
    drawn = draw_shapes(shapes if shapes is not None else DEFAULT_SHAPES, examples)
    cases = [
        Draw(shape, seed + i, strided=i % 2 == 1, inputs=inputs, grad_outputs=grad_outputs)
        for i, shape in enumerate(drawn)
    ]
    layout = Layout.of(forward, cases[0].raw, wrt)
    checks: list[GradientCheck] = []
    timings: list[KernelTime] = []
    for device in devices:
        absent = device_unavailable(device)
        for dtype in dtypes:
            if absent:
                checks += [_skipped(name, dtype, device, absent) for name in layout.grad_names]
                continue
            try:
                results = [_run(forward, kernel, layout, case, dtype, device, k) for case in cases]
            except _BaselineUnavailable as e:
                checks += [_skipped(name, dtype, device, str(e)) for name in layout.grad_names]
                continue
            checks += [_worst(name, [r[i] for r in results], dtype, device) for i, name in enumerate(layout.grad_names)]
            if benchmark and not any(r.status == ERROR for rs in results for r in rs):
                largest = max(cases, key=lambda c: math.prod(c.shape))
                timings.append(_time(kernel, layout, largest, dtype, device, benchmark == "quick"))
    order = {name: i for i, name in enumerate(layout.grad_names)}
    checks.sort(key=lambda c: order[c.name])  # stable: device, then dtype, within a gradient
    return BackwardReport(title or f"{getattr(forward, '__name__', 'forward')} vs {kernel.name()}", k, checks, timings)


def device_unavailable(device: torch.device | str) -> str:
    """Say why ``device`` cannot be used here, or return ``""`` when it can."""
    device = torch.device(device)
    if device.type == "cpu":
        return ""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available"
        if device.index is not None and device.index >= torch.cuda.device_count():
            return f"there is no {device}"
        return ""
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        return f"{device} is not available: {str(e).splitlines()[0]}"
    return ""


class _BaselineUnavailable(Exception):
    """PyTorch's own backward fails at this dtype and device: there is nothing to hold the kernel to."""


@dataclass(frozen=True)
class _Result:
    status: str
    measure: ErrorMeasure | None
    note: str
    shape: Shape
    contiguous: bool


def _run(
    forward: Callable[..., Any],
    kernel: Kernel,
    layout: Layout,
    case: Draw,
    dtype: torch.dtype,
    device: torch.device,
    k: float,
) -> list[_Result]:
    """Run the reference, PyTorch and the kernel at one shape; return one result per gradient."""
    base = [placed(v, dtype, device) for v in layout.values(case.raw)]
    # as_strided_copy leaves a tensor contiguous when its last dimension has fewer than two elements.
    contiguous = not case.strided or all(
        not isinstance(v, torch.Tensor) or v.dim() == 0 or v.shape[-1] < 2 for v in base
    )

    def result(status: str, note: str = "", measure: ErrorMeasure | None = None) -> _Result:
        return _Result(status, measure, note, case.shape, contiguous)

    with torch.enable_grad():
        ref_in = [v.detach().to(torch.float64) if is_float(v) else v for v in base]
        try:
            ref_out, ref_leaves = run_forward(forward, layout, ref_in)
        except Exception as e:
            raise RuntimeError(f"the float64 reference failed at shape {case.shape}: {e}") from e
        go = [g.to(device=device, dtype=dtype) for g in case.grad_outputs(ref_out)]
        reference = gradients(ref_out, ref_leaves, [g.to(torch.float64) for g in go])

        try:
            torch_out, torch_leaves = run_forward(forward, layout, copies(base, case.strided))
            baseline = gradients(torch_out, torch_leaves, go)
        except (RuntimeError, NotImplementedError, TypeError) as e:
            raise _BaselineUnavailable(
                f"PyTorch's own backward fails at {_dtype(dtype)} on {device}: {_first_line(e)}"
            ) from e

        try:
            # Copies of grad_output too: a fused backward may scale it in place.
            got = kernel_gradients(kernel, layout, copies(base, case.strided), copies(go, False))
        except Exception as e:
            return [result(ERROR, f"the kernel raised {type(e).__name__}: {_first_line(e)}")] * len(layout.wrt)

    results = []
    for actual, expected, ref in zip(got, baseline, reference, strict=True):
        problem = _problem(actual, ref.shape, dtype, device)
        if problem:
            results.append(result(ERROR, problem))
            continue
        measure = measure_error(actual, expected, ref, k=k, dtype=dtype)
        note = "" if measure.passed else _failure_note(measure)
        results.append(result(PASSED if measure.passed else FAILED, note, measure))
    return results


def _time(
    kernel: Kernel, layout: Layout, case: Draw, dtype: torch.dtype, device: torch.device, quick: bool
) -> KernelTime:
    """Time the kernel's backward at one shape, beside a copy on the same device."""
    from gradcheck_kit.bench.kernel import measure_kernel

    base = [placed(v, dtype, device) for v in layout.values(case.raw)]
    go = [g.to(device=device, dtype=dtype) for g in case.drawn_grad_outputs]
    run = kernel_call(kernel, layout, copies(base, False), copies(go, False))
    tensors = [v for v in base if isinstance(v, torch.Tensor)]
    min_bytes = sum(t.nbytes for t in tensors) + sum(g.nbytes for g in go) + sum(base[i].nbytes for i in layout.wrt)
    timing = measure_kernel(run, min_bytes=min_bytes, device=device, quick=quick)
    return KernelTime(
        dtype=_dtype(dtype),
        device=str(device),
        shape=case.shape,
        min_bytes=min_bytes,
        seconds=timing.median,
        iqr=timing.timing.iqr,
        bandwidth=timing.bandwidth,
        fraction_of_copy=timing.fraction_of_copy,
        copy_bandwidth=timing.copy.bytes_per_second,
        peak_bytes=timing.peak_bytes,
    )


def _worst(name: str, results: list[_Result], dtype: torch.dtype, device: torch.device) -> GradientCheck:
    """Summarise one gradient over every shape by its worst shape: an error, else a failure, else the highest ratio."""
    rank = {ERROR: 2, FAILED: 1, PASSED: 0}
    worst = max(
        results,
        key=lambda r: (rank[r.status], r.measure.gross if r.measure else 0, r.measure.ratio if r.measure else 0.0),
    )
    return GradientCheck(
        name=name,
        dtype=_dtype(dtype),
        device=str(device),
        status=worst.status,
        shapes=len(results),
        shape=worst.shape,
        contiguous=worst.contiguous,
        measure=worst.measure,
        note=worst.note,
    )


def _skipped(name: str, dtype: torch.dtype, device: torch.device, reason: str) -> GradientCheck:
    return GradientCheck(name, _dtype(dtype), str(device), SKIPPED, 0, None, None, None, reason)


def _failure_note(m: ErrorMeasure) -> str:
    # A typical error above k needs no note: the ratio and band columns say it.
    if m.nonfinite:
        return f"{m.nonfinite} NaN/Inf in the kernel's gradient"
    if m.gross:
        return f"{m.gross}/{m.numel} elements grossly off"
    return ""


def _problem(actual: Any, shape: torch.Size, dtype: torch.dtype, device: torch.device) -> str:
    if actual is None:
        return "the kernel returned no gradient"
    if not isinstance(actual, torch.Tensor):
        return f"the kernel returned {type(actual).__name__}, not a tensor"
    if actual.shape != shape:
        return f"shape {tuple(actual.shape)}, expected {tuple(shape)}"
    if actual.dtype != dtype:
        return f"dtype {_dtype(actual.dtype)}, expected {_dtype(dtype)}"
    if actual.device != device:
        return f"on {actual.device}, expected {device}"
    return ""


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
