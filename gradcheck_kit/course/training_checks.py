"""Exercise 6 on the grading side: five steps against an autograd-trained twin, calibration, and a loss target.

Each check runs the student's ``train_step`` or ``calibrate`` on the student's
exercise 5 layers when those pass, and on the reference layers otherwise. A row
that is wrong only because of another names that one: the rows of a run in which
a parameter never changed are compared with a run that holds it as given, and a
calibrated statistic with the statistic of the input the earlier layers' own
statistics give it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from gradcheck_kit.comparison import compare
from gradcheck_kit.course import layer_mistakes as found
from gradcheck_kit.course.layer_values import (
    from_values,
    graded,
    layer_attr,
    layer_states,
    listed,
    prepared,
    reference_model,
    tensor_list,
    timed,
)
from gradcheck_kit.course.prepared import Prepared
from gradcheck_kit.grading.steps import row_for_error
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
    split_loss,
)
from gradcheck_kit.report import EXACT, OK, WRONG, Diagnosis, Row

__all__ = ["calibration", "loss_target", "training_steps"]


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
    kinds, states = layer_states(model)
    return {"C": model.C.detach().clone(), "kinds": kinds, "states": states, "Xb": Xb, "Yb": Yb, "lr": lr}


def _trained_twin(model: MLP, Xb: torch.Tensor, Yb: torch.Tensor, lr: float) -> tuple[MLP, list[float]]:
    twin = autograd_twin(model)
    twin.set_training(True)
    losses = [autograd_step(twin.C, twin.layers, Xb[i], Yb[i], lr) for i in range(Xb.shape[0])]
    return twin, losses


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


def training_steps(
    layers_ok: bool, hint: str, steps: int = 5, n_hidden: int = 32, lr: float = 0.1, seed: int = 0
) -> Prepared:
    data = _names()
    model = reference_model(vocab_size=data.vocab_size, n_hidden=n_hidden, seed=seed)
    Xb, Yb = _minibatches(data, steps, 32, seed)
    (twin, losses), seconds = timed(lambda: _trained_twin(model, Xb, Yb, lr))
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
                held = listed(list(unchanged))
                return Diagnosis(
                    f"the error is that {held} did not change",
                    f"{name} is what {steps} steps give when {held} {'stays' if len(unchanged) == 1 else 'stay'} "
                    "as given",
                )

            return detect

        student_losses = tensor_list(value.get("losses") or [])
        rows = [graded("losses", student_losses, torch.tensor(losses), "metric", detect=cause("losses", student_losses),
                       hint=hint)]  # fmt: skip
        for k, p in trained.items():
            rows.append(graded(k, params.get(k), p, "value", detect=cause(k, params.get(k)), hint=hint))
        for k, b in twin.named_buffers():
            rows.append(graded(k, buffers.get(k), b, "buffer", detect=cause(k, buffers.get(k)), hint=hint))
        return rows

    note = "" if layers_ok else _RUN_NOTE
    return prepared("training_run", _ex6_files(layers_ok), _run_inputs(model, Xb, Yb, lr), grade, seconds, note)


@torch.no_grad()
def _input_statistics(model: MLP, buffers: Mapping[str, object], X: torch.Tensor) -> dict[int, dict[str, torch.Tensor]]:
    """Each batchnorm's input statistics over ``X`` in eval mode, every layer normalising with the given buffers.

    What a calibration measures at each layer when the layers before it hold the
    student's statistics: a layer whose own statistic is right for its input is not
    where the mistake is. None when the buffers do not fit the model.
    """
    rebuilt = from_values(model, dict(model.named_parameters()), buffers)
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


def calibration(layers_ok: bool, hint: str, n_hidden: int = 32, seed: int = 0) -> Prepared:
    data = _names()
    model = reference_model(vocab_size=data.vocab_size, n_hidden=n_hidden, seed=seed)
    rows_of_X = data.Xtr.shape[0]

    def compute() -> tuple[MLP, float]:
        twin = calibrate_batchnorm(autograd_twin(model), data.Xtr)
        return twin, split_loss(twin, data.Xdev, data.Ydev)

    (twin, dev_loss), seconds = timed(compute)

    def grade(value: Mapping[str, Any]) -> list[Row]:
        buffers = value.get("buffers") or {}
        expected = dict(twin.named_buffers())
        statistics = _input_statistics(model, buffers, data.Xtr)
        own: dict[str, Diagnosis] = {}  # a buffer's own mistake, seen even where it passes
        rows: list[Row] = []
        for k, b in expected.items():
            i, attr = layer_attr(k)
            actual = buffers.get(k)
            if attr == "running_var" and i in statistics:
                stats = statistics[i]
                diagnosis = found.calibrated_variance(k, actual, stats["var"], stats["biased"], rows_of_X)
                if diagnosis is not None:
                    own[k] = diagnosis
            detect = functools.partial(_calibrated, k, actual, b, statistics.get(i), own, rows)
            rows.append(graded(k, actual, b, "buffer", detect=detect, hint=hint))
        rows.append(_flags(list(value.get("training") or [])))
        calibrated = from_values(model, dict(model.named_parameters()), buffers)
        if calibrated is not None and all(row.passed or row.comparison.problem == "mismatch" for row in rows):
            # The dev loss these statistics give, when they are statistics of the right shape at all.
            calibrated.set_training(False)
            loss = torch.tensor(split_loss(calibrated, data.Xdev, data.Ydev))
            wrong = [row.name for row in rows if row.kind == "buffer" and not row.passed]
            detect = functools.partial(_blamed_on_statistics, wrong) if wrong else None
            rows.append(graded("dev loss", loss, torch.tensor(dev_loss), "metric", detect=detect, hint=hint))
        return rows

    kinds, states = layer_states(model)
    inputs = {"C": model.C.detach().clone(), "kinds": kinds, "states": states, "X": data.Xtr}
    return prepared("calibration", _ex6_files(layers_ok), inputs, grade, seconds, "" if layers_ok else _RUN_NOTE)


def _blamed_on_statistics(wrong: Sequence[str]) -> Diagnosis:
    return Diagnosis(
        f"the error is in the running statistics: {listed(wrong)}",
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


def loss_target(
    layers_ok: bool, steps: int = 300, target: float = 3.0, n_hidden: int = 32, lr: float = 0.1, seed: int = 0
) -> Prepared:
    # A uniform guess scores ln(27) = 3.30; the reference reaches about 2.85 in 300 steps.
    data = _names()
    model = build_mlp(reference_layers, vocab_size=data.vocab_size, n_hidden=n_hidden, seed=seed)
    Xb, Yb = _minibatches(data, steps, 32, seed)

    def compute() -> float:
        twin, _ = _trained_twin(model, Xb, Yb, lr)
        return split_loss(calibrate_batchnorm(twin, data.Xtr), data.Xdev, data.Ydev)

    reference, seconds = timed(compute)

    def grade(value: Mapping[str, Any]) -> list[Row]:
        trained = from_values(model, value.get("parameters") or {}, value.get("buffers") or {})
        if trained is None:
            message = "the run's parameters do not have the model's shapes and dtype: nothing to measure"
            return [replace(row_for_error("dev loss", torch.tensor(target), WRONG, message), kind="metric")]
        loss = split_loss(calibrate_batchnorm(trained, data.Xtr), data.Xdev, data.Ydev)
        losses = value.get("losses") or []
        first = losses[0] if losses and isinstance(losses[0], float) else None
        return [_Target(loss if loss == loss else float("inf"), target, reference, steps, first).row()]

    note = "" if layers_ok else _RUN_NOTE
    return prepared("training_run", _ex6_files(layers_ok), _run_inputs(model, Xb, Yb, lr), grade, seconds, note)
