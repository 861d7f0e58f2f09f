"""The backprop exercises: what each asks for, how it is run, and how its answer is graded.

A :class:`Grader` runs a student's implementation folder (files named as in
``exercises/``) in a :class:`~gradcheck_kit.sandbox.box.Sandbox` and turns each
answer into report rows. The pytest files in ``exercises/`` are thin: they ask
the grader for rows and hand them to the plugin's ``gradcheck`` fixture.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gradcheck_kit import _toml
from gradcheck_kit.comparison import Comparison, compare
from gradcheck_kit.grading.mistakes import Mistake
from gradcheck_kit.grading.steps import grade_gradient, grade_steps, row_for_error, term_scales
from gradcheck_kit.makemore.model import Config, Forward, build
from gradcheck_kit.report import ERROR, NOT_STARTED, OK, WRONG, Report, Row, verdict_for
from gradcheck_kit.sandbox.box import Outcome, ReturnedTensor, Sandbox

__all__ = ["EXERCISES", "LAYER_CHECKS", "Exercise", "Grader", "Hints", "LayerCheck"]


@dataclass(frozen=True)
class Exercise:
    """One exercise: the file and function a student writes, and the title of its table."""

    key: str
    file: str
    function: str
    title: str


EXERCISES: dict[str, Exercise] = {
    e.key: e
    for e in (
        Exercise("ex1", "ex1_chunked_backward.py", "chunked_backward", "exercise 1: chunked backward"),
        Exercise("ex2", "ex2_cross_entropy.py", "cross_entropy_backward", "exercise 2: cross-entropy backward"),
        Exercise("ex3", "ex3_batchnorm.py", "batchnorm_backward", "exercise 3: batchnorm backward"),
        Exercise("ex4", "ex4_embedding.py", "embedding_backward", "exercise 4: embedding backward"),
        Exercise("ex5", "ex5_layers.py", "Linear", "exercise 5: layers"),
        Exercise("ex6", "ex6_training.py", "train_step", "exercise 6: training"),
        Exercise(
            "ex7", "ex7_triton_kernels.py", "cross_entropy_backward_triton", "exercise 7: Triton kernels (optional)"
        ),
    )
}


@dataclass(frozen=True)
class Hints:
    """The hints of ``exercises/hints.toml``: per exercise, per tensor of exercise 1, per mistake."""

    exercise: Mapping[str, str] = field(default_factory=dict)
    tensors: Mapping[str, str] = field(default_factory=dict)
    mistakes: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> Hints:
        path = Path(path)
        if not path.is_file():
            return cls()
        data = _toml.loads(path.read_text(encoding="utf-8"))
        return cls(
            exercise={k: v["hint"] for k, v in data.items() if isinstance(v, dict) and "hint" in v},
            tensors=data.get("ex1", {}).get("tensors", {}),
            mistakes=data.get("mistakes", {}),
        )

    def mistake(self, key: str, fallback: str) -> str:
        return self.mistakes.get(key, fallback)


@dataclass(frozen=True)
class Result:
    """What grading one exercise on one configuration produced."""

    exercise: Exercise
    config: Config
    outcome: Outcome
    report: Report

    @property
    def status(self) -> str:
        return self.outcome.status

    def row(self, name: str) -> Row:
        return self.report[name]


class Grader:
    """Grades one implementation folder, caching each exercise's result per configuration.

    Args:
        impl_dir: the folder with the student's ``ex*.py`` files.
        sandbox: runs the student's functions.
        hints: the hints to show with wrong answers.
    """

    def __init__(self, impl_dir: str | Path, sandbox: Sandbox, hints: Hints | None = None) -> None:
        self.impl_dir = Path(impl_dir)
        self.sandbox = sandbox
        self.hints = hints or Hints()
        self._cache: dict[tuple[str, Config], Result] = {}
        self._forwards: dict[Config, Forward] = {}

    def forward(self, config: Config) -> Forward:
        if config not in self._forwards:
            self._forwards[config] = build(config)
        return self._forwards[config]

    def grade(self, key: str, config: Config | None = None) -> Result:
        """Run and grade exercise ``key`` ("ex1" ... "ex4") at ``config`` (default: the notebook's)."""
        config = config or Config()
        if (key, config) not in self._cache:
            grade = _chunked if key == "ex1" else _fused
            self._cache[(key, config)] = grade(self, EXERCISES[key], config)
        return self._cache[(key, config)]

    def grade_layers(self, check: LayerCheck) -> Result:
        """Run and grade one check of exercises 5 and 6 (see :data:`LAYER_CHECKS`)."""
        key = (check.key, Config())
        if key not in self._cache:
            self._cache[key] = _layers(self, check)
        return self._cache[key]

    def run(self, exercise: Exercise, config: Config, *args: Any) -> Outcome:
        path = self.impl_dir / exercise.file
        if not path.is_file():
            return Outcome(
                "import_error",
                message=f"there is no {exercise.file} in {self.impl_dir}: the file names must be those of exercises/",
            )
        outcome = self.sandbox.call(path, exercise.function, *args, device=config.device)
        return replace(outcome, value=_restore(outcome.value)) if outcome.ok else outcome


def _restore(value: Any) -> Any:
    """Put each returned tensor back on the device the student's function returned it on."""
    if isinstance(value, ReturnedTensor):
        return value.tensor.to(value.info.device)
    if isinstance(value, dict):
        return {k: _restore(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_restore(v) for v in value)
    return value


def describe(outcome: Outcome) -> str:
    """What went wrong with a call, in one paragraph, with what the call printed."""
    text = " ".join(outcome.message.split("\n"))
    if outcome.status == "not_started":
        text = f"not started ({outcome.message})" if outcome.message else "not started"
    if outcome.stdout.strip():
        printed = outcome.stdout.strip().splitlines()[-5:]
        text += " | your code printed: " + " / ".join(printed)
    return text


def _failure_report(
    exercise: Exercise, outcome: Outcome, reference: Mapping[str, torch.Tensor], title: str | None = None
) -> Report:
    verdict = NOT_STARTED if outcome.status == "not_started" else ERROR
    message = describe(outcome)
    rows = tuple(row_for_error(name, ref, verdict, message) for name, ref in reference.items())
    return Report(title or exercise.title, rows)


def _chunked(grader: Grader, exercise: Exercise, config: Config) -> Result:
    fwd = grader.forward(config)
    reference = fwd.reference_grads
    outcome = grader.run(exercise, config, fwd.student_view())
    if not outcome.ok:
        return Result(exercise, config, outcome, _failure_report(exercise, outcome, reference))
    value = outcome.value
    if not isinstance(value, Mapping):
        failed = replace(
            outcome,
            status="error",
            message=(
                f"{exercise.function} must return a dict of gradients keyed by name "
                f"({{'logprobs': dlogprobs, ...}}), got {type(value).__name__}"
            ),
        )
        return Result(exercise, config, failed, _failure_report(exercise, failed, reference))
    student = {str(k): v for k, v in value.items()}
    unknown = tuple(k for k in student if k not in reference)
    demb = student.get("emb")
    if not (isinstance(demb, torch.Tensor) and demb.shape == fwd.emb.shape):
        demb = reference["emb"]
    mistakes = {"C": [_overwrite_mistake(grader.hints, demb, fwd.Xb, config.vocab_size)]}
    rows = grade_steps(
        student, fwd.recording, fwd.loss, reference, n=config.n, hints=grader.hints.tensors, mistakes=mistakes
    )
    rows = [_suggest_key(row, unknown) for row in rows]
    return Result(exercise, config, outcome, Report(exercise.title, tuple(rows), unknown))


def _suggest_key(row: Row, unknown: tuple[str, ...]) -> Row:
    if row.verdict != NOT_STARTED or not unknown:
        return row
    match = difflib.get_close_matches(row.name, unknown, n=1)
    if not match:
        return row
    return replace(row, verdict=WRONG, note=f"returned under the key {match[0]!r}: did you mean {row.name!r}?")


def _fused(grader: Grader, exercise: Exercise, config: Config) -> Result:
    fwd = grader.forward(config)
    inputs, expected, mistakes = _FUSED[exercise.key](fwd, grader.hints)
    outcome = grader.run(exercise, config, *inputs)
    name = {"ex2": "logits", "ex3": "hprebn", "ex4": "C"}[exercise.key]
    if not outcome.ok:
        report = _failure_report(exercise, outcome, {name: expected})
    elif outcome.value is None:
        # The stubs raise NotImplementedError: None here is a missing return statement.
        missing = row_for_error(name, expected, ERROR, f"{exercise.function} returned None: is a return missing?")
        report = Report(exercise.title, (missing,))
    else:
        hint = grader.hints.exercise.get(exercise.key, "")
        scale = term_scales(fwd.recording, fwd.loss, fwd.all_grads)(name)
        row = grade_gradient(name, outcome.value, expected, n=config.n, mistakes=mistakes, hint=hint, scale=scale)
        report = Report(exercise.title, (row,))
    return Result(exercise, config, outcome, report)


_Inputs = tuple[tuple[Any, ...], torch.Tensor, list[Mistake]]


def _cross_entropy_inputs(fwd: Forward, hints: Hints) -> _Inputs:
    logits, Yb, n = fwd.logits.detach(), fwd.Yb, fwd.n
    onehot = F.one_hot(Yb, logits.shape[1]).to(logits.dtype)
    expected = fwd.reference_grads["logits"]
    mistakes = [
        Mistake("softmax-only", hints.mistake("softmax-only", "the one-hot label term is missing"),
                lambda: F.softmax(logits, 1) / n),
        Mistake("log-softmax", hints.mistake("log-softmax", "log_softmax used instead of softmax"),
                lambda: (F.log_softmax(logits, 1) - onehot) / n),
    ]  # fmt: skip
    return (logits.clone(), Yb.clone()), expected, mistakes


def _batchnorm_inputs(fwd: Forward, hints: Hints) -> _Inputs:
    grads = fwd.recording.grads(fwd.loss)
    dhpreact = grads["hpreact"]
    assert dhpreact is not None
    bngain, bnraw, bnvar_inv, n = fwd.bngain.detach(), fwd.bnraw.detach(), fwd.bnvar_inv.detach(), fwd.n
    d, x = dhpreact, bnraw
    mean_term, var_term = d.sum(0, keepdim=True), x * (d * x).sum(0, keepdim=True)

    mistakes = [
        Mistake("biased-variance", hints.mistake("biased-variance", "biased variance"),
                lambda: bngain * bnvar_inv / n * (n * d - mean_term - var_term)),
        Mistake("no-mean-term", hints.mistake("no-mean-term", "mean term missing"),
                lambda: bngain * bnvar_inv / n * (n * d - n / (n - 1) * var_term)),
        Mistake("no-variance-term", hints.mistake("no-variance-term", "variance term missing"),
                lambda: bngain * bnvar_inv / n * (n * d - mean_term)),
        Mistake("no-gain", hints.mistake("no-gain", "bngain missing"),
                lambda: bnvar_inv / n * (n * d - mean_term - n / (n - 1) * var_term)),
    ]  # fmt: skip
    expected = grads["hprebn"]
    assert expected is not None
    return (dhpreact.clone(), bngain.clone(), bnraw.clone(), bnvar_inv.clone()), expected, mistakes


def _overwrite_mistake(hints: Hints, demb: torch.Tensor, Xb: torch.Tensor, num_embeddings: int) -> Mistake:
    def overwrite() -> torch.Tensor:
        dC = torch.zeros(num_embeddings, demb.shape[-1], dtype=demb.dtype, device=demb.device)
        for k in range(Xb.shape[0]):
            for j in range(Xb.shape[1]):
                dC[Xb[k, j]] = demb[k, j]
        return dC

    return Mistake("overwrite", hints.mistake("overwrite", "repeated indices were overwritten"), overwrite)


def _embedding_inputs(fwd: Forward, hints: Hints) -> _Inputs:
    grads = fwd.recording.grads(fwd.loss)
    demb, expected = grads["emb"], grads["C"]
    assert demb is not None and expected is not None
    vocab = fwd.config.vocab_size
    mistakes = [_overwrite_mistake(hints, demb, fwd.Xb, vocab)]
    return (demb.clone(), fwd.Xb.clone(), vocab), expected, mistakes


_FUSED: dict[str, Callable[[Forward, Hints], _Inputs]] = {
    "ex2": _cross_entropy_inputs,
    "ex3": _batchnorm_inputs,
    "ex4": _embedding_inputs,
}


@dataclass(frozen=True)
class LayerCheck:
    """One graded check of exercises 5 and 6, run by :mod:`gradcheck_kit.course.layers_harness`.

    Attributes:
        key: the check's name in test ids and tables.
        exercise: the exercise it is graded under.
        function: the check in :mod:`gradcheck_kit.course.layers_grading`.
        files: the exercises whose files it needs, in the function's argument order.
        options: keyword arguments for the function.
    """

    key: str
    exercise: str
    function: str
    files: tuple[str, ...]
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return f"{EXERCISES[self.exercise].title}: {self.key.replace('_', ' ')}"


LAYER_CHECKS: dict[str, LayerCheck] = {
    c.key: c
    for c in (
        LayerCheck("linear", "ex5", "grade_linear", ("ex5",)),
        LayerCheck("linear_without_bias", "ex5", "grade_linear", ("ex5",), {"bias": False}),
        LayerCheck("batchnorm_training", "ex5", "grade_batchnorm", ("ex5",)),
        LayerCheck("batchnorm_eval", "ex5", "grade_batchnorm", ("ex5",), {"training": False}),
        LayerCheck("tanh", "ex5", "grade_tanh", ("ex5",)),
        LayerCheck("deep_mlp", "ex5", "grade_mlp", ("ex5",)),
        LayerCheck("training_steps", "ex6", "grade_training_steps", ("ex6", "ex5")),
        LayerCheck("calibration", "ex6", "grade_calibration", ("ex6", "ex5")),
        LayerCheck("loss_target", "ex6", "train_to_target", ("ex6", "ex5")),
    )
}


def _layers(grader: Grader, check: LayerCheck) -> Result:
    from gradcheck_kit.course import layers_harness
    from gradcheck_kit.grading.steps import grading_tolerances

    exercise = EXERCISES[check.exercise]
    paths = [grader.impl_dir / EXERCISES[key].file for key in check.files]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        outcome = Outcome("import_error", message=f"there is no {missing[0]} in {grader.impl_dir}")
    else:
        harness = Path(layers_harness.__file__)
        outcome = grader.sandbox.call(
            harness, "run", check.function, *map(str, paths), guarded=False, **dict(check.options)
        )
        if outcome.ok and outcome.value["status"] != "ok":
            outcome = replace(outcome, status=outcome.value["status"], message=outcome.value["message"], value=None)
    if not outcome.ok:
        placeholder = {check.key: torch.zeros(())}
        return Result(exercise, Config(), outcome, _failure_report(exercise, outcome, placeholder, check.title))
    value = outcome.value
    if "run" in value:
        run = value["run"]
        c = compare("dev loss", torch.tensor(run["loss"]), torch.tensor(run["target"]), rtol=0.0, atol=float("inf"))
        row = Row(c, OK if run["reached"] else WRONG, run["message"])
        return Result(exercise, Config(), outcome, Report(check.title, (row,)))
    rows = []
    for name, actual, expected, rtol, atol in value["checks"]:
        actual, expected = _restore(actual), _restore(expected)
        if rtol is None:
            rtol, atol = grading_tolerances(expected)
        c = compare(name, actual, expected, rtol=rtol, atol=atol)
        rows.append(Row(c, verdict_for(c), _note(c)))
    return Result(exercise, Config(), outcome, Report(check.title, tuple(rows)))


def _note(c: Comparison) -> str:
    if c.approximate:
        return ""
    if c.problem == "missing":
        return "no value yet"
    return " ".join(c.message.splitlines()[:2])
