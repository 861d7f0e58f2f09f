"""How the reference, PyTorch's autograd and the kernel are called on one draw of inputs.

The reference and PyTorch run ``forward`` under autograd; the kernel is either a custom
``torch.autograd.Function``, run the same way so that its own backward answers, or an
explicit ``backward(grad_output, *inputs)`` whose return value is matched to the inputs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gradcheck_kit.backward_check.draw import as_strided_copy

__all__ = [
    "Kernel",
    "Layout",
    "copies",
    "gradients",
    "is_float",
    "kernel_call",
    "kernel_gradients",
    "placed",
    "run_forward",
]


@dataclass(frozen=True)
class Kernel:
    """The kernel under test: a custom autograd.Function, or an explicit backward function."""

    function: type[torch.autograd.Function] | None
    backward: Callable[..., Any] | None

    @classmethod
    def of(cls, backward: Any) -> Kernel:
        """Tell a Function (the class or its ``apply``) from a backward function.

        Raises:
            TypeError: if ``backward`` is neither.
        """
        owner = getattr(backward, "__self__", None)
        if isinstance(owner, type) and issubclass(owner, torch.autograd.Function):
            return cls(owner, None)  # SomeFunction.apply
        if isinstance(backward, type) and issubclass(backward, torch.autograd.Function):
            return cls(backward, None)
        if not callable(backward):
            raise TypeError(
                f"backward must be a custom torch.autograd.Function or a function, not {type(backward).__name__}"
            )
        return cls(None, backward)

    def name(self) -> str:
        """The Function's or the function's name, for titles."""
        return self.function.__name__ if self.function is not None else _name(self.backward)


@dataclass(frozen=True)
class Layout:
    """How the inputs are passed (by position or by name) and which of them the gradients are for."""

    names: tuple[str, ...]
    by_name: bool
    #: Positions in ``names`` of the inputs whose gradients are checked.
    wrt: tuple[int, ...]

    @property
    def grad_names(self) -> tuple[str, ...]:
        """The names of the inputs whose gradients are checked."""
        return tuple(self.names[i] for i in self.wrt)

    @classmethod
    def of(cls, forward: Callable[..., Any], raw: Sequence[Any] | Mapping[str, Any], wrt: Any) -> Layout:
        """Name the inputs (by the mapping's keys, or by ``forward``'s parameters) and pick the differentiated ones.

        Raises:
            ValueError: if ``wrt`` names an input that is not a floating-point tensor, or none is.
        """
        if isinstance(raw, Mapping):
            names, by_name, values = tuple(raw), True, list(raw.values())
        else:
            values = list(raw)
            names, by_name = _positional_names(forward, len(values)), False
        if wrt is None:
            chosen = tuple(i for i, v in enumerate(values) if is_float(v))
        else:
            chosen = tuple(_position(w, names) for w in wrt)
        if not chosen:
            raise ValueError("no floating-point tensor among the inputs: nothing has a gradient to check")
        for i in chosen:
            if not is_float(values[i]):
                raise ValueError(f"input {names[i]!r} is not a floating-point tensor: it has no gradient")
        return cls(names, by_name, chosen)

    def values(self, raw: Sequence[Any] | Mapping[str, Any]) -> list[Any]:
        """The inputs in order."""
        return list(raw.values()) if isinstance(raw, Mapping) else list(raw)

    def call(self, fn: Callable[..., Any], values: Sequence[Any], *before: Any) -> Any:
        """Call ``fn(*before, *values)``, or with the values by name."""
        if self.by_name:
            return fn(*before, **dict(zip(self.names, values, strict=True)))
        return fn(*before, *values)


def run_forward(
    forward: Callable[..., Any], layout: Layout, values: list[Any]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Run ``forward`` with the ``wrt`` inputs requiring grad; return its differentiable outputs and those inputs."""
    leaves = [values[i].requires_grad_() for i in layout.wrt]
    out = layout.call(forward, values)
    outputs = list(out) if isinstance(out, (tuple, list)) else [out]
    return [o for o in outputs if isinstance(o, torch.Tensor) and o.requires_grad], leaves


def gradients(outputs: list[torch.Tensor], leaves: list[torch.Tensor], grad_outputs: list[torch.Tensor]) -> list[Any]:
    """Autograd's gradients of ``outputs`` with respect to ``leaves``."""
    grads = torch.autograd.grad(outputs, leaves, grad_outputs, allow_unused=True)
    # An input the output does not depend on has a gradient of zeros.
    return [torch.zeros_like(leaf) if g is None else g for g, leaf in zip(grads, leaves, strict=True)]


def kernel_gradients(kernel: Kernel, layout: Layout, values: list[Any], grad_outputs: list[torch.Tensor]) -> list[Any]:
    """The kernel's gradients of the ``wrt`` inputs, whatever it returned in their place."""
    if kernel.function is not None:
        outputs, leaves = run_forward(kernel.function.apply, layout, values)
        if len(outputs) != len(grad_outputs):
            raise RuntimeError(
                f"the Function returned {len(outputs)} differentiable outputs, the reference {len(grad_outputs)}"
            )
        return list(torch.autograd.grad(outputs, leaves, grad_outputs, allow_unused=True))
    assert kernel.backward is not None
    with torch.no_grad():
        returned = layout.call(kernel.backward, values, _one_or_all(grad_outputs))
    return _aligned(returned, layout)


def kernel_call(
    kernel: Kernel, layout: Layout, values: list[Any], grad_outputs: list[torch.Tensor]
) -> Callable[[], Any]:
    """A call that runs the kernel's backward once more each time, for timing: the forward runs once, here."""
    if kernel.function is not None:
        with torch.enable_grad():
            outputs, leaves = run_forward(kernel.function.apply, layout, values)
        return lambda: torch.autograd.grad(outputs, leaves, grad_outputs, retain_graph=True, allow_unused=True)
    backward = kernel.backward
    assert backward is not None
    grad_output = _one_or_all(grad_outputs)

    def run() -> Any:
        with torch.no_grad():
            return layout.call(backward, values, grad_output)

    return run


def placed(value: Any, dtype: torch.dtype, device: torch.device) -> Any:
    """``value`` on ``device``, rounded to ``dtype`` when it is a floating-point tensor."""
    if not isinstance(value, torch.Tensor):
        return value
    value = value.detach().to(device)
    return value.to(dtype) if value.is_floating_point() else value


def copies(values: list[Any], strided: bool) -> list[Any]:
    """Fresh copies of the tensors among ``values``: strided ones when asked for."""
    # Each backward gets its own tensors: a fused kernel may write its gradient into its input.
    return [(as_strided_copy(v) if strided else v.clone()) if isinstance(v, torch.Tensor) else v for v in values]


def is_float(value: Any) -> bool:
    """Whether ``value`` is a floating-point tensor, which has a gradient."""
    return isinstance(value, torch.Tensor) and value.is_floating_point()


def _one_or_all(grad_outputs: list[torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, ...]:
    return grad_outputs[0] if len(grad_outputs) == 1 else tuple(grad_outputs)


def _aligned(returned: Any, layout: Layout) -> list[Any]:
    """Pick the gradients in ``wrt`` out of what an explicit backward returned."""
    wanted = len(layout.wrt)
    if isinstance(returned, Mapping):
        return [returned.get(name) for name in layout.grad_names]
    if isinstance(returned, torch.Tensor) or returned is None:
        if wanted != 1:
            raise TypeError(f"backward returned one value for {wanted} gradients ({', '.join(layout.grad_names)})")
        return [returned]
    returned = list(returned)
    if len(returned) == len(layout.names):
        return [returned[i] for i in layout.wrt]
    if len(returned) == wanted:
        return returned
    raise TypeError(
        f"backward returned {len(returned)} values; expected one per input ({len(layout.names)}) "
        f"or one per gradient checked ({wanted})"
    )


def _positional_names(forward: Callable[..., Any], count: int) -> tuple[str, ...]:
    try:
        params = list(inspect.signature(forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = [p.name for p in params if p.kind in kinds][:count]
    return tuple(names) + tuple(f"input{i}" for i in range(len(names), count))


def _position(key: str | int, names: tuple[str, ...]) -> int:
    if isinstance(key, int):
        if not 0 <= key < len(names):
            raise ValueError(f"wrt position {key} is out of range for {len(names)} inputs")
        return key
    if key not in names:
        raise ValueError(f"wrt names {key!r}, which is not an input; the inputs are {', '.join(names)}")
    return names.index(key)


def _name(fn: Any) -> str:
    return getattr(fn, "__name__", type(fn).__name__)
