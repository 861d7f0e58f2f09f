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
from gradcheck_kit.course import layer_mistakes as found
from gradcheck_kit.course.catalogue import Hints
from gradcheck_kit.course.prepared import Prepared
from gradcheck_kit.grading.mistakes import Mistake
from gradcheck_kit.grading.steps import grade_gradient, grade_steps, row_for_error, term_scales
from gradcheck_kit.grading.tolerances import graded_compare
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
from gradcheck_kit.report import EXACT, NO_DIAGNOSIS, NOT_STARTED, OK, WRONG, Diagnosis, Report, Row

__all__ = ["LAYER_CHECKS", "LayerCheck", "explained", "graded", "prepare", "value_row"]

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


def explained(row: Row, detect: Callable[[], Diagnosis | None] | None = None, hint: str = "") -> Row:
    """``row`` with the mistake ``detect`` recognises in its values, and the hint to show when none is recognised.

    Only a row whose values are off is looked at: a missing value, a wrong shape,
    dtype or device, or NaN already says what it is. A detector of this exercise
    takes the place of the generic one's diagnosis; the verdict is left as it is.
    """
    if row.passed or row.comparison.problem != "mismatch":
        return row
    diagnosis = (detect() if detect is not None else None) or row.diagnosis
    remark = "" if row.note == NO_DIAGNOSIS else row.note
    return replace(row, note=NO_DIAGNOSIS if diagnosis is None else remark, diagnosis=diagnosis, hint=hint)


def graded(
    name: str,
    actual: object,
    expected: torch.Tensor,
    kind: str = "gradient",
    *,
    n: int | None = None,
    scale: float = 0.0,
    detect: Callable[[], Diagnosis | None] | None = None,
    hint: str = "",
) -> Row:
    """A value graded like a gradient, named as what it is, its mistake named when a detector finds one."""
    row = grade_gradient(name, actual, expected, n=n, scale=scale)
    if kind != "gradient":
        row = replace(row, kind=kind, note="no value yet" if row.verdict == NOT_STARTED else row.note)
    return explained(row, detect, hint)


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

    def rows(
        self, value: Mapping[str, Any], params: Sequence[str], n: int, detect: _Detect | None = None, hint: str = ""
    ) -> list[Row]:
        """``out``, then ``dx`` and each parameter's gradient, then the buffers.

        A parameter's gradient passes when the first call's and a second call's (on the
        layer given the same state and input again, ``grads_again``) are both right.
        ``detect(name, actual)`` names the mistake in a wrong value, when it can.
        """

        def row(name: str, actual: object, expected: torch.Tensor, kind: str, scale: float = 0.0) -> Row:
            find = (lambda: detect(name, actual, expected)) if detect is not None else None
            return graded(name, actual, expected, kind, n=n, scale=scale, detect=find, hint=hint)

        rows = [row("out", value.get("out"), self.out, "value")]
        student = {"x": value.get("dx"), **(value.get("grads") or {})}
        again = value.get("grads_again") or {}
        for name in ("x", *params):
            expected = self.grads[name]
            assert expected is not None
            first = row(name, student.get(name), expected, "gradient", self.scale(name))
            if name != "x":
                first = _second_call(first, student.get(name), again.get(name), expected, n, self.scale(name))
            rows.append(first)
        buffers = value.get("buffers") or {}
        rows += [row(attr, buffers.get(attr), b, "buffer") for attr, b in self.buffers.items()]
        return rows


#: ``detect(name, actual, expected)``: the mistake a single layer's wrong value shows, if a known one.
_Detect = Callable[[str, object, torch.Tensor], "Diagnosis | None"]


def _second_call(first: Row, actual: object, again: object, expected: torch.Tensor, n: int, scale: float) -> Row:
    """A parameter's gradient row: the first call's, or the second call's when only the first is right."""
    if not first.passed:
        return first
    second = grade_gradient(first.name, again, expected, n=n, scale=scale)
    if second.passed:
        return first
    diagnosis = found.accumulated(f"d{first.name}", actual, again, expected)
    note = "" if diagnosis else f"no d{first.name} after a second backward call with the same input"
    return replace(second, verdict=WRONG, note=note, diagnosis=diagnosis, hint="")


def _linear_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dout: torch.Tensor
) -> _Recorded:
    x, weight = _leaf(x), _leaf(weight)
    bias = _leaf(bias) if bias is not None else None
    with record() as rec:
        out = x @ weight if bias is None else x @ weight + bias
        loss = (out * dout).sum()
    return _Recorded.of(rec, loss, out)


def _linear(bias: bool, hint: str, n: int = 32, fan_in: int = 30, fan_out: int = 64, seed: int = 0) -> Prepared:
    g = torch.Generator().manual_seed(seed)
    state = {"weight": torch.randn(fan_in, fan_out, generator=g) / fan_in**0.5}
    if bias:
        state["bias"] = 0.1 * torch.randn(fan_out, generator=g)  # not zero: a dropped bias shows
    x = torch.randn(n, fan_in, generator=g)
    dout = torch.randn(n, fan_out, generator=g)
    ref, seconds = _timed(lambda: _linear_reference(x, state["weight"], state.get("bias"), dout))
    params = ("weight", "bias") if bias else ("weight",)
    inputs = {"fan_in": fan_in, "fan_out": fan_out, "state": state, "x": x, "dout": dout}
    return _prepared("linear", ("ex5",), inputs, lambda value: ref.rows(value, params, n, hint=hint), seconds)


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


def _batchnorm(training: bool, hint: str, n: int = 32, dim: int = 64, seed: int = 0) -> Prepared:
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

    def detect(value: Mapping[str, Any], name: str, actual: object, expected: torch.Tensor) -> Diagnosis | None:
        gamma, beta = state["gamma"], state["beta"]
        buffers = value.get("buffers") or {}
        if not training:
            # Values computed with running statistics the forward pass changed name that change.
            yours = {attr: buffers.get(attr) for attr in ("running_mean", "running_var")}
            inputs = {"x": x, "gamma": gamma, "beta": beta, "dout": dout, "eps": EPS}
            diagnosis = found.eval_with_changed_statistics(name, actual, expected, **inputs, **yours)
            if diagnosis is not None:
                return diagnosis
        if name == "out":
            return found.batchnorm_out(actual, expected, x=x, gamma=gamma, beta=beta, training=training, eps=EPS)
        if name == "x":
            stats = {"running_mean": state["running_mean"], "running_var": state["running_var"]}
            return found.batchnorm_dx(
                actual, expected, x=x, gamma=gamma, dout=dout, training=training, eps=EPS, **stats
            )
        if name in ("running_mean", "running_var"):
            before = state[name]
            return found.running_statistic(
                name, actual, expected, before=before, x=x, momentum=MOMENTUM, training=training
            )
        return None

    inputs = {"dim": dim, "state": state, "x": x, "dout": dout}
    grade = lambda value: ref.rows(value, ("gamma", "beta"), n, functools.partial(detect, value), hint)  # noqa: E731
    return _prepared("batchnorm", ("ex5",), inputs, grade, seconds)


def _tanh_reference(x: torch.Tensor, dout: torch.Tensor) -> _Recorded:
    x = _leaf(x)
    with record() as rec:
        out = torch.tanh(x)
        loss = (out * dout).sum()
    return _Recorded.of(rec, loss, out)


def _tanh(hint: str, n: int = 32, dim: int = 64, seed: int = 0) -> Prepared:
    g = torch.Generator().manual_seed(seed)
    x = 2.0 * torch.randn(n, dim, generator=g)  # reaches into saturation
    dout = torch.randn(n, dim, generator=g)
    ref, seconds = _timed(lambda: _tanh_reference(x, dout))

    def detect(name: str, actual: object, expected: torch.Tensor) -> Diagnosis | None:
        return found.tanh_dx(actual, expected, x=x, dout=dout) if name == "x" else None

    grade = lambda value: ref.rows(value, (), n, detect, hint)  # noqa: E731
    return _prepared("tanh", ("ex5",), {"x": x, "dout": dout}, grade, seconds)


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


def _mlp(
    hint: str, n: int = 32, n_embd: int = 10, n_hidden: int = 64, block_size: int = 3, vocab_size: int = 27
) -> Prepared:
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
        steps = [k for k in every if k.startswith("layers[") or k == "embcat"]
        reference = {k: every[k] for k in steps if k != f"layers[{last}].out" and every[k] is not None}
        logits = twin.layers[-1].out.detach()
        inputs = [layer.out.detach() for layer in twin.layers]  # inputs[i - 1] is layer i's input
        buffers = {name: value.detach().clone() for name, value in twin.named_buffers()}
        twin.set_training(False)
        with torch.no_grad():
            logits_eval = twin.forward(Xb)
        return {
            "rec": rec, "loss": loss, "grads": reference, "logits": logits, "inputs": inputs, "buffers": buffers,
            "eval": logits_eval,
        }  # fmt: skip

    ref, seconds = _timed(compute)

    def grade(value: Mapping[str, Any]) -> list[Row]:
        douts = list(value.get("douts") or [])
        student: dict[str, object] = {f"layers[{i}].out": d for i, d in enumerate(douts)}
        student.update(value.get("grads") or {})
        student["embcat"] = value.get("dembcat")
        rows = [value_row("logits", value.get("logits"), ref["logits"], "value", n=n)]
        mistakes = _layer_mistakes(kinds, states, ref["inputs"], douts)
        hints = dict.fromkeys(ref["grads"], hint)
        known = {m.message: d for m, d in mistakes.values()}
        for row in grade_steps(student, ref["rec"], ref["loss"], ref["grads"], n=n, hints=hints,
                               mistakes={k: [m] for k, (m, _) in mistakes.items()}):  # fmt: skip
            # A mistake of this exercise says what it was recognised from in its own words.
            recognised = known.get(row.diagnosis.detected) if row.diagnosis is not None else None
            rows.append(replace(row, diagnosis=recognised) if recognised is not None else row)
        buffers = value.get("buffers") or {}
        for k, expected in ref["buffers"].items():
            i, attr = _layer_attr(k)
            before, x = states[i][attr], ref["inputs"][i - 1]
            detect = functools.partial(
                found.running_statistic, k, buffers.get(k), expected, before=before, x=x, momentum=MOMENTUM,
                training=True,
            )  # fmt: skip
            rows.append(graded(k, buffers.get(k), expected, "buffer", n=n, detect=detect, hint=hint))
        wrong = [row.name for row in rows if row.kind == "buffer" and not row.passed]
        actual = value.get("logits_eval")
        detect = functools.partial(_eval_logits, actual, ref["eval"], ref["logits"], model, buffers, Xb, wrong)
        rows.append(graded("logits(eval)", actual, ref["eval"], "value", n=n, detect=detect, hint=hint))
        return rows

    inputs = {"C": model.C.detach().clone(), "kinds": kinds, "states": states, "Xb": Xb, "dlogits": dlogits}
    return _prepared("mlp", ("ex5",), inputs, grade, seconds)


def _eval_logits(
    actual: object,
    expected: torch.Tensor,
    training_logits: torch.Tensor,
    model: MLP,
    buffers: Mapping[str, object],
    Xb: torch.Tensor,
    wrong: Sequence[str],
) -> Diagnosis | None:
    """Why the eval-mode logits are wrong: batch statistics used or updated in eval mode, or wrong running ones."""
    if found.explains(actual, training_logits, expected):
        return Diagnosis(
            "the eval-mode forward pass normalised with the batch statistics",
            "logits(eval) equal the training-mode logits of the same batch; eval mode uses the running statistics",
        )
    if not isinstance(actual, torch.Tensor):
        return None
    updating = _eval_forward(model, buffers, Xb, update=True)
    if updating is not None and found.explains(actual, updating, expected):
        return Diagnosis(
            "the running statistics changed in eval mode before the batch was normalised",
            "logits(eval) are those of an eval-mode forward pass in which each batchnorm first moves its running "
            f"statistics {100 * MOMENTUM:.0f}% of the way to the batch's",
        )
    yours = _eval_forward(model, buffers, Xb) if wrong else None
    if yours is None or not graded_compare("logits(eval)", actual, yours).approximate:
        return None
    return Diagnosis(
        f"the error is in the running statistics: {_listed(wrong)}",
        "logits(eval) are what the eval-mode forward pass gives with your running statistics",
    )


@torch.no_grad()
def _eval_forward(
    model: MLP, buffers: Mapping[str, object], Xb: torch.Tensor, *, update: bool = False
) -> torch.Tensor | None:
    """The eval-mode logits with the given running statistics; with ``update``, each moved toward the batch's first."""
    rebuilt = _from_values(model, dict(model.named_parameters()), buffers)
    if rebuilt is None:
        return None
    rebuilt.set_training(False)
    emb = rebuilt.C[Xb]
    x = emb.view(emb.shape[0], -1)
    for layer in rebuilt.layers:
        if update and hasattr(layer, "running_mean"):
            layer.running_mean = (1 - MOMENTUM) * layer.running_mean + MOMENTUM * x.mean(0)
            layer.running_var = (1 - MOMENTUM) * layer.running_var + MOMENTUM * x.var(0)
        x = layer(x)
    return x


def _listed(names: Sequence[str]) -> str:
    """``a`` or ``a and 3 more``: the first of several names, and how many follow."""
    return names[0] if len(names) == 1 else f"{names[0]} and {len(names) - 1} more"


def _layer_attr(name: str) -> tuple[int, str]:
    """``("layers[4].running_var")`` -> ``(4, "running_var")``."""
    layer, attr = name.split(".", 1)
    return int(layer[len("layers[") : -1]), attr


def _layer_mistakes(
    kinds: Sequence[str], states: Sequence[Mapping[str, Any]], inputs: Sequence[torch.Tensor], douts: Sequence[object]
) -> dict[str, tuple[Mistake, Diagnosis]]:
    """For each layer's backward in the deep MLP, the known wrong version built from the student's own dout.

    Keyed by the gradient the layer's backward returns (``layers[i-1].out`` for layer i).
    """
    mistakes: dict[str, tuple[Mistake, Diagnosis]] = {}
    for i, kind in enumerate(kinds):
        dout = douts[i] if i < len(douts) else None
        if not i or not isinstance(dout, torch.Tensor) or dout.shape != inputs[i].shape or kind == "Linear":
            continue
        x = inputs[i - 1]
        dout = dout.detach().to(x.device, x.dtype)
        if kind == "Tanh":
            versions = found.tanh_dx_versions(x=x, dout=dout)
        else:
            stats = {"running_mean": states[i]["running_mean"], "running_var": states[i]["running_var"]}
            versions = found.batchnorm_dx_versions(x=x, gamma=states[i]["gamma"], dout=dout, training=True, eps=EPS,
                                                   **stats)  # fmt: skip
        wrong, diagnosis = versions[0]
        mistake = Mistake(kind, diagnosis.detected, functools.partial(torch.Tensor.clone, wrong))
        mistakes[f"layers[{i - 1}].out"] = (mistake, diagnosis)
    return mistakes


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


def _replayed(
    model: MLP, Xb: torch.Tensor, Yb: torch.Tensor, lr: float, frozen: Sequence[str]
) -> tuple[MLP, list[float]]:
    """The reference run with the parameters named ``frozen`` never updated: what a run gives that leaves them."""
    twin = autograd_twin(model)
    twin.set_training(True)
    named = dict(twin.named_parameters())
    kept = {k: named[k].detach().clone() for k in frozen}
    losses = []
    for i in range(Xb.shape[0]):
        losses.append(autograd_step(twin.C, twin.layers, Xb[i], Yb[i], lr))
        with torch.no_grad():
            for k, v in kept.items():
                named[k].copy_(v)
    return twin, losses


def _training_steps(
    layers_ok: bool, hint: str, steps: int = 5, n_hidden: int = 32, lr: float = 0.1, seed: int = 0
) -> Prepared:
    data = _names()
    model = _reference_model(vocab_size=data.vocab_size, n_hidden=n_hidden, seed=seed)
    Xb, Yb = _minibatches(data, steps, 32, seed)
    (twin, losses), seconds = _timed(lambda: _trained_twin(model, Xb, Yb, lr))
    given = {k: p.detach() for k, p in model.named_parameters()}

    def grade(value: Mapping[str, Any]) -> list[Row]:
        params = value.get("parameters") or {}
        buffers = value.get("buffers") or {}
        kept = value.get("kept") or {}
        trained = {k: p.detach() for k, p in twin.named_parameters()}
        unchanged = {
            k: d for k in trained
            if (d := found.unchanged(k, params.get(k), given[k], trained[k], steps, kept.get(k, True))) is not None
        }  # fmt: skip
        # The run in which what did not change is held as it was: the rows it explains are not their own mistake.
        replay = _replayed(model, Xb, Yb, lr, list(unchanged)) if unchanged else None

        def cause(name: str, actual: object) -> Callable[[], Diagnosis | None]:
            def detect() -> Diagnosis | None:
                if name in unchanged:
                    return unchanged[name]
                if replay is None or not isinstance(actual, torch.Tensor):
                    return None
                values = {"losses": torch.tensor(replay[1]), **dict(replay[0].named_parameters())}
                values.update(replay[0].named_buffers())
                if not graded_compare(name, actual, values[name].detach()).approximate:
                    return None
                held = _listed(list(unchanged))
                return Diagnosis(
                    f"the error is that {held} did not change",
                    f"{name} is what {steps} steps give when {held} {'stays' if len(unchanged) == 1 else 'stay'} "
                    "as given",
                )

            return detect

        student_losses = _tensor_list(value.get("losses") or [])
        rows = [graded("losses", student_losses, torch.tensor(losses), "metric", detect=cause("losses", student_losses),
                       hint=hint)]  # fmt: skip
        for k, p in trained.items():
            rows.append(graded(k, params.get(k), p, "value", detect=cause(k, params.get(k)), hint=hint))
        for k, b in twin.named_buffers():
            rows.append(graded(k, buffers.get(k), b, "buffer", detect=cause(k, buffers.get(k)), hint=hint))
        return rows

    note = "" if layers_ok else _RUN_NOTE
    return _prepared("training_run", _ex6_files(layers_ok), _run_inputs(model, Xb, Yb, lr), grade, seconds, note)


@torch.no_grad()
def _input_statistics(model: MLP, buffers: Mapping[str, object], X: torch.Tensor) -> dict[int, dict[str, torch.Tensor]]:
    """Each batchnorm's input statistics over ``X`` in eval mode, every layer normalising with the given buffers.

    What a calibration measures at each layer when the layers before it hold the
    student's statistics: a layer whose own statistic is right for its input is not
    where the mistake is. None when the buffers do not fit the model.
    """
    rebuilt = _from_values(model, dict(model.named_parameters()), buffers)
    if rebuilt is None:
        return {}
    rebuilt.set_training(False)
    emb = rebuilt.C[X]
    x = emb.view(emb.shape[0], -1)
    statistics = {}
    for i, layer in enumerate(rebuilt.layers):
        if hasattr(layer, "running_mean"):
            statistics[i] = {"mean": x.mean(0), "var": x.var(0, unbiased=True), "biased": x.var(0, unbiased=False)}
        x = layer(x)
    return statistics


def _calibration(layers_ok: bool, hint: str, n_hidden: int = 32, seed: int = 0) -> Prepared:
    data = _names()
    model = _reference_model(vocab_size=data.vocab_size, n_hidden=n_hidden, seed=seed)
    rows_of_X = data.Xtr.shape[0]

    def compute() -> tuple[MLP, float]:
        twin = calibrate_batchnorm(autograd_twin(model), data.Xtr)
        return twin, split_loss(twin, data.Xdev, data.Ydev)

    (twin, dev_loss), seconds = _timed(compute)

    def grade(value: Mapping[str, Any]) -> list[Row]:
        buffers = value.get("buffers") or {}
        expected = dict(twin.named_buffers())
        statistics = _input_statistics(model, buffers, data.Xtr)
        own: dict[str, Diagnosis] = {}  # a buffer's own mistake, seen even where it passes
        rows: list[Row] = []
        for k, b in expected.items():
            i, attr = _layer_attr(k)
            actual = buffers.get(k)
            if attr == "running_var" and i in statistics:
                stats = statistics[i]
                diagnosis = found.calibrated_variance(k, actual, stats["var"], stats["biased"], rows_of_X)
                if diagnosis is not None:
                    own[k] = diagnosis
            detect = functools.partial(_calibrated, k, actual, b, statistics.get(i), own, rows)
            rows.append(graded(k, actual, b, "buffer", detect=detect, hint=hint))
        rows.append(_flags(list(value.get("training") or [])))
        calibrated = _from_values(model, dict(model.named_parameters()), buffers)
        if calibrated is not None and all(row.passed or row.comparison.problem == "mismatch" for row in rows):
            # The dev loss these statistics give, when they are statistics of the right shape at all.
            calibrated.set_training(False)
            loss = torch.tensor(split_loss(calibrated, data.Xdev, data.Ydev))
            wrong = [row.name for row in rows if row.kind == "buffer" and not row.passed]
            detect = functools.partial(_blamed_on_statistics, wrong) if wrong else None
            rows.append(graded("dev loss", loss, torch.tensor(dev_loss), "metric", detect=detect, hint=hint))
        return rows

    kinds, states = _states(model)
    inputs = {"C": model.C.detach().clone(), "kinds": kinds, "states": states, "X": data.Xtr}
    return _prepared("calibration", _ex6_files(layers_ok), inputs, grade, seconds, "" if layers_ok else _RUN_NOTE)


def _blamed_on_statistics(wrong: Sequence[str]) -> Diagnosis:
    return Diagnosis(
        f"the error is in the running statistics: {_listed(wrong)}",
        "the dev loss is measured in eval mode, where the layers normalise with them",
    )


def _calibrated(
    name: str,
    actual: object,
    expected: torch.Tensor,
    statistics: Mapping[str, torch.Tensor] | None,
    own: Mapping[str, Diagnosis],
    earlier: Sequence[Row],
) -> Diagnosis | None:
    """A calibrated buffer's mistake: its own, or, when it is right for the input it was given, an earlier one's."""
    if name in own:
        return own[name]
    if statistics is None or not isinstance(actual, torch.Tensor):
        return None
    which = "mean" if name.endswith("running_mean") else "var"
    if not graded_compare(name, actual, statistics[which]).approximate:
        return None
    causes = [d for k, d in own.items() if k != name]
    causes += [Diagnosis(f"{row.name} is wrong") for row in earlier if not row.passed and row.name not in own]
    source = f"{name} is the {'mean' if which == 'mean' else 'variance'} of the input your earlier statistics give it"
    if not causes:
        return Diagnosis("not this layer's mistake: the error is in an earlier layer's statistics", source)
    cause = causes[0]
    return Diagnosis(
        f"not this layer's mistake: {cause.detected}", f"{cause.evidence}; {source}" if cause.evidence else source
    )


def _flags(modes: Sequence[object]) -> Row:
    """Whether calibrate left every batchnorm in eval mode: one flag per layer, compared exactly."""
    actual = torch.tensor([m is not False for m in modes], dtype=torch.bool)
    c = compare("training", actual, torch.zeros(len(modes), dtype=torch.bool), rtol=0.0, atol=0.0)
    if c.approximate:
        return Row(c, EXACT, kind="flag")
    return Row(c, WRONG, kind="flag", diagnosis=found.left_in_training(modes))


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


_PREPARE: dict[str, Callable[[bool, Hints], Prepared]] = {
    "linear": lambda _, hints: _linear(True, hints.exercise.get("ex5", "")),
    "linear_without_bias": lambda _, hints: _linear(False, hints.exercise.get("ex5", "")),
    "batchnorm_training": lambda _, hints: _batchnorm(True, hints.exercise.get("ex5", "")),
    "batchnorm_eval": lambda _, hints: _batchnorm(False, hints.exercise.get("ex5", "")),
    "tanh": lambda _, hints: _tanh(hints.exercise.get("ex5", "")),
    "deep_mlp": lambda _, hints: _mlp(hints.exercise.get("ex5", "")),
    "training_steps": lambda layers_ok, hints: _training_steps(layers_ok, hints.exercise.get("ex6", "")),
    "calibration": lambda layers_ok, hints: _calibration(layers_ok, hints.exercise.get("ex6", "")),
    "loss_target": lambda layers_ok, _: _loss_target(layers_ok),
}


def prepare(check: LayerCheck, layers_ok: bool = True, hints: Hints | None = None) -> Prepared:
    """Draw ``check``'s inputs and compute its reference.

    Args:
        check: one of :data:`LAYER_CHECKS`.
        layers_ok: for exercise 6, whether the student's exercise 5 layers pass;
            when they do not, exercise 6 runs on the reference layers.
        hints: the exercise's hint is shown with a wrong value whose mistake no detector recognises.
    """
    return _PREPARE[check.key](layers_ok, hints or Hints())
