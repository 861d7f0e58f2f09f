"""What an op of the benchmark is made of: its inputs, its variants, and how it is described.

:mod:`gradcheck_kit.bench.ops` defines the ops themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gradcheck_kit.bench.impl import Implementation

__all__ = ["INDEX_BYTES", "Inputs", "Op", "Params", "Thunk", "Variant", "autograd_call", "generator"]

Thunk = Callable[[], Any]
Params = Mapping[str, int]

#: Labels and indices are int64.
INDEX_BYTES = 8


@dataclass(frozen=True)
class Inputs:
    """One set of inputs: the forward pass by the notebook's names, and the reference gradients."""

    f: Any
    expected: Mapping[str, torch.Tensor] | None = None

    def own_copy(self) -> Inputs:
        """The same inputs, every tensor of the forward pass copied: for code that may write into them."""
        values = {k: t.detach().clone() if isinstance(t, torch.Tensor) else t for k, t in vars(self.f).items()}
        return Inputs(type(self.f)(**values), self.expected)


@dataclass(frozen=True)
class Variant:
    """One way of computing an op's backward pass.

    Attributes:
        key: stable identifier, the same across runs (``"chunked"``, ``"impl-fused"``).
        label: how tables name it.
        prepare: builds what a call needs outside the timed region (an autograd graph)
            and returns the call itself.
        source: ``"reference"``, or the label of the implementation under test.
        checked: the gradient names compared before timing; None compares every reference.
        student: whether the code is the student's (checked with autograd forbidden).
        fits: whether the variant is run at the given sizes; None runs it everywhere.
        unavailable: why it cannot run on this machine, if it cannot.
    """

    key: str
    label: str
    prepare: Callable[[Inputs], Thunk]
    source: str = "reference"
    checked: tuple[str, ...] | None = None
    student: bool = False
    fits: Callable[[Params], bool] | None = None
    unavailable: str | None = None


@dataclass(frozen=True)
class Op:
    """A backward pass to benchmark, its sizes and its variants."""

    name: str
    title: str
    #: The gradient a single-tensor variant returns, by the notebook's name; empty
    #: where every variant returns a dict of gradients by name (the whole MLP).
    output: str
    #: The parameters a size sweeps over, as named in ``Size.params``.
    axes: tuple[str, ...]
    baseline: str
    min_bytes: Callable[..., int]
    make_inputs: Callable[[Params, torch.device, torch.dtype, int, bool], Inputs]
    variants: tuple[Variant, ...]
    impl_variants: Callable[[Implementation, torch.device], tuple[Variant, ...]]
    describe: Callable[[Params], str]

    def bytes_moved(self, params: Params, dtype: torch.dtype) -> int:
        return int(self.min_bytes(**params, itemsize=torch.empty((), dtype=dtype).element_size()))

    def all_variants(self, impl: Implementation | None, device: torch.device) -> tuple[Variant, ...]:
        return self.variants + (self.impl_variants(impl, device) if impl is not None else ())


def generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def autograd_call(
    output: torch.Tensor, inputs: Sequence[torch.Tensor], grad: torch.Tensor | None = None
) -> Callable[[], tuple[torch.Tensor, ...]]:
    # retain_graph keeps the graph for the next call, so only the backward pass is timed.
    def call() -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad(output, inputs, grad, retain_graph=True)

    return call
