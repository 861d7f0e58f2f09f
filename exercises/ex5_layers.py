"""Exercise 5: the notebook's layers, each with its own backward pass.

Every layer keeps what its backward pass needs during the forward pass, and
``backward(dout)`` turns the gradient of its output into the gradient of its
input (returned) and of its parameters (stored as ``d<name>``, listed by
``grads()`` in the order of ``parameters()``). Chained in reverse, the layers
backpropagate through the whole deep MLP::

    dx = dlogits
    for layer in reversed(layers):
        dx = layer.backward(dx)          # dx is now dembcat

``__init__``, ``parameters()`` and ``grads()`` are written for you; fill in
``__call__`` (the forward pass, from the notebook) and ``backward``.
The layers are graded one by one and stacked into the notebook's deep MLP
(five ``Linear -> BatchNorm1d -> Tanh`` blocks and an output layer), against
autograd.
"""

from __future__ import annotations

import torch


class Linear:
    """``out = x @ weight + bias``, with Kaiming-scaled weights.

    Shapes: x (n, fan_in), weight (fan_in, fan_out), bias (fan_out,), out (n, fan_out).

    Forward, as in the notebook::

        self.out = x @ self.weight
        if self.bias is not None:
            self.out += self.bias

    Backward: with ``out[i, j] = sum_k x[i, k] weight[k, j] + bias[j]``, derive

        dx       (n, fan_in)        from dout and weight
        dweight  (fan_in, fan_out)  from x and dout
        dbias    (fan_out,)         the bias is broadcast over the n rows

    Keep ``x`` in the forward pass: dweight needs it.
    """

    def __init__(self, fan_in: int, fan_out: int, bias: bool = True) -> None:
        self.weight = torch.randn((fan_in, fan_out)) / fan_in**0.5
        self.bias = torch.zeros(fan_out) if bias else None
        self.dweight: torch.Tensor | None = None
        self.dbias: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("Exercise 5: Linear forward: keep x, return x @ weight (+ bias)")

    def backward(self, dout: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("Exercise 5: Linear backward: set self.dweight and self.dbias, return dx")

    def parameters(self) -> list[torch.Tensor]:
        return [self.weight] + ([] if self.bias is None else [self.bias])

    def grads(self) -> list[torch.Tensor | None]:
        return [self.dweight] + ([] if self.bias is None else [self.dbias])


class BatchNorm1d:
    """Batch normalisation over the batch dimension, with running statistics for eval mode.

    Shapes: x (n, dim), gamma, beta, running_mean, running_var (dim,).

    Forward, as in the notebook (the variance is Bessel-corrected, divided by n - 1)::

        if self.training:
            xmean = x.mean(0)
            xvar = x.var(0, unbiased=True)
        else:
            xmean = self.running_mean
            xvar = self.running_var
        xhat = (x - xmean) / torch.sqrt(xvar + self.eps)
        self.out = self.gamma * xhat + self.beta
        if self.training:
            with torch.no_grad():
                self.running_mean = (1 - self.momentum) * self.running_mean + self.momentum * xmean
                self.running_var = (1 - self.momentum) * self.running_var + self.momentum * xvar

    Backward, with ``dxhat = gamma * dout``:

        dgamma = sum over the batch of dout * xhat                   (dim,)
        dbeta  = sum over the batch of dout                          (dim,)
        dx     in training mode: exercise 3's formula, because every x[i]
               also moves the batch mean and variance
               in eval mode: the running statistics are constants     (n, dim)

    Keep ``xhat`` and ``(xvar + eps)**-0.5`` in the forward pass.
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
        raise NotImplementedError("Exercise 5: BatchNorm1d forward: normalise, scale, shift, update the buffers")

    def backward(self, dout: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("Exercise 5: BatchNorm1d backward: set self.dgamma and self.dbeta, return dx")

    def parameters(self) -> list[torch.Tensor]:
        return [self.gamma, self.beta]

    def grads(self) -> list[torch.Tensor | None]:
        return [self.dgamma, self.dbeta]


class Tanh:
    """``out = tanh(x)``, elementwise.

    Forward::

        self.out = torch.tanh(x)

    Backward: d tanh(x) / dx = 1 - tanh(x)**2, and tanh(x) is the output you kept.
    """

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("Exercise 5: Tanh forward: keep and return tanh(x)")

    def backward(self, dout: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("Exercise 5: Tanh backward: return dx")

    def parameters(self) -> list[torch.Tensor]:
        return []

    def grads(self) -> list[torch.Tensor | None]:
        return []
