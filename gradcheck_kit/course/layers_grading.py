"""Grade exercises 5 (layers with a backward pass) and 6 (training with it) against autograd.

Each ``grade_*`` function takes implementation modules (or the paths of their
files, so that a worker process can load them itself) and returns
:class:`Check` objects, ``(name, actual, expected)`` with optional tolerances, in
the order a table should list them: forward output first, then the gradients
in backward order, then the running buffers. Nothing here raises for a wrong
answer; a ``NotImplementedError`` from an untouched stub propagates, and so does
:class:`~gradcheck_kit.sandbox.guard.AutogradForbidden` from a backward pass that calls
autograd.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, NamedTuple

import torch

from gradcheck_kit.comparison import Comparison, compare
from gradcheck_kit.sandbox.guard import forbid_autograd
from gradcheck_kit.sandbox.loading import load_module
from gradcheck_kit.makemore.names import NamesDataset, load_dataset
from gradcheck_kit.makemore.training import (
    MLP,
    autograd_layer,
    autograd_step,
    autograd_twin,
    build_mlp,
    calibrate_batchnorm,
    perturb,
    split_loss,
    train,
)

__all__ = [
    "Check",
    "TargetRun",
    "compare_checks",
    "grade_batchnorm",
    "grade_calibration",
    "grade_linear",
    "grade_mlp",
    "grade_tanh",
    "grade_training_steps",
    "train_to_target",
]


Implementation = ModuleType | str | os.PathLike[str]
"""A loaded implementation module, or the path of its file."""


def _module(impl: Implementation) -> Any:
    return load_module(os.fspath(impl)) if isinstance(impl, (str, os.PathLike)) else impl


class Check(NamedTuple):
    """One value to compare: the implementation's ``actual`` against the autograd ``expected``.

    ``rtol`` and ``atol`` are both None where the grader's default tolerances apply.
    """

    name: str
    actual: object
    expected: torch.Tensor
    rtol: float | None = None
    atol: float | None = None

    def compare(self) -> Comparison:
        """Compare with the check's tolerances, or the scale-aware grading defaults."""
        rtol, atol = self.rtol, self.atol
        if rtol is None or atol is None:
            from gradcheck_kit.grading.steps import grading_tolerances

            rtol, atol = grading_tolerances(self.expected)
        return compare(self.name, self.actual, self.expected, rtol=rtol, atol=atol)


def compare_checks(checks: list[Check]) -> list[Comparison]:
    """:meth:`Check.compare` for every check, in order."""
    return [check.compare() for check in checks]


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_()


@functools.cache
def _default_data() -> NamesDataset:
    return load_dataset()


def _param_checks(prefix: str, layer: Any, reference: Any) -> Iterator[Check]:
    """``<prefix>.d<attr>`` for every parameter, the layer's ``grads()`` against autograd."""
    attrs = [a for a in ("weight", "bias", "gamma", "beta") if getattr(reference, a, None) is not None]
    grads = list(layer.grads())
    for i, attr in enumerate(attrs):
        actual = grads[i] if i < len(grads) else None
        yield Check(f"{prefix}.d{attr}", actual, getattr(reference, attr).grad)


def _layer_checks(prefix: str, layer: Any, reference: Any, x: torch.Tensor, dout: torch.Tensor) -> list[Check]:
    """Forward ``x`` and backward ``dout`` through a layer and its reference."""
    out = layer(x)
    with forbid_autograd():
        dx = layer.backward(dout)
    xr = _leaf(x)
    reference(xr).backward(dout)
    assert xr.grad is not None
    checks = [Check(f"{prefix}.out", out, reference.out.detach()), Check(f"{prefix}.dx", dx, xr.grad)]
    return checks + list(_param_checks(prefix, layer, reference))


def _build(factory: Callable[[], Any], seed: int) -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def grade_linear(
    layers: Implementation, *, bias: bool = True, n: int = 32, fan_in: int = 30, fan_out: int = 64, seed: int = 0
) -> list[Check]:
    """Grade ``Linear``: ``out``, ``dx``, ``dweight`` and (with a bias) ``dbias``.

    The bias starts at a random value, not zero, and ``dout`` is of unit scale.
    Names start with ``Linear`` or ``Linear(bias=False)``.
    """
    classes = _module(layers)
    layer = _build(lambda: classes.Linear(fan_in, fan_out, bias=bias), seed)
    g = torch.Generator().manual_seed(seed)
    if bias:
        with torch.no_grad():
            layer.bias.copy_(0.1 * torch.randn(fan_out, generator=g))
    reference = autograd_layer(layer)
    x = torch.randn(n, fan_in, generator=g)
    dout = torch.randn(n, fan_out, generator=g)
    return _layer_checks("Linear" if bias else "Linear(bias=False)", layer, reference, x, dout)


def grade_batchnorm(
    layers: Implementation, *, training: bool = True, n: int = 32, dim: int = 64, seed: int = 0
) -> list[Check]:
    """Grade ``BatchNorm1d`` in training or eval mode: ``out``, ``dx``, ``dgamma``, ``dbeta``, the buffers.

    gamma and beta start off 1 and 0, the input is neither centred nor of unit
    variance, and in eval mode the running statistics are set to random values
    first, so a forgotten term shows. Names start with ``BatchNorm1d`` or
    ``BatchNorm1d(eval)``.
    """
    classes = _module(layers)
    layer = _build(lambda: classes.BatchNorm1d(dim), seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.gamma.copy_(1.0 + 0.3 * torch.randn(dim, generator=g))
        layer.beta.copy_(0.3 * torch.randn(dim, generator=g))
        if not training:
            layer.running_mean = 0.5 + torch.randn(dim, generator=g)
            layer.running_var = 0.5 + torch.rand(dim, generator=g) * 3
    layer.training = training
    reference = autograd_layer(layer)
    x = 0.5 + 2.0 * torch.randn(n, dim, generator=g)
    dout = torch.randn(n, dim, generator=g)
    prefix = "BatchNorm1d" if training else "BatchNorm1d(eval)"
    checks = _layer_checks(prefix, layer, reference, x, dout)
    for attr in ("running_mean", "running_var"):
        checks.append(Check(f"{prefix}.{attr}", getattr(layer, attr, None), getattr(reference, attr)))
    return checks


def grade_tanh(layers: Implementation, *, n: int = 32, dim: int = 64, seed: int = 0) -> list[Check]:
    """Grade ``Tanh``: ``Tanh.out`` and ``Tanh.dx``, with inputs that reach into saturation."""
    classes = _module(layers)
    layer = classes.Tanh()
    g = torch.Generator().manual_seed(seed)
    x = 2.0 * torch.randn(n, dim, generator=g)
    dout = torch.randn(n, dim, generator=g)
    return _layer_checks("Tanh", layer, autograd_layer(layer), x, dout)


def grade_mlp(
    layers: Implementation,
    *,
    n: int = 32,
    n_embd: int = 10,
    n_hidden: int = 64,
    block_size: int = 3,
    vocab_size: int = 27,
    seed: int = 0,
) -> list[Check]:
    """Grade the layers stacked into the notebook's deep MLP, in training mode then eval mode.

    The implementation's backward passes are chained from a unit-scale
    ``dlogits``; autograd gets the same upstream gradient. Checks, in this order:

    * ``logits``: the forward pass;
    * for each layer from the last: ``layers[i].dout``, the gradient of its output
      (what ``layers[i].backward`` received; the last layer's is ``dlogits`` itself),
      then ``layers[i].d<param>`` for its parameters;
    * ``dembcat``: what ``layers[0].backward`` returned;
    * ``layers[i].running_mean`` and ``layers[i].running_var`` after the forward pass;
    * ``logits(eval)``: the forward pass of every layer in eval mode.
    """
    classes = _module(layers)
    sizes = dict(vocab_size=vocab_size, n_embd=n_embd, n_hidden=n_hidden, block_size=block_size)
    model = perturb(build_mlp(classes, seed=seed, **sizes), seed)
    twin = autograd_twin(model)
    g = torch.Generator().manual_seed(seed)
    Xb = torch.randint(0, vocab_size, (n, block_size), generator=g)
    dlogits = torch.randn(n, vocab_size, generator=g)

    logits = model.forward(Xb)
    douts: list[object] = [None] * len(model.layers)
    dx: object = dlogits
    with forbid_autograd():
        for i in reversed(range(len(model.layers))):
            douts[i] = dx
            dx = model.layers[i].backward(dx)

    emb = twin.C[Xb]
    embcat = emb.view(n, -1)
    embcat.retain_grad()
    x = embcat
    for layer in twin.layers:
        x = layer(x)
        x.retain_grad()
    x.backward(dlogits)

    checks = [Check("logits", logits, x.detach())]
    for i in reversed(range(len(model.layers))):
        if i < len(model.layers) - 1:
            checks.append(Check(f"layers[{i}].dout", douts[i], twin.layers[i].out.grad))
        checks.extend(_param_checks(f"layers[{i}]", model.layers[i], twin.layers[i]))
    assert embcat.grad is not None
    checks.append(Check("dembcat", dx, embcat.grad))
    checks.extend(_buffer_checks(model, twin))

    model.set_training(False)
    twin.set_training(False)
    with torch.no_grad():
        checks.append(Check("logits(eval)", model.forward(Xb), twin.forward(Xb)))
    return checks


def _buffer_checks(model: MLP, twin: MLP) -> list[Check]:
    expected = dict(twin.named_buffers())
    actual = dict(model.named_buffers())
    return [Check(name, actual.get(name), value) for name, value in expected.items()]


def _guarded(step: Callable[..., float]) -> Callable[..., float]:
    def guarded(*args: Any) -> float:
        with forbid_autograd():
            return step(*args)

    return guarded


def grade_training_steps(
    training: Implementation,
    layers: Implementation,
    *,
    steps: int = 5,
    n_hidden: int = 32,
    batch_size: int = 32,
    lr: float = 0.1,
    seed: int = 0,
    data: NamesDataset | None = None,
) -> list[Check]:
    """Train with ``training.train_step`` and an autograd twin side by side; compare where they end.

    Both start from the same (perturbed) deep MLP built from ``layers`` and see
    the same minibatches of the names training split. Checks: ``losses``, the
    minibatch loss of every step; every parameter (``C``, ``layers[0].weight`` ...)
    and running buffer after ``steps`` steps.

    Args:
        training: the module with ``train_step(C, layers, Xb, Yb, lr) -> loss``.
        layers: the module with the layer classes.
        steps: steps of each run; a handful is enough to tell, and keeps it fast.
        data: default: the shipped names.
    """
    steps_module = _module(training)
    classes = _module(layers)
    data = data or _default_data()
    model = perturb(build_mlp(classes, vocab_size=data.vocab_size, n_hidden=n_hidden, seed=seed), seed)
    twin = autograd_twin(model)
    common = dict(steps=steps, batch_size=batch_size, lr=lr, seed=seed, track_updates=False)
    mine = train(model, _guarded(steps_module.train_step), data.Xtr, data.Ytr, **common)  # type: ignore[arg-type]
    reference = train(twin, autograd_step, data.Xtr, data.Ytr, **common)  # type: ignore[arg-type]
    checks = [Check("losses", torch.tensor(mine.losses), torch.tensor(reference.losses))]
    actual = dict(model.named_parameters())
    checks += [Check(name, actual.get(name), p.detach()) for name, p in twin.named_parameters()]
    return checks + _buffer_checks(model, twin)


def grade_calibration(
    training: Implementation,
    layers: Implementation,
    *,
    n_hidden: int = 32,
    seed: int = 0,
    data: NamesDataset | None = None,
) -> list[Check]:
    """Grade ``training.calibrate(C, layers, Xtr)`` on a (perturbed) deep MLP.

    Checks: every running buffer against the statistics of the training split;
    ``training``, which must be False for every batchnorm afterwards; ``dev loss``
    of the calibrated model in eval mode.
    """
    steps_module = _module(training)
    classes = _module(layers)
    data = data or _default_data()
    model = perturb(build_mlp(classes, vocab_size=data.vocab_size, n_hidden=n_hidden, seed=seed), seed)
    twin = calibrate_batchnorm(autograd_twin(model), data.Xtr)
    with torch.no_grad(), forbid_autograd():
        steps_module.calibrate(model.C, model.layers, data.Xtr)
    checks = _buffer_checks(model, twin)
    modes = [float(getattr(layer, "training", True)) for layer in model.layers if hasattr(layer, "running_mean")]
    checks.append(Check("training", torch.tensor(modes), torch.zeros(len(modes))))
    checks.append(
        Check(
            "dev loss",
            torch.tensor(split_loss(model, data.Xdev, data.Ydev)),
            torch.tensor(split_loss(twin, data.Xdev, data.Ydev)),
        )
    )
    return checks


@dataclass(frozen=True)
class TargetRun:
    """A short training run with the implementation's step, and whether it reached the loss target.

    ``loss`` is the dev loss after the run, with batchnorm calibrated on the training split.
    """

    loss: float
    target: float
    steps: int
    seconds: float
    losses: list[float] = field(repr=False)

    @property
    def reached(self) -> bool:
        return self.loss <= self.target

    @property
    def message(self) -> str:
        verdict = "reached" if self.reached else "missed"
        start = f"{self.losses[0]:.4f}" if self.losses else "n/a"
        return (
            f"dev loss {self.loss:.4f} after {self.steps} steps ({self.seconds:.1f} s; first minibatch loss "
            f"{start}): {verdict} the target {self.target:.2f}"
        )


def train_to_target(
    training: Implementation,
    layers: Implementation,
    *,
    steps: int = 300,
    target: float = 3.0,
    n_hidden: int = 32,
    batch_size: int = 32,
    lr: float = 0.1,
    seed: int = 0,
    data: NamesDataset | None = None,
) -> TargetRun:
    """Train the deep MLP with ``training.train_step`` and measure the dev loss.

    Calibration uses the library's own, so that this run depends on
    ``train_step`` and the layers alone. A uniform guess scores ln(27) = 3.30;
    the solution reaches about 2.85 in the default 300 steps.
    """
    steps_module = _module(training)
    classes = _module(layers)
    data = data or _default_data()
    model = build_mlp(classes, vocab_size=data.vocab_size, n_hidden=n_hidden, seed=seed)
    # Guarded too: a step that calls autograd must not earn the target's points.
    log = train(
        model,
        _guarded(steps_module.train_step),
        data.Xtr,
        data.Ytr,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        track_updates=False,
    )
    calibrate_batchnorm(model, data.Xtr)
    loss = split_loss(model, data.Xdev, data.Ydev)
    if loss != loss:
        loss = float("inf")
    return TargetRun(loss, target, steps, log.seconds, log.losses)
