"""The notebook's layers with their backward passes written by hand: what exercise 5 asks for, done.

Exercise 6 grades a student's ``train_step`` and ``calibrate`` on these layers
when the student's own exercise 5 layers are not right yet, so that one wrong
layer costs points once. They run in the sandbox's worker, under its guard:
nothing here uses autograd. Each layer keeps what its backward pass needs
during the forward pass; ``backward(dout)`` returns the gradient of its input
and stores those of its parameters as ``d<name>``, listed by ``grads()`` in the
order of ``parameters()``.

They are the code of a course's ``solutions/ex5_layers.py``, kept here because a
course's solutions are not installed with the package and are out of reach of the
worker; ``tests/test_layers.py`` checks that the two agree.
"""

from __future__ import annotations

import torch

__all__ = ["BatchNorm1d", "Linear", "Tanh"]


class Linear:
    """``out = x @ weight + bias``, with Kaiming-scaled weights.

    Shapes: x (n, fan_in), weight (fan_in, fan_out), bias (fan_out,), out (n, fan_out).
    """

    def __init__(self, fan_in: int, fan_out: int, bias: bool = True) -> None:
        self.weight = torch.randn((fan_in, fan_out)) / fan_in**0.5
        self.bias = torch.zeros(fan_out) if bias else None
        self.dweight: torch.Tensor | None = None
        self.dbias: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.x = x
        self.out = x @ self.weight
        if self.bias is not None:
            self.out = self.out + self.bias
        return self.out

    def backward(self, dout: torch.Tensor) -> torch.Tensor:
        # out[i, j] = sum_k x[i, k] weight[k, j]: each matrix's gradient is dout
        # times the other matrix, transposed so that the shapes line up.
        self.dweight = self.x.T @ dout
        if self.bias is not None:
            # The bias is broadcast over the n rows, so its gradient sums them.
            self.dbias = dout.sum(0)
        return dout @ self.weight.T

    def parameters(self) -> list[torch.Tensor]:
        return [self.weight] + ([] if self.bias is None else [self.bias])

    def grads(self) -> list[torch.Tensor | None]:
        return [self.dweight] + ([] if self.bias is None else [self.dbias])


class BatchNorm1d:
    """Batch normalisation over the batch dimension, with running statistics for eval mode.

    Shapes: x (n, dim), gamma, beta, running_mean, running_var (dim,).
    """

    def __init__(self, dim: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        self.eps = eps
        self.momentum = momentum
        self.training = True
        self.gamma = torch.ones(dim)
        self.beta = torch.zeros(dim)
        self.running_mean = torch.zeros(dim)
        self.running_var = torch.ones(dim)
        self.dgamma: torch.Tensor | None = None
        self.dbeta: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            xmean = x.mean(0)
            xvar = x.var(0, unbiased=True)
        else:
            xmean = self.running_mean
            xvar = self.running_var
        self.xvar_inv = (xvar + self.eps) ** -0.5
        self.xhat = (x - xmean) * self.xvar_inv
        self.out = self.gamma * self.xhat + self.beta
        if self.training:
            # The running statistics are buffers, not parameters: no gradient flows into them.
            with torch.no_grad():
                self.running_mean = (1 - self.momentum) * self.running_mean + self.momentum * xmean
                self.running_var = (1 - self.momentum) * self.running_var + self.momentum * xvar
        return self.out

    def backward(self, dout: torch.Tensor) -> torch.Tensor:
        # gamma and beta are broadcast over the batch: sum their gradients over it.
        self.dgamma = (dout * self.xhat).sum(0)
        self.dbeta = dout.sum(0)
        dxhat = self.gamma * dout
        if not self.training:
            # The running statistics are constants, so x only moves its own xhat.
            return dxhat * self.xvar_inv
        # With batch statistics each x[i] also moves the mean and the variance
        # that every other row is normalised with; exercise 3 collects the three paths.
        n = dout.shape[0]
        return self.xvar_inv / n * (n * dxhat - dxhat.sum(0) - n / (n - 1) * self.xhat * (dxhat * self.xhat).sum(0))

    def parameters(self) -> list[torch.Tensor]:
        return [self.gamma, self.beta]

    def grads(self) -> list[torch.Tensor | None]:
        return [self.dgamma, self.dbeta]


class Tanh:
    """``out = tanh(x)``, elementwise."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.out = torch.tanh(x)
        return self.out

    def backward(self, dout: torch.Tensor) -> torch.Tensor:
        # d tanh(x) / dx = 1 - tanh(x)**2, and tanh(x) is the saved output.
        return (1 - self.out**2) * dout

    def parameters(self) -> list[torch.Tensor]:
        return []

    def grads(self) -> list[torch.Tensor | None]:
        return []
