"""Reference layers: the notebook's ``Linear``, ``BatchNorm1d`` and ``Tanh``, with autograd for the backward pass.

They take the same arguments as the exercise 5 layers and draw the same initial
weights from torch's generator, so a model built from them starts where one
built from an implementation does. Give their parameters ``requires_grad`` (as
:func:`~gradcheck_kit.makemore.training.autograd_twin` does) and ``loss.backward()``
fills ``.grad``, which ``grads()`` then lists.
"""

from __future__ import annotations

import torch

__all__ = ["BatchNorm1d", "Linear", "Tanh"]


class Linear:
    """``out = x @ weight + bias``; weight (fan_in, fan_out) Kaiming-scaled, bias (fan_out,) or None."""

    def __init__(self, fan_in: int, fan_out: int, bias: bool = True) -> None:
        self.weight = torch.randn((fan_in, fan_out)) / fan_in**0.5
        self.bias = torch.zeros(fan_out) if bias else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.out = x @ self.weight
        if self.bias is not None:
            self.out = self.out + self.bias
        return self.out

    def parameters(self) -> list[torch.Tensor]:
        return [self.weight] + ([] if self.bias is None else [self.bias])

    def grads(self) -> list[torch.Tensor | None]:
        return [p.grad for p in self.parameters()]


class BatchNorm1d:
    """Batch statistics (Bessel-corrected variance) while training, running statistics in eval mode."""

    def __init__(self, dim: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        self.eps = eps
        self.momentum = momentum
        self.training = True
        self.gamma = torch.ones(dim)
        self.beta = torch.zeros(dim)
        self.running_mean = torch.zeros(dim)
        self.running_var = torch.ones(dim)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            xmean = x.mean(0)
            xvar = x.var(0, unbiased=True)
        else:
            xmean, xvar = self.running_mean, self.running_var
        self.out = self.gamma * (x - xmean) / torch.sqrt(xvar + self.eps) + self.beta
        if self.training:
            with torch.no_grad():
                self.running_mean = (1 - self.momentum) * self.running_mean + self.momentum * xmean
                self.running_var = (1 - self.momentum) * self.running_var + self.momentum * xvar
        return self.out

    def parameters(self) -> list[torch.Tensor]:
        return [self.gamma, self.beta]

    def grads(self) -> list[torch.Tensor | None]:
        return [p.grad for p in self.parameters()]


class Tanh:
    """``out = tanh(x)``."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.out = torch.tanh(x)
        return self.out

    def parameters(self) -> list[torch.Tensor]:
        return []

    def grads(self) -> list[torch.Tensor | None]:
        return []
