"""Grade a student's implementation folder: every exercise by the same steps.

For each check the :class:`Grader` prepares the inputs and the autograd
reference in this process (:mod:`~gradcheck_kit.course.backprop` for exercises
1-4 and 7, :mod:`~gradcheck_kit.course.layers` for 5 and 6), runs the student's
code alone in a worker of an :class:`~gradcheck_kit.sandbox.policy.ExerciseSandbox`
under the guard and the exercise's time limit, and grades what comes back here,
with the grading code of :mod:`gradcheck_kit.grading`. The pytest files in
``exercises/`` are thin: they ask the grader for a :class:`Result` and hand its
report to the plugin's ``gradcheck`` fixture.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from gradcheck_kit.course import backprop, drivers
from gradcheck_kit.course.catalogue import EXERCISES, Exercise, Hints
from gradcheck_kit.course.layers import LAYER_CHECKS, LayerCheck, prepare
from gradcheck_kit.course.prepared import NotGradable, Prepared
from gradcheck_kit.grading.sizes import hard_coded
from gradcheck_kit.grading.steps import row_for_error
from gradcheck_kit.makemore import manual_layers
from gradcheck_kit.makemore.model import Config, Forward, build
from gradcheck_kit.report import ERROR, NOT_STARTED, Report
from gradcheck_kit.sandbox.box import Outcome, ReturnedTensor
from gradcheck_kit.sandbox.policy import ExerciseSandbox

__all__ = ["REFERENCE_FACTOR", "Grader", "Result", "describe"]

#: A call may take this many times what the reference took in the same run, when that is
#: more than the exercise's own limit: a loaded machine slows both alike.
REFERENCE_FACTOR = 20.0


@dataclass(frozen=True)
class Result:
    """What grading one check of an exercise produced."""

    exercise: Exercise
    config: Config
    outcome: Outcome
    report: Report

    @property
    def status(self) -> str:
        return self.outcome.status

    def row(self, name: str) -> Any:
        return self.report[name]


class Grader:
    """Grades one implementation folder, caching each check's result.

    Args:
        impl_dir: the folder with the student's ``ex*.py`` files.
        sandbox: runs the student's code, one worker per exercise, under each exercise's limit.
        hints: the hints to show with wrong answers.
        reference_factor: see :data:`REFERENCE_FACTOR`.
    """

    def __init__(
        self,
        impl_dir: str | Path,
        sandbox: ExerciseSandbox,
        hints: Hints | None = None,
        reference_factor: float = REFERENCE_FACTOR,
    ) -> None:
        self.impl_dir = Path(impl_dir)
        self.sandbox = sandbox
        self.hints = hints or Hints()
        self.reference_factor = reference_factor
        self._cache: dict[tuple[str, Any], Result] = {}
        self._forwards: dict[Config, tuple[Forward, float]] = {}

    def _forward(self, config: Config) -> tuple[Forward, float]:
        if config not in self._forwards:
            started = time.perf_counter()
            fwd = build(config)
            fwd.reference_grads  # noqa: B018 -- part of the reference's time
            self._forwards[config] = fwd, time.perf_counter() - started
        return self._forwards[config]

    def grade(self, key: str, config: Config | None = None) -> Result:
        """Run and grade exercise ``key`` ("ex1" ... "ex4") at ``config`` (default: the notebook's)."""
        config = config or Config()
        if (key, config) not in self._cache:
            fwd, seconds = self._forward(config)
            if key == "ex1":
                prepared = backprop.chunked(fwd, self.hints, seconds)
            else:
                prepared = backprop.fused(key, fwd, self.hints, seconds)
            result = self._run(EXERCISES[key], key, prepared, config, EXERCISES[key].title)
            self._cache[(key, config)] = self._sizes_told(key, config, result)
        return self._cache[(key, config)]

    def _sizes_told(self, key: str, config: Config, result: Result) -> Result:
        """At other shapes, a row right at the notebook's and wrong here is told that it depends on the sizes."""
        notebook = Config(dtype=config.dtype, device=config.device)
        if config == notebook or result.report.passed:
            return result
        base = self.grade(key, notebook).report
        right = {row.name for row in base.rows if row.passed}
        exercise = EXERCISES[key]
        sizes = hard_coded(self.impl_dir / exercise.file, exercise.function, _sizes(notebook), _sizes(config))
        rows = []
        errors = 0
        for row in result.report.rows:
            if row.name in right and not row.passed:
                # An exception is told at its first row; the rows after it only point there.
                errors += row.verdict == ERROR
                if row.verdict != ERROR or errors == 1:
                    seen = f"; {row.diagnosis.detected}" if row.diagnosis is not None else ""
                    row = replace(row, diagnosis=replace(sizes, evidence=sizes.evidence + seen))
            rows.append(row)
        return replace(result, report=replace(result.report, rows=tuple(rows)))

    def grade_layers(self, check: LayerCheck) -> Result:
        """Run and grade one check of exercises 5 and 6 (see :data:`~gradcheck_kit.course.layers.LAYER_CHECKS`).

        Exercise 6 runs on the student's exercise 5 layers when they pass every check
        of exercise 5, and on the reference layers otherwise: a wrong layer costs the
        points of exercise 5, not those of exercise 6 too.
        """
        key = (check.key, None)
        if key not in self._cache:
            prepared = prepare(check, check.exercise != "ex6" or self._layers_pass(), self.hints)
            title = f"{check.title} ({prepared.note})" if prepared.note else check.title
            self._cache[key] = self._run(EXERCISES[check.exercise], check.key, prepared, Config(), title)
        return self._cache[key]

    def grade_call(
        self, exercise: str, function: str, name: str, expected: torch.Tensor, *args: Any, device: str, title: str
    ) -> Result:
        """Run ``function`` of the exercise's file on ``args``; grade the one gradient it returns (exercise 7)."""
        prepared = backprop.single_gradient(function, exercise, name, expected, args, 0.0)
        return self._run(EXERCISES[exercise], function, prepared, Config(device=device), title)

    def _layers_pass(self) -> bool:
        checks = [c for c in LAYER_CHECKS.values() if c.exercise == "ex5"]
        return all(self.grade_layers(c).report.passed for c in checks)

    def _files(self, prepared: Prepared) -> list[Path] | Outcome:
        files = []
        for key in prepared.files:
            if key == "reference_layers":
                files.append(Path(manual_layers.__file__))
                continue
            path = self.impl_dir / EXERCISES["ex5" if key == "layers" else key].file
            if not path.is_file():
                return Outcome(
                    "import_error",
                    message=f"there is no {path.name} in {self.impl_dir}: the file names must be those of exercises/",
                )
            files.append(path)
        return files

    def limit(self, exercise: str, reference_seconds: float) -> float:
        """Seconds a call may take: the exercise's limit, or more when the reference took long here."""
        return max(self.sandbox.limit(exercise), self.reference_factor * reference_seconds)

    def _run(self, exercise: Exercise, check: str, prepared: Prepared, config: Config, title: str) -> Result:
        files = self._files(prepared)
        if isinstance(files, Outcome):
            return Result(exercise, config, files, _failure_report(title, files, prepared, check))
        limit = self.limit(exercise.key, prepared.reference_seconds)
        if prepared.driver:
            path, student_files = Path(drivers.__file__), files
        else:
            path, student_files = files[0], []
        outcome = self.sandbox.call(
            path,
            prepared.function,
            *prepared.args,
            exercise=exercise.key,
            check=check,
            timeout=limit,
            device=config.device,
            student_files=student_files,
            **prepared.kwargs,
        )
        if outcome.status == "timeout":
            outcome = replace(outcome, message=outcome.message + self._reference_note(exercise, prepared, limit))
        if not outcome.ok and outcome.status == "error" and prepared.partial is not None:
            report = prepared.partial(_restore(outcome.value), describe(outcome), _raising_line(outcome.message))
            return Result(exercise, config, outcome, replace(report, title=title))
        if not outcome.ok:
            return Result(exercise, config, outcome, _failure_report(title, outcome, prepared, check))
        try:
            report = prepared.grade(_restore(outcome.value))
        except NotGradable as exc:
            failed = replace(outcome, status="error", message=str(exc))
            return Result(exercise, config, failed, _failure_report(title, failed, prepared, check))
        return Result(exercise, config, outcome, replace(report, title=title))

    def _reference_note(self, exercise: Exercise, prepared: Prepared, limit: float) -> str:
        return (
            f"\n(the limit was {limit:.3g} s: {exercise.key}'s {self.sandbox.limit(exercise.key):.3g} s, or "
            f"{self.reference_factor:g} times the {prepared.reference_seconds:.3g} s the reference took here, "
            "whichever is longer)"
        )


def _raising_line(message: str) -> str:
    """The source of the student's line an error message cites (``at ex1_chunked_backward.py:69: <source>``)."""
    for line in reversed(message.splitlines()):
        found = re.match(r"at [^:\s]+\.py:\d+: (.*)", line)
        if found:
            return found.group(1)
    return ""


def _sizes(config: Config) -> dict[str, int]:
    """A configuration's sizes, and those a solution computes from them, by the names a student knows."""
    return {
        "n": config.n,
        "n-1": config.n - 1,
        "vocab_size": config.vocab_size,
        "n_hidden": config.n_hidden,
        "n_embd": config.n_embd,
        "block_size * n_embd": config.block_size * config.n_embd,
    }


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


def _failure_report(title: str, outcome: Outcome, prepared: Prepared, check: str) -> Report:
    verdict = NOT_STARTED if outcome.status == "not_started" else ERROR
    message = describe(outcome)
    expected = prepared.expected or {check: torch.zeros(())}
    rows = tuple(replace(row_for_error(n, ref, verdict, message), kind=prepared.kind) for n, ref in expected.items())
    return Report(title, rows)
