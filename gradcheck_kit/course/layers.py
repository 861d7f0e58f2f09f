"""Exercises 5 and 6 on the grading side: each check's inputs, its autograd reference, and how its values are graded.

The checks of exercise 5 are here, those of exercise 6 in
:mod:`~gradcheck_kit.course.training_checks`, and what both share (rows, the
reference model) in :mod:`~gradcheck_kit.course.layer_values`; :func:`prepare`
prepares any of them. A check is prepared in the grading process: the inputs are drawn, the
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from gradcheck_kit.course import layer_mistakes as found
from gradcheck_kit.course import training_checks
from gradcheck_kit.course.catalogue import Hints
from gradcheck_kit.course.layer_values import (
    EPS,
    MOMENTUM,
    from_values,
    graded,
    layer_attr,
    layer_states,
    listed,
    prepared,
    reference_model,
    timed,
    value_row,
)
from gradcheck_kit.course.prepared import Prepared
from gradcheck_kit.grading.mistakes import Mistake
from gradcheck_kit.grading.steps import grade_gradient, grade_steps, term_scales
from gradcheck_kit.grading.tolerances import graded_compare
from gradcheck_kit.makemore.training import MLP, autograd_twin
from gradcheck_kit.recording.recorder import record
from gradcheck_kit.report import WRONG, Diagnosis, Row

__all__ = ["LAYER_CHECKS", "LayerCheck", "prepare"]


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


# ----------------------------------------------------------------------------
# Single layers


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
    ref, seconds = timed(lambda: _linear_reference(x, state["weight"], state.get("bias"), dout))
    params = ("weight", "bias") if bias else ("weight",)
    inputs = {"fan_in": fan_in, "fan_out": fan_out, "state": state, "x": x, "dout": dout}
    return prepared("linear", ("ex5",), inputs, lambda value: ref.rows(value, params, n, hint=hint), seconds)


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
    ref, seconds = timed(lambda: _batchnorm_reference(x, state, dout))

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
    return prepared("batchnorm", ("ex5",), inputs, grade, seconds)


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
    ref, seconds = timed(lambda: _tanh_reference(x, dout))

    def detect(name: str, actual: object, expected: torch.Tensor) -> Diagnosis | None:
        return found.tanh_dx(actual, expected, x=x, dout=dout) if name == "x" else None

    grade = lambda value: ref.rows(value, (), n, detect, hint)  # noqa: E731
    return prepared("tanh", ("ex5",), {"x": x, "dout": dout}, grade, seconds)


# ----------------------------------------------------------------------------
# The deep MLP


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
    model = reference_model(vocab_size=vocab_size, n_hidden=n_hidden, seed=seed, n_embd=n_embd, block_size=block_size)
    kinds, states = layer_states(model)
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

    ref, seconds = timed(compute)

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
            i, attr = layer_attr(k)
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
    return prepared("mlp", ("ex5",), inputs, grade, seconds)


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
        f"the error is in the running statistics: {listed(wrong)}",
        "logits(eval) are what the eval-mode forward pass gives with your running statistics",
    )


@torch.no_grad()
def _eval_forward(
    model: MLP, buffers: Mapping[str, object], Xb: torch.Tensor, *, update: bool = False
) -> torch.Tensor | None:
    """The eval-mode logits with the given running statistics; with ``update``, each moved toward the batch's first."""
    rebuilt = from_values(model, dict(model.named_parameters()), buffers)
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


_PREPARE: dict[str, Callable[[bool, Hints], Prepared]] = {
    "linear": lambda _, hints: _linear(True, hints.exercise.get("ex5", "")),
    "linear_without_bias": lambda _, hints: _linear(False, hints.exercise.get("ex5", "")),
    "batchnorm_training": lambda _, hints: _batchnorm(True, hints.exercise.get("ex5", "")),
    "batchnorm_eval": lambda _, hints: _batchnorm(False, hints.exercise.get("ex5", "")),
    "tanh": lambda _, hints: _tanh(hints.exercise.get("ex5", "")),
    "deep_mlp": lambda _, hints: _mlp(hints.exercise.get("ex5", "")),
    "training_steps": lambda layers_ok, hints: training_checks.training_steps(layers_ok, hints.exercise.get("ex6", "")),
    "calibration": lambda layers_ok, hints: training_checks.calibration(layers_ok, hints.exercise.get("ex6", "")),
    "loss_target": lambda layers_ok, _: training_checks.loss_target(layers_ok),
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
