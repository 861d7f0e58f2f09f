"""Train the notebook's deep MLP with an implementation's layers and step function, or with autograd.

The model is the one of the batchnorm notebook: an embedding table ``C``, five
hidden blocks ``Linear -> BatchNorm1d -> Tanh`` and an output ``Linear ->
BatchNorm1d``. Its layers come from an implementation module (a student's
``ex5_layers.py`` or the solution) or, for the autograd twin, from
:mod:`gradcheck_kit.makemore.layers`, which computes the same forward pass and leaves
the backward pass to autograd.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F

from gradcheck_kit.makemore import layers as reference

__all__ = [
    "MLP",
    "StepFunction",
    "TrainingLog",
    "autograd_layer",
    "autograd_step",
    "autograd_twin",
    "batches",
    "build_mlp",
    "calibrate_batchnorm",
    "clone_model",
    "learning_rate",
    "perturb",
    "sample",
    "split_loss",
    "train",
]

StepFunction = Callable[[torch.Tensor, list, torch.Tensor, torch.Tensor, float], float]
"""``train_step(C, layers, Xb, Yb, lr) -> loss``: one step of gradient descent, in place."""

# Attribute names of each layer's parameters and buffers, in the order of parameters().
_PARAMETERS = ("weight", "bias", "gamma", "beta")
_BUFFERS = ("running_mean", "running_var")


@dataclass
class MLP:
    """An embedding table and a stack of layers; ``autograd`` marks the reference twin."""

    C: torch.Tensor
    layers: list[Any]
    autograd: bool = False

    def parameters(self) -> list[torch.Tensor]:
        return [self.C] + [p for layer in self.layers for p in layer.parameters()]

    def named_parameters(self) -> list[tuple[str, torch.Tensor]]:
        """``("C", C), ("layers[0].weight", ...), ...`` in the order of :meth:`parameters`."""
        named = [("C", self.C)]
        for i, layer in enumerate(self.layers):
            for j, p in enumerate(layer.parameters()):
                attr = next((a for a in _PARAMETERS if getattr(layer, a, None) is p), f"parameters()[{j}]")
                named.append((f"layers[{i}].{attr}", p))
        return named

    def named_buffers(self) -> list[tuple[str, torch.Tensor]]:
        """``("layers[1].running_mean", ...)`` for every batchnorm layer."""
        return [
            (f"layers[{i}].{attr}", getattr(layer, attr))
            for i, layer in enumerate(self.layers)
            for attr in _BUFFERS
            if hasattr(layer, attr)
        ]

    def set_training(self, training: bool) -> None:
        for layer in self.layers:
            if hasattr(layer, "training"):
                layer.training = training

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Logits for contexts ``X`` (n, block_size), layer by layer as in the notebook."""
        emb = self.C[X]
        x = emb.view(emb.shape[0], -1)
        for layer in self.layers:
            x = layer(x)
        return x


def build_mlp(
    layers: ModuleType,
    *,
    vocab_size: int,
    n_embd: int = 10,
    n_hidden: int = 100,
    block_size: int = 3,
    n_blocks: int = 5,
    seed: int | None = 2147483647,
) -> MLP:
    """Build the notebook's deep MLP from a module's ``Linear``, ``BatchNorm1d`` and ``Tanh``.

    The layers draw their initial weights from torch's global generator; with a
    seed, that generator is seeded inside ``torch.random.fork_rng``, so the
    caller's random state is left as it was.

    Args:
        layers: the module with the layer classes.
        vocab_size: rows of C and width of the output.
        n_embd: width of an embedding.
        n_hidden: width of each hidden block.
        block_size: characters of context.
        n_blocks: hidden ``Linear -> BatchNorm1d -> Tanh`` blocks.
        seed: seeds the initial weights; None draws from the current state.
    """
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        C = torch.randn((vocab_size, n_embd))
        stack: list[Any] = []
        fan_in = n_embd * block_size
        for _ in range(n_blocks):
            stack += [layers.Linear(fan_in, n_hidden, bias=False), layers.BatchNorm1d(n_hidden), layers.Tanh()]
            fan_in = n_hidden
        stack += [layers.Linear(fan_in, vocab_size, bias=False), layers.BatchNorm1d(vocab_size)]
    with torch.no_grad():
        # A less confident output at the start, and the tanh gain 5/3 on every Linear
        # (the notebook scales all layers but the last, which is a batchnorm).
        stack[-1].gamma *= 0.1
        for layer in stack[:-1]:
            if isinstance(layer, layers.Linear):
                layer.weight *= 5 / 3
    return MLP(C, stack)


def perturb(model: MLP, seed: int = 0) -> MLP:
    """Move every gamma, beta and bias off its initial 1 or 0, in place.

    A gain of exactly one or a shift of exactly zero hides a backward pass that
    forgets to multiply by gamma or drops a term; the notebook's exercise 4 starts
    from ``randn * 0.1 + 1.0`` for the same reason.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.layers:
            if getattr(layer, "gamma", None) is not None:
                layer.gamma.mul_(1.0 + 0.1 * torch.randn(layer.gamma.shape, generator=g))
            for attr in ("beta", "bias"):
                p = getattr(layer, attr, None)
                if p is not None:
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


def autograd_layer(layer: Any) -> Any:
    """A reference layer holding clones of ``layer``'s parameters (requiring grad) and buffers."""

    def leaf(t: torch.Tensor) -> torch.Tensor:
        return t.detach().clone().requires_grad_()

    # __init__ is skipped: its random draw would be overwritten at once, and it
    # would move torch's global generator.
    if hasattr(layer, "gamma"):
        norm = object.__new__(reference.BatchNorm1d)
        norm.gamma, norm.beta = leaf(layer.gamma), leaf(layer.beta)
        norm.running_mean = layer.running_mean.detach().clone()
        norm.running_var = layer.running_var.detach().clone()
        norm.eps = getattr(layer, "eps", 1e-5)
        norm.momentum = getattr(layer, "momentum", 0.1)
        norm.training = getattr(layer, "training", True)
        return norm
    if hasattr(layer, "weight"):
        linear = object.__new__(reference.Linear)
        bias = getattr(layer, "bias", None)
        linear.weight, linear.bias = leaf(layer.weight), None if bias is None else leaf(bias)
        return linear
    return reference.Tanh()


def autograd_twin(model: MLP) -> MLP:
    """A copy of ``model`` on the reference layers, with parameters that require grad.

    Parameters and buffers are cloned, so training the twin leaves ``model`` alone.
    """
    C = model.C.detach().clone().requires_grad_()
    return MLP(C, [autograd_layer(layer) for layer in model.layers], autograd=True)


def autograd_step(C: torch.Tensor, layers: list, Xb: torch.Tensor, Yb: torch.Tensor, lr: float) -> float:
    """The reference step: forward, ``loss.backward()``, gradient descent in place."""
    with torch.enable_grad():
        emb = C[Xb]
        x = emb.view(emb.shape[0], -1)
        for layer in layers:
            x = layer(x)
        loss = F.cross_entropy(x, Yb)
        params = [C] + [p for layer in layers for p in layer.parameters()]
        for p in params:
            p.grad = None
        loss.backward()
    with torch.no_grad():
        for p in params:
            p -= lr * p.grad
    return loss.item()


def learning_rate(step: int, lr: float = 0.1, decay_at: int | None = None) -> float:
    """The notebooks' step decay: ``lr`` before step ``decay_at``, ``lr / 10`` from it on (never, if None)."""
    return lr if decay_at is None or step < decay_at else lr / 10


def batches(X: torch.Tensor, Y: torch.Tensor, steps: int, batch_size: int, seed: int) -> Iterator[tuple]:
    """``steps`` random minibatches ``(Xb, Yb)``, the same for the same seed."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        ix = torch.randint(0, X.shape[0], (batch_size,), generator=g)
        yield X[ix], Y[ix]


@dataclass
class TrainingLog:
    """What a run of :func:`train` saw: the loss, learning rate and update:data ratio of each step.

    Attributes:
        losses: minibatch loss of each step.
        lrs: learning rate of each step.
        update_ratios: parameter name -> log10(std(update) / std(data)) of each step.
        seconds: wall time of the run.
    """

    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    update_ratios: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0


def train(
    model: MLP,
    step: StepFunction,
    X: torch.Tensor,
    Y: torch.Tensor,
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 0.1,
    decay_at: int | None = None,
    seed: int = 2147483647,
    track_updates: bool = True,
    progress: Callable[[int, int, float, float], None] | None = None,
    progress_every: int | None = None,
) -> TrainingLog:
    """Run ``steps`` steps of ``step`` on random minibatches of ``(X, Y)``.

    ``step`` runs under ``torch.no_grad()`` unless it is :func:`autograd_step`,
    so a manual step cannot lean on autograd. The update:data ratio is measured
    on what the step really changed, ``std(p_after - p_before) / std(p_after)``.

    Args:
        model: trained in place.
        step: ``step(C, layers, Xb, Yb, lr) -> loss``.
        X, Y: the training split.
        steps: number of steps.
        batch_size: rows of a minibatch.
        lr: learning rate.
        decay_at: the step from which the learning rate is a tenth of ``lr``
            (:func:`learning_rate`); None keeps it constant.
        seed: seeds the minibatch order.
        track_updates: record the update:data ratio of every parameter.
        progress: called as ``progress(step, steps, loss, seconds)`` every
            ``progress_every`` steps and after the last one.
        progress_every: default: a tenth of the run.
    """
    model.set_training(True)
    log = TrainingLog()
    every = progress_every or max(1, steps // 10)
    named = model.named_parameters()
    start = time.perf_counter()
    for i, (Xb, Yb) in enumerate(batches(X, Y, steps, batch_size, seed)):
        lr_i = learning_rate(i, lr, decay_at)
        before = [p.detach().clone() for _, p in named] if track_updates else []
        if step is autograd_step:
            loss = step(model.C, model.layers, Xb, Yb, lr_i)
        else:
            with torch.no_grad():
                loss = step(model.C, model.layers, Xb, Yb, lr_i)
        loss = float(loss)
        log.losses.append(loss)
        log.lrs.append(lr_i)
        if track_updates:
            with torch.no_grad():
                for (name, p), old in zip(named, before, strict=True):
                    ratio = ((p - old).std() / p.std()).log10().item()
                    log.update_ratios.setdefault(name, []).append(ratio)
        if progress is not None and ((i + 1) % every == 0 or i == 0 or i + 1 == steps):
            progress(i + 1, steps, loss, time.perf_counter() - start)
    log.seconds = time.perf_counter() - start
    return log


@torch.no_grad()
def calibrate_batchnorm(model: MLP, X: torch.Tensor) -> MLP:
    """Set every batchnorm's running statistics to those of ``X`` and switch the model to eval mode.

    The notebook's calibration after training: one pass over the whole training
    split, each batchnorm measuring the mean and (Bessel-corrected) variance of
    its input there.
    """
    emb = model.C[X]
    x = emb.view(emb.shape[0], -1)
    for layer in model.layers:
        if hasattr(layer, "running_mean"):
            layer.running_mean = x.mean(0)
            layer.running_var = x.var(0, unbiased=True)
            layer.training = False
        x = layer(x)
    model.set_training(False)
    return model


@torch.no_grad()
def split_loss(model: MLP, X: torch.Tensor, Y: torch.Tensor) -> float:
    """Cross-entropy of the model on a whole split, in the layers' current mode."""
    return F.cross_entropy(model.forward(X), Y).item()


@torch.no_grad()
def sample(
    model: MLP,
    itos: dict[int, str],
    *,
    count: int = 20,
    block_size: int = 3,
    seed: int = 2147483647 + 10,
    max_length: int = 30,
) -> list[str]:
    """Sample names as the notebook does, one character at a time, with batchnorm in eval mode.

    The model is left in the mode it was in. A name that reaches ``max_length``
    characters without the end token is cut there.
    """
    training = [getattr(layer, "training", None) for layer in model.layers]
    model.set_training(False)
    g = torch.Generator().manual_seed(seed)
    names = []
    try:
        for _ in range(count):
            out: list[str] = []
            context = [0] * block_size
            while len(out) < max_length:
                probs = F.softmax(model.forward(torch.tensor([context])), dim=1)
                ix = int(torch.multinomial(probs, num_samples=1, generator=g).item())
                if ix == 0:
                    break
                context = context[1:] + [ix]
                out.append(itos[ix])
            names.append("".join(out))
    finally:
        for layer, mode in zip(model.layers, training, strict=True):
            if mode is not None:
                layer.training = mode
    return names


def clone_model(model: MLP) -> MLP:
    """A deep copy: a probe pass on it leaves the original's running buffers alone."""
    return copy.deepcopy(model)
