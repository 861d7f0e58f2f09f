"""The shapes a backward is checked at, drawn by hypothesis, and the inputs drawn at each.

Kernels go wrong at the edges of their blocks: a size of 1, an odd size, a size one past a
power of two. :func:`sizes` favours those; :func:`draw_shapes` draws a fixed list from any
strategy, the same list on every run and machine (hypothesis derandomised, no database).
A :class:`Draw` holds one shape's inputs, drawn once and shared by every dtype and device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from hypothesis import HealthCheck, Phase, currently_in_test_context, given, settings
from hypothesis import strategies as st

__all__ = [
    "DEFAULT_SHAPES",
    "EDGE_SIZES",
    "Draw",
    "GradOutputs",
    "Inputs",
    "Shape",
    "as_strided_copy",
    "draw_shapes",
    "shapes",
    "sizes",
]

Shape = tuple[int, ...]
#: ``inputs(shape, generator)``: the inputs of the forward at one shape, as a sequence or by name.
Inputs = Callable[[Shape, torch.Generator], Sequence[Any] | Mapping[str, Any]]
#: ``grad_outputs(shape, generator)``: the gradient of the loss with respect to one output of that shape.
GradOutputs = Callable[[Shape, torch.Generator], torch.Tensor]

#: Sizes where blocked kernels break: 1, small odd sizes, and one either side of a power of two.
EDGE_SIZES = (1, 2, 3, 5, 7, 17, 31, 33, 63, 65, 127, 129, 255, 257, 511, 513, 1023, 1025, 2047, 2049, 4095, 4097)


def sizes(low: int = 1, high: int = 4096) -> st.SearchStrategy[int]:
    """Sizes from ``low`` to ``high``: half of the draws from :data:`EDGE_SIZES` and the two bounds.

    Raises:
        ValueError: if ``low`` is below 1 or above ``high``.
    """
    if not 1 <= low <= high:
        raise ValueError(f"sizes need 1 <= low <= high, got low={low}, high={high}")
    edges = sorted({low, high, *(s for s in EDGE_SIZES if low <= s <= high)})
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def shapes(*dims: int | tuple[int, int], max_numel: int = 1 << 17) -> st.SearchStrategy[Shape]:
    """Shapes with one size per dimension, each an ``int`` (fixed) or a ``(low, high)`` range.

    Args:
        dims: one entry per dimension.
        max_numel: the most elements a shape may have, so that a check stays quick on a CPU.

    Returns:
        A strategy of tuples; draws over ``max_numel`` are filtered out.
    """
    if not dims:
        raise ValueError("shapes() needs at least one dimension, e.g. shapes((1, 64), (1, 4096))")
    parts = [st.just(d) if isinstance(d, int) else sizes(*d) for d in dims]
    return st.tuples(*parts).filter(lambda shape: math.prod(shape) <= max_numel)


#: What check_backward draws when it is given no shapes: (rows, features) matrices.
DEFAULT_SHAPES = shapes((1, 64), (1, 4096))


def draw_shapes(source: st.SearchStrategy[Shape | int] | Iterable[Shape | int], count: int) -> list[Shape]:
    """Return the shapes to check: ``count`` distinct draws from a strategy, or the given list as it is.

    The draws are derandomised, so every run checks the same shapes; the first draws are
    hypothesis's simplest (sizes of 1 and the lower bounds).

    Raises:
        ValueError: for an empty list.
        RuntimeError: for a strategy inside a hypothesis test, which cannot run another.
    """
    if not isinstance(source, st.SearchStrategy):
        found = [_shape(s) for s in source]
        if not found:
            raise ValueError("no shapes to check: give at least one")
        return found
    if currently_in_test_context():
        raise RuntimeError(
            "shapes are drawn by a hypothesis test of their own, which cannot run inside another: "
            "inside @given, draw the shape there and pass shapes=[shape]"
        )
    drawn: list[Shape] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(source)
    def collect(shape: Shape | int) -> None:
        shape = _shape(shape)
        if shape not in drawn:
            drawn.append(shape)

    collect()
    return drawn[:count]


class Draw:
    """One shape's inputs and grad_outputs, drawn once on the CPU and shared by every dtype and device.

    Args:
        shape: the shape handed to ``inputs``.
        seed: seeds the generator the inputs, then the grad_outputs, are drawn from.
        strided: whether the backward passes get strided copies of the inputs.
        inputs: draws the inputs.
        grad_outputs: draws each output's gradient; standard normal when ``None``.
    """

    def __init__(self, shape: Shape, seed: int, *, strided: bool, inputs: Inputs, grad_outputs: GradOutputs | None):
        self.shape = shape
        self.strided = strided
        self._generator = torch.Generator().manual_seed(seed)
        self.raw = inputs(shape, self._generator)
        self._draw_grad_output = grad_outputs or (lambda shape, g: torch.randn(shape, generator=g))
        self._grad_outputs: list[torch.Tensor] | None = None

    def grad_outputs(self, outputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The gradients of the outputs: drawn after the inputs, the first time the output shapes are known."""
        if self._grad_outputs is None:
            self._grad_outputs = [self._draw_grad_output(tuple(o.shape), self._generator) for o in outputs]
        return self._grad_outputs

    @property
    def drawn_grad_outputs(self) -> list[torch.Tensor]:
        """The grad_outputs drawn by an earlier check at this shape."""
        assert self._grad_outputs is not None, "the shape was not checked yet"
        return self._grad_outputs


def as_strided_copy(tensor: torch.Tensor) -> torch.Tensor:
    """Return a copy of ``tensor`` with the same values that is not contiguous (every other element of a buffer).

    Tensors whose last dimension has fewer than two elements stay contiguous: there is no
    stride that could differ.
    """
    if tensor.dim() == 0 or tensor.shape[-1] < 2:
        return tensor.clone()
    buffer = tensor.new_empty(*tensor.shape[:-1], 2 * tensor.shape[-1])
    view = buffer[..., ::2]
    view.copy_(tensor)
    return view


def _shape(shape: Sequence[int] | int) -> Shape:
    if isinstance(shape, int):
        return (shape,)
    return tuple(int(s) for s in shape)
