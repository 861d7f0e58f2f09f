"""Exercises 5 and 6 on the grading side: each check's inputs, its autograd reference, and how its values are graded.

A check is prepared here, in the grading process: the inputs are drawn, the
reference is computed with autograd on the library's reference layers (and
timed, so that the student's time limit can follow it), and the driver of
:mod:`gradcheck_kit.course.drivers` that the worker is to run is named. What the
driver sends back is graded here with the same code as exercises 1-4: gradients
with :func:`~gradcheck_kit.grading.steps.grade_gradient`, the deep MLP's chain of
layers with :func:`~gradcheck_kit.grading.steps.grade_steps` (the first wrong
layer costs points, the layers below it whose own step is right pass as
inherited), and values, buffers, flags and metrics by comparison.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from gradcheck_kit.comparison import compare
from gradcheck_kit.course.prepared import Prepared
from gradcheck_kit.grading.steps import grade_gradient, grade_steps, row_for_error, term_scales
from gradcheck_kit.makemore import layers as reference_layers
from gradcheck_kit.makemore.names import NamesDataset, load_dataset
from gradcheck_kit.makemore.training import (
    MLP,
    autograd_step,
    autograd_twin,
    batches,
    build_mlp,
    calibrate_batchnorm,
    perturb,
    split_loss,
)
from gradcheck_kit.recording.recorder import record
from gradcheck_kit.report import NOT_STARTED, OK, WRONG, Report, Row

__all__ = ["LAYER_CHECKS", "LayerCheck", "prepare", "value_row"]

EPS = 1e-5
MOMENTUM = 0.1


@dataclass(frozen=True)
class LayerCheck:
    """One graded check of exercises 5 and 6.

    Attributes:
        key: the check's name in test ids and tables.
        exercise: the exercise it is graded under.
        title: the heading of its table.
    """

    key: str
    exercise: str
    title: str


LAYER_CHECKS: dict[str, LayerCheck] = {
    c.key: c
    for c in (
        LayerCheck("linear", "ex5", "exercise 5: layers: Linear"),
        LayerCheck("linear_without_bias", "ex5", "exercise 5: layers: Linear(bias=False)"),
        LayerCheck("batchnorm_training", "ex5", "exercise 5: layers: BatchNorm1d (training)"),
        LayerCheck("batchnorm_eval", "ex5", "exercise 5: layers: BatchNorm1d (eval)"),
        LayerCheck("tanh", "ex5", "exercise 5: layers: Tanh"),
        LayerCheck("deep_mlp", "ex5", "exercise 5: layers: the deep MLP"),
        LayerCheck("training_steps", "ex6", "exercise 6: training: 5 steps against autograd"),
        LayerCheck("calibration", "ex6", "exercise 6: training: batchnorm calibration"),
        LayerCheck("loss_target", "ex6", "exercise 6: training: 300 steps to a loss target"),
    )
}


def _prepared(
    driver: str,
    files: tuple[str, ...],
    inputs: Mapping[str, Any],
    rows: Callable[[Any], list[Row]],
    seconds: float,
    note: str = "",
) -> Prepared:
    """A check run by ``driver`` of :mod:`gradcheck_kit.course.drivers`, graded into rows by ``rows``."""
    return Prepared(
        function=driver,
        files=files,
        grade=lambda value: Report("", rows(value if isinstance(value, Mapping) else {})),
        expected={},
        reference_seconds=seconds,
        kwargs=inputs,
        driver=True,
        kind="value",
        note=note,
    )


# ----------------------------------------------------------------------------
# Rows


def value_row(name: str, actual: object, expected: torch.Tensor, kind: str, *, n: int | None = None) -> Row:
    """A forward output, buffer, flag or metric, graded like a gradient and named as what it is."""
    row = grade_gradient(name, actual, expected, n=n)
    note = "no value yet" if row.verdict == NOT_STARTED else row.note
    return replace(row, kind=kind, note=note)


def _tensor_list(values: Sequence[object]) -> object:
    """A list of numbers as a tensor, or the list as it is when it holds anything else (graded as a type error)."""
    numbers = [v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v for v in values]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        return torch.tensor(numbers, dtype=torch.float32)
    return f"<a list of {', '.join(sorted({type(v).__name__ for v in numbers}))}>"


# ----------------------------------------------------------------------------
# Single layers


def _timed(compute: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = compute()
    return value, time.perf_counter() - started


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_()


@dataclass(frozen=True)
class _Recorded:
    """One layer's reference: its output, the gradient of each named tensor, and the scale of each."""

    out: torch.Tensor
    grads: Mapping[str, torch.Tensor | None]
    scale: Callable[[str], float]
    buffers: Mapping[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def of(cls, rec: Any, loss: torch.Tensor, out: torch.Tensor, **buffers: torch.Tensor) -> _Recorded:
        grads = rec.grads(loss)
        return cls(out.detach(), grads, term_scales(rec, loss, grads), buffers)

    def rows(self, value: Mapping[str, Any], params: Sequence[str], n: int) -> list[Row]:
        """``out``, then ``dx`` and each parameter's gradient, then the buffers."""
        rows = [value_row("out", value.get("out"), self.out, "value", n=n)]
        student = {"x": value.get("dx"), **(value.get("grads") or {})}
        for name in ("x", *params):
            expected = self.grads[name]
            assert expected is not None
            rows.append(grade_gradient(name, student.get(name), expected, n=n, scale=self.scale(name)))
        buffers = value.get("buffers") or {}
        rows += [value_row(attr, buffers.get(attr), b, "buffer", n=n) for attr, b in self.buffers.items()]
        return rows


def _linear_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dout: torch.Tensor
) -> _Recorded:
    x, weight = _leaf(x), _leaf(weight)
    bias = _leaf(bias) if bias is not None else None
    with record() as rec:
        out = x @ weight if bias is None else x @ weight + bias
        loss = (out * dout).sum()
    return _Recorded.of(rec, loss, out)


def _linear(bias: bool, n: int = 32, fan_in: int = 30, fan_out: int = 64, seed: int = 0) -> Prepared:
    g = torch.Generator().manual_seed(seed)
    state = {"weight": torch.randn(fan_in, fan_out, generator=g) / fan_in**0.5}
    if bias:
        state["bias"] = 0.1 * torch.randn(fan_out, generator=g)  # not zero: a dropped bias shows
    x = torch.randn(n, fan_in, generator=g)
    dout = torch.randn(n, fan_out, generator=g)
    ref, seconds = _timed(lambda: _linear_reference(x, state["weight"], state.get("bias"), dout))
    params = ("weight", "bias") if bias else ("weight",)
    inputs = {"fan_in": fan_in, "fan_out": fan_out, "state": state, "x": x, "dout": dout}
    return _prepared("linear", ("ex5",), inputs, lambda value: ref.rows(value, params, n), seconds)


def _batchnorm_reference(x: torch.Tensor, state: Mapping[str, Any], dout: torch.Tensor) -> _Recorded:
    x, gamma, beta = _leaf(x), _leaf(state["gamma"]), _leaf(state["beta"])
    running_mean, running_var = state["running_mean"], state["running_var"]
    with record() as rec:
        if state["training"]:
            xmean = x.mean(0)
            xvar = x.var(0, unbiased=True)
        else:
            xmean, xvar = running_mean, running_var
        out = gamma * (x - xmean) / torch.sqrt(xvar + EPS) + beta
        loss = (out * dout).sum()
    if state["training"]:
        running_mean = (1 - MOMENTUM) * running_mean + MOMENTUM * xmean.detach()
        running_var = (1 - MOMENTUM) * running_var + MOMENTUM * xvar.detach()
    return _Recorded.of(rec, loss, out, running_mean=running_mean, running_var=running_var)


def _batchnorm(training: bool, n: int = 32, dim: int = 64, seed: int = 0) -> Prepared:
    # gamma and beta off 1 and 0, an input neither centred nor of unit variance, and in
    # eval mode running statistics of their own: a forgotten term shows.
    g = torch.Generator().manual_seed(seed)
    state: dict[str, Any] = {
        "gamma": 1.0 + 0.3 * torch.randn(dim, generator=g),
        "beta": 0.3 * torch.randn(dim, generator=g),
        "running_mean": torch.zeros(dim) if training else 0.5 + torch.randn(dim, generator=g),
        "running_var": torch.ones(dim) if training else 0.5 + torch.rand(dim, generator=g) * 3,
        "training": training,
    }
    x = 0.5 + 2.0 * torch.randn(n, dim, generator=g)
    dout = torch.randn(n, dim, generator=g)
    ref, seconds = _timed(lambda: _batchnorm_reference(x, state, dout))
    inputs = {"dim": dim, "state": state, "x": x, "dout": dout}
    return _prepared("batchnorm", ("ex5",), inputs, lambda value: ref.rows(value, ("gamma", "beta"), n), seconds)


def _tanh_reference(x: torch.Tensor, dout: torch.Tensor) -> _Recorded:
    x = _leaf(x)
    with record() as rec:
        out = torch.tanh(x)
        loss = (out * dout).sum()
    return _Recorded.of(rec, loss, out)


def _tanh(n: int = 32, dim: int = 64, seed: int = 0) -> Prepared:
    g = torch.Generator().manual_seed(seed)
    x = 2.0 * torch.randn(n, dim, generator=g)  # reaches into saturation
    dout = torch.randn(n, dim, generator=g)
    ref, seconds = _timed(lambda: _tanh_reference(x, dout))
    return _prepared("tanh", ("ex5",), {"x": x, "dout": dout}, lambda value: ref.rows(value, (), n), seconds)


# ----------------------------------------------------------------------------
# The deep MLP


def _states(model: MLP) -> tuple[list[str], list[dict[str, Any]]]:
    """Each layer's class name and the state a driver gives the student's layer of that class."""
    kinds, states = [], []
    for layer in model.layers:
        kinds.append(type(layer).__name__)
        state: dict[str, Any] = {}
        for attr in ("weight", "bias", "gamma", "beta", "running_mean", "running_var"):
            value = getattr(layer, attr, None)
            if isinstance(value, torch.Tensor):
                state[attr] = value.detach().clone()
        if hasattr(layer, "training"):
            state["training"] = bool(layer.training)
        states.append(state)
    return kinds, states


def _reference_model(*, vocab_size: int, n_hidden: int, seed: int, **sizes: int) -> MLP:
    return perturb(build_mlp(reference_layers, vocab_size=vocab_size, n_hidden=n_hidden, seed=seed, **sizes), seed)


def _recorded_mlp(twin: MLP, Xb: torch.Tensor, dlogits: torch.Tensor) -> tuple[Any, torch.Tensor]:
    """The twin's forward pass, recorded: every layer's output is named ``layers[i].out``.

    Each output is bound to ``x`` on the line that computes it (``x = layer(x)``), so that
    the recording knows each layer's own step and its inputs: without them no layer below
    a wrong one could be credited as inherited, and the parameters' gradients would not
    follow their layers in backward order.
    """
    C, layers = twin.C, twin.layers
    with record() as rec:
        emb = C[Xb]
        embcat = emb.view(emb.shape[0], -1)
        x = embcat
        for layer in layers:
            x = layer(x)
        loss = (layers[-1].out * dlogits).sum()
    return rec, loss


def _mlp(n: int = 32, n_embd: int = 10, n_hidden: int = 64, block_size: int = 3, vocab_size: int = 27) -> Prepared:
    seed = 0
    model = _reference_model(vocab_size=vocab_size, n_hidden=n_hidden, seed=seed, n_embd=n_embd, block_size=block_size)
    kinds, states = _states(model)
    g = torch.Generator().manual_seed(seed)
    Xb = torch.randint(0, vocab_size, (n, block_size), generator=g)
    dlogits = torch.randn(n, vocab_size, generator=g)
    last = len(model.layers) - 1

    def compute() -> dict[str, Any]:
        twin = autograd_twin(model)
        rec, loss = _recorded_mlp(twin, Xb, dlogits)
        every = rec.grads(loss)
        graded = [k for k in every if k.startswith("layers[") or k == "embcat"]
        reference = {k: every[k] for k in graded if k != f"layers[{last}].out" and every[k] is not None}
        logits = twin.layers[-1].out.detach()
        buffers = {name: value.detach().clone() for name, value in twin.named_buffers()}
        twin.set_training(False)
        with torch.no_grad():
            logits_eval = twin.forward(Xb)
        return {"rec": rec, "loss": loss, "grads": reference, "logits": logits, "buffers": buffers, "eval": logits_eval}

    ref, seconds = _timed(compute)

    def grade(value: Mapping[str, Any]) -> list[Row]:
        douts = list(value.get("douts") or [])
        student: dict[str, object] = {f"layers[{i}].out": d for i, d in enumerate(douts)}
        student.update(value.get("grads") or {})
        student["embcat"] = value.get("dembcat")
        rows = [value_row("logits", value.get("logits"), ref["logits"], "value", n=n)]
        rows += grade_steps(student, ref["rec"], ref["loss"], ref["grads"], n=n)
        buffers = value.get("buffers") or {}
        rows += [value_row(k, buffers.get(k), v, "buffer", n=n) for k, v in ref["buffers"].items()]
        rows.append(value_row("logits(eval)", value.get("logits_eval"), ref["eval"], "value", n=n))
        return rows

    inputs = {"C": model.C.detach().clone(), "kinds": kinds, "states": states, "Xb": Xb, "dlogits": dlogits}
    return _prepared("mlp", ("ex5",), inputs, grade, seconds)


# ----------------------------------------------------------------------------
# Exercise 6


@functools.cache
def _names() -> NamesDataset:
    return load_dataset()


def _ex6_files(layers_ok: bool) -> tuple[str, ...]:
    return ("ex6", "layers" if layers_ok else "reference_layers")


_RUN_NOTE = "graded on the reference layers: your exercise 5 layers do not pass yet, and one mistake costs points once"


def _minibatches(data: NamesDataset, steps: int, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = list(batches(data.Xtr, data.Ytr, steps, batch_size, seed))
    return torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])


def _run_inputs(model: MLP, Xb: torch.Tensor, Yb: torch.Tensor, lr: float) -> dict[str, Any]:
    kinds, states = _states(model)
    return {"C": model.C.detach().clone(), "kinds": kinds, "states": states, "Xb": Xb, "Yb": Yb, "lr": lr}


def _trained_twin(model: MLP, Xb: torch.Tensor, Yb: torch.Tensor, lr: float) -> tuple[MLP, list[float]]:
    twin = autograd_twin(model)
    twin.set_training(True)
    losses = [autograd_step(twin.C, twin.layers, Xb[i], Yb[i], lr) for i in range(Xb.shape[0])]
    return twin, losses


def _from_values(model: MLP, parameters: Mapping[str, object], buffers: Mapping[str, object]) -> MLP | None:
    """The reference model with a run's parameters and buffers, or None when they do not fit it.

    A buffer that is missing or of another shape keeps the model's own: a run is measured
    after :func:`calibrate_batchnorm`, which sets them all again.
    """
    rebuilt = autograd_twin(model)
    with torch.no_grad():
        for name, p in rebuilt.named_parameters():
            value = parameters.get(name)
            if not isinstance(value, torch.Tensor) or value.shape != p.shape or not value.is_floating_point():
                return None
            p.copy_(value)
        for i, layer in enumerate(rebuilt.layers):
            for attr in ("running_mean", "running_var"):
                value = buffers.get(f"layers[{i}].{attr}")
                if (
                    hasattr(layer, attr)
                    and isinstance(value, torch.Tensor)
                    and value.shape == getattr(layer, attr).shape
                ):
                    setattr(layer, attr, value.float().clone())
    return rebuilt


def _training_steps(layers_ok: bool, steps: int = 5, n_hidden: int = 32, lr: float = 0.1, seed: int = 0) -> Prepared:
    data = _names()
    model = _reference_model(vocab_size=data.vocab_size, n_hidden=n_hidden, seed=seed)
    Xb, Yb = _minibatches(data, steps, 32, seed)
    (twin, losses), seconds = _timed(lambda: _trained_twin(model, Xb, Yb, lr))

    def grade(value: Mapping[str, Any]) -> list[Row]:
        rows = [value_row("losses", _tensor_list(value.get("losses") or []), torch.tensor(losses), "metric")]
        params = value.get("parameters") or {}
        rows += [value_row(k, params.get(k), p.detach(), "value") for k, p in twin.named_parameters()]
        buffers = value.get("buffers") or {}
        rows += [value_row(k, buffers.get(k), b, "buffer") for k, b in twin.named_buffers()]
        return rows

    note = "" if layers_ok else _RUN_NOTE
    return _prepared("training_run", _ex6_files(layers_ok), _run_inputs(model, Xb, Yb, lr), grade, seconds, note)


def _calibration(layers_ok: bool, n_hidden: int = 32, seed: int = 0) -> Prepared:
    data = _names()
    model = _reference_model(vocab_size=data.vocab_size, n_hidden=n_hidden, seed=seed)

    def compute() -> tuple[MLP, float]:
        twin = calibrate_batchnorm(autograd_twin(model), data.Xtr)
        return twin, split_loss(twin, data.Xdev, data.Ydev)

    (twin, dev_loss), seconds = _timed(compute)

    def grade(value: Mapping[str, Any]) -> list[Row]:
        buffers = value.get("buffers") or {}
        rows = [value_row(k, buffers.get(k), b, "buffer") for k, b in twin.named_buffers()]
        modes = list(value.get("training") or [])
        flags = torch.tensor([0.0 if m is False else 1.0 for m in modes])
        row = value_row("training", flags, torch.zeros(len(modes)), "flag")
        if not row.passed:
            still = [i for i, m in enumerate(modes) if m is not False]
            row = replace(row, note=f"calibrate must leave every batchnorm in eval mode (training = False); "
                                    f"{len(still)} of {len(modes)} are not")  # fmt: skip
        rows.append(row)
        calibrated = _from_values(model, dict(model.named_parameters()), buffers)
        if calibrated is not None and all(row.passed or row.comparison.problem == "mismatch" for row in rows):
            # The dev loss these statistics give, when they are statistics of the right shape at all.
            calibrated.set_training(False)
            loss = torch.tensor(split_loss(calibrated, data.Xdev, data.Ydev))
            rows.append(value_row("dev loss", loss, torch.tensor(dev_loss), "metric"))
        return rows

    kinds, states = _states(model)
    inputs = {"C": model.C.detach().clone(), "kinds": kinds, "states": states, "X": data.Xtr}
    return _prepared("calibration", _ex6_files(layers_ok), inputs, grade, seconds, "" if layers_ok else _RUN_NOTE)


@dataclass(frozen=True)
class _Target:
    loss: float
    target: float
    reference: float
    steps: int
    first: float | None = None

    def row(self) -> Row:
        reached = self.loss <= self.target
        c = compare("dev loss", torch.tensor(self.loss), torch.tensor(self.target), rtol=0.0, atol=float("inf"))
        start = f"{self.first:.4f}" if self.first is not None else "n/a"
        note = (
            f"dev loss {self.loss:.4f} after {self.steps} steps (first minibatch loss {start}): "
            f"{'reached' if reached else 'missed'} the target {self.target:.2f}; the reference reaches "
            f"{self.reference:.4f}"
        )
        return Row(c, OK if reached else WRONG, note, "metric")


def _loss_target(
    layers_ok: bool, steps: int = 300, target: float = 3.0, n_hidden: int = 32, lr: float = 0.1, seed: int = 0
) -> Prepared:
    # A uniform guess scores ln(27) = 3.30; the reference reaches about 2.85 in 300 steps.
    data = _names()
    model = build_mlp(reference_layers, vocab_size=data.vocab_size, n_hidden=n_hidden, seed=seed)
    Xb, Yb = _minibatches(data, steps, 32, seed)

    def compute() -> float:
        twin, _ = _trained_twin(model, Xb, Yb, lr)
        return split_loss(calibrate_batchnorm(twin, data.Xtr), data.Xdev, data.Ydev)

    reference, seconds = _timed(compute)

    def grade(value: Mapping[str, Any]) -> list[Row]:
        trained = _from_values(model, value.get("parameters") or {}, value.get("buffers") or {})
        if trained is None:
            message = "the run's parameters do not have the model's shapes and dtype: nothing to measure"
            return [replace(row_for_error("dev loss", torch.tensor(target), WRONG, message), kind="metric")]
        loss = split_loss(calibrate_batchnorm(trained, data.Xtr), data.Xdev, data.Ydev)
        losses = value.get("losses") or []
        first = losses[0] if losses and isinstance(losses[0], float) else None
        return [_Target(loss if loss == loss else float("inf"), target, reference, steps, first).row()]

    note = "" if layers_ok else _RUN_NOTE
    return _prepared("training_run", _ex6_files(layers_ok), _run_inputs(model, Xb, Yb, lr), grade, seconds, note)


_PREPARE: dict[str, Callable[[bool], Prepared]] = {
    "linear": lambda _: _linear(bias=True),
    "linear_without_bias": lambda _: _linear(bias=False),
    "batchnorm_training": lambda _: _batchnorm(training=True),
    "batchnorm_eval": lambda _: _batchnorm(training=False),
    "tanh": lambda _: _tanh(),
    "deep_mlp": lambda _: _mlp(),
    "training_steps": _training_steps,
    "calibration": _calibration,
    "loss_target": _loss_target,
}


def prepare(check: LayerCheck, layers_ok: bool = True) -> Prepared:
    """Draw ``check``'s inputs and compute its reference.

    Args:
        check: one of :data:`LAYER_CHECKS`.
        layers_ok: for exercise 6, whether the student's exercise 5 layers pass;
            when they do not, exercise 6 runs on the reference layers.
    """
    return _PREPARE[check.key](layers_ok)
