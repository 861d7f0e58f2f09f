"""What a worker runs for exercises 5 and 6: the student's layers and training code, and nothing else.

Exercises 5 and 6 are answered with classes and loops rather than one function's
return value, so a driver builds the student's objects, hands them the grader's
parameters and inputs, runs the student's code and sends back the values it
produced. A driver compares nothing and holds no reference: the grading process
computes the references with autograd and grades what comes back, so a
submission that patches this module gains no more than it could return by
itself. Each driver runs under the sandbox's guard, like any student call, and
takes the student's loaded modules first (see ``student_files`` of
:meth:`~gradcheck_kit.sandbox.box.Sandbox.call`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

import torch

from gradcheck_kit.sandbox.call import MissingName

__all__ = ["batchnorm", "calibration", "linear", "mlp", "tanh", "training_run"]

#: Parameter attributes of the notebook's layers, in the order of ``parameters()``.
PARAMETERS = ("weight", "bias", "gamma", "beta")
BUFFERS = ("running_mean", "running_var")

_Driver = TypeVar("_Driver", bound=Callable[..., Any])


def _own_random_state(driver: _Driver) -> _Driver:
    """Run ``driver`` on torch's generator seeded afresh, and give the caller's state back afterwards.

    The student's layers draw initial weights that the grader's then replace: that
    draw must not move the generator of a process that grades in-process, nor
    depend on which checks ran before in the worker.
    """

    @functools.wraps(driver)
    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(0)
            return driver(*args, **kwargs)

    return run  # type: ignore[return-value]


def _class(module: ModuleType, name: str) -> Any:
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        file = getattr(module, "__file__", "the file") or "the file"
        found = "is not a class" if cls is not None else "is missing"
        raise MissingName(f"{file.rsplit('/', 1)[-1]}: class {name!r} {found}; exercise 5 asks for {name}")
    return cls


def _function(module: ModuleType, name: str) -> Any:
    func = getattr(module, name, None)
    if not callable(func):
        file = (getattr(module, "__file__", "") or "the file").rsplit("/", 1)[-1]
        raise MissingName(f"{file} has no function {name!r}")
    return func


def _sendable(value: Any) -> Any:
    """A value as the grader can take it: tensors detached, other objects named by their type."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if value is None or isinstance(value, (bool, int, float)):
        return value
    # The student's own objects cannot be unpickled by the grader; their type is what a message needs.
    return f"<{type(value).__module__}.{type(value).__qualname__} object>"


def _set(layer: Any, attr: str, value: torch.Tensor) -> None:
    """Give ``layer.attr`` the grader's value: in place where it fits, so ``parameters()`` lists sees it."""
    current = getattr(layer, attr, None)
    if isinstance(current, torch.Tensor) and current.shape == value.shape and current.dtype == value.dtype:
        with torch.no_grad():
            current.copy_(value)
    else:
        setattr(layer, attr, value.clone())


def _load(layer: Any, state: dict[str, torch.Tensor]) -> Any:
    for attr, value in state.items():
        if attr == "training":
            layer.training = bool(value)
        else:
            _set(layer, attr, value)
    return layer


def _grads(layer: Any) -> dict[str, Any]:
    """The layer's gradients by parameter attribute, matched to ``parameters()`` by identity."""
    params = list(layer.parameters())
    grads = list(layer.grads())
    named: dict[str, Any] = {}
    for i, p in enumerate(params):
        attr = next((a for a in PARAMETERS if getattr(layer, a, None) is p), None)
        if attr is not None:
            named[attr] = _sendable(grads[i]) if i < len(grads) else None
    return named


def _copied(value: Any) -> Any:
    """A value as sent, copied: a later call of the student's code must not change what this one returned."""
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    value = _sendable(value)
    return value.clone() if isinstance(value, torch.Tensor) else value


def _run_layer(layer: Any, x: torch.Tensor, dout: torch.Tensor, state: dict[str, Any]) -> dict[str, Any]:
    """Forward ``x`` and backward ``dout``; then the same call again on the layer given ``state`` afresh.

    The second call's parameter gradients are sent as ``grads_again``: a layer whose
    gradients carry over from one call to the next (``self.dweight += ...``) is right on
    its first call only. The first call's buffers are sent before the second call runs.
    """
    out = layer(x)
    dx = layer.backward(dout)
    first = {"out": _copied(out), "dx": _copied(dx), "grads": _copied(_grads(layer))}
    first["buffers"] = {attr: _copied(getattr(layer, attr, None)) for attr in BUFFERS if hasattr(layer, attr)}
    _load(layer, state)
    layer(x)
    layer.backward(dout)
    return {**first, "grads_again": _grads(layer)}


@_own_random_state
def linear(layers: ModuleType, *, fan_in: int, fan_out: int, state: dict[str, torch.Tensor], x, dout) -> dict:
    """``Linear(fan_in, fan_out, bias=...)`` with the grader's weight (and bias): forward ``x``, backward ``dout``."""
    layer = _load(_class(layers, "Linear")(fan_in, fan_out, bias="bias" in state), state)
    return _run_layer(layer, x, dout, state)


@_own_random_state
def batchnorm(layers: ModuleType, *, dim: int, state: dict[str, Any], x, dout) -> dict:
    """``BatchNorm1d(dim)`` with the grader's gamma, beta, running statistics and mode; then its buffers."""
    layer = _load(_class(layers, "BatchNorm1d")(dim), state)
    ran = _run_layer(layer, x, dout, state)
    return {**ran, "buffers": {attr: ran["buffers"].get(attr) for attr in BUFFERS}}


@_own_random_state
def tanh(layers: ModuleType, *, x, dout) -> dict:
    """``Tanh()``: forward ``x``, backward ``dout``."""
    return _run_layer(_class(layers, "Tanh")(), x, dout, {})


def _stack(layers: ModuleType, kinds: list[str], states: list[dict[str, Any]]) -> list[Any]:
    """The deep MLP's layers, built from the student's classes and given the grader's parameters."""
    stack = []
    for kind, state in zip(kinds, states, strict=True):
        if kind == "Linear":
            fan_in, fan_out = state["weight"].shape
            layer = _class(layers, "Linear")(fan_in, fan_out, bias="bias" in state)
        elif kind == "BatchNorm1d":
            layer = _class(layers, "BatchNorm1d")(state["gamma"].shape[0])
        else:
            layer = _class(layers, "Tanh")()
        stack.append(_load(layer, state))
    return stack


def _forward(C: torch.Tensor, stack: list[Any], X: torch.Tensor) -> torch.Tensor:
    emb = C[X]
    x = emb.view(emb.shape[0], -1)
    for layer in stack:
        x = layer(x)
    return x


def _buffers(stack: list[Any]) -> dict[str, Any]:
    return {
        f"layers[{i}].{attr}": _sendable(getattr(layer, attr, None))
        for i, layer in enumerate(stack)
        if hasattr(layer, "gamma") or hasattr(layer, "running_mean")
        for attr in BUFFERS
    }


def _parameter_attrs(stack: list[Any]) -> list[tuple[str, Any, str]]:
    """``(name, layer, attribute)`` of every parameter the layers hold."""
    return [
        (f"layers[{i}].{attr}", layer, attr)
        for i, layer in enumerate(stack)
        for attr in PARAMETERS
        if getattr(layer, attr, None) is not None
    ]


def _parameters(C: torch.Tensor, stack: list[Any]) -> dict[str, Any]:
    named = {"C": _sendable(C)}
    named.update({name: _sendable(getattr(layer, attr)) for name, layer, attr in _parameter_attrs(stack)})
    return named


@_own_random_state
def mlp(layers: ModuleType, *, C, kinds: list[str], states: list[dict[str, Any]], Xb, dlogits) -> dict:
    """The deep MLP in training mode: logits, each layer's backward chained from ``dlogits``, then eval logits."""
    stack = _stack(layers, kinds, states)
    logits = _forward(C, stack, Xb)
    douts: list[Any] = []
    grads: dict[str, Any] = {}
    dx: Any = dlogits
    for i in reversed(range(len(stack))):
        douts.insert(0, _sendable(dx))
        dx = stack[i].backward(dx)
        grads.update({f"layers[{i}].{attr}": g for attr, g in _grads(stack[i]).items()})
    buffers = _buffers(stack)
    for layer in stack:
        if hasattr(layer, "training"):
            layer.training = False
    logits_eval = _forward(C, stack, Xb)
    return {
        "logits": _sendable(logits),
        "douts": douts,
        "grads": grads,
        "dembcat": _sendable(dx),
        "buffers": buffers,
        "logits_eval": _sendable(logits_eval),
    }


@_own_random_state
def training_run(
    training: ModuleType, layers: ModuleType, *, C, kinds: list[str], states: list[dict[str, Any]], Xb, Yb, lr: float
) -> dict:
    """``train_step`` on the minibatches ``Xb[i], Yb[i]`` in turn; the losses, then the parameters and buffers."""
    train_step = _function(training, "train_step")
    stack = _stack(layers, kinds, states)
    # The tensors themselves, not their ids: a tensor freed by a rebinding may leave its id to the new one.
    given = {name: getattr(layer, a) for name, layer, a in _parameter_attrs(stack)}
    C = C.clone()
    losses = []
    with torch.no_grad():
        for i in range(Xb.shape[0]):
            losses.append(_sendable(train_step(C, stack, Xb[i], Yb[i], lr)))
    # Whether each parameter is still the tensor the layer was given: updated in place, or rebound.
    kept = {name: getattr(layer, a, None) is given.get(name) for name, layer, a in _parameter_attrs(stack)}
    return {"losses": losses, "parameters": _parameters(C, stack), "buffers": _buffers(stack), "kept": kept}


@_own_random_state
def calibration(
    training: ModuleType, layers: ModuleType, *, C, kinds: list[str], states: list[dict[str, Any]], X
) -> dict:
    """``calibrate(C, layers, X)``; then every batchnorm's buffers and whether it is in training mode."""
    calibrate = _function(training, "calibrate")
    stack = _stack(layers, kinds, states)
    with torch.no_grad():
        calibrate(C, stack, X)
    modes = [_sendable(getattr(layer, "training", None)) for layer in stack if hasattr(layer, "running_mean")]
    return {"buffers": _buffers(stack), "training": modes}
