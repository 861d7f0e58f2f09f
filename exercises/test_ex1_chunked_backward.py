"""Exercise 1 is graded tensor by tensor: one test per gradient and device."""

from __future__ import annotations

import pytest
from hypothesis import given

from gradcheck_kit.course.shapes import GRADING_SETTINGS, configs
from gradcheck_kit.makemore.model import GRADED, Config
from gradcheck_kit.report import NOT_STARTED

pytestmark = pytest.mark.gradcheck(exercise="ex1")


@pytest.mark.parametrize("name", GRADED)
def test_gradient(name, device, grader, gradcheck):
    result = grader.grade("ex1", Config(device=device))
    gradcheck.check(result.row(name), table=f"{result.exercise.title} [{device}]")


@pytest.mark.gradcheck(visibility="after_due_date")
def test_other_shapes(device, grader, gradcheck):
    """Every gradient, once all are written, passes at other batch, vocabulary and layer sizes as it does here."""
    base = grader.grade("ex1", Config(device=device))
    # Its points are for the whole pass: not earned while gradients are still to be written.
    missing = [row for row in base.report.rows if row.verdict == NOT_STARTED]
    if missing:
        gradcheck.check(missing, table=f"{base.exercise.title} [{device}]", record=False)
    # What passes at the notebook's shapes must pass at every shape; a wrong step already
    # costs its own test, not this one too.
    passing = [row.name for row in base.report.rows if row.passed]
    if not passing:
        gradcheck.check(base.report, table=f"{base.exercise.title} [{device}]", record=False)

    @GRADING_SETTINGS
    @given(config=configs(device))
    def every_attempted_gradient_matches(config):
        report = grader.grade("ex1", config).report
        rows = [report[name] for name in passing]
        gradcheck.check(rows, table=f"{base.exercise.title}, n={config.n} [{device}]", record=False)

    every_attempted_gradient_matches()
