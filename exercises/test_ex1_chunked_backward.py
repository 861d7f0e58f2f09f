"""Exercise 1 is graded tensor by tensor: one test per gradient and device."""

from __future__ import annotations

import pytest
from hypothesis import given

from gradcheck_kit.makemore import GRADED, Config
from gradcheck_kit.report import NOT_STARTED
from gradcheck_kit.strategies import GRADING_SETTINGS, configs

pytestmark = pytest.mark.gradcheck(exercise="ex1")


@pytest.mark.parametrize("name", GRADED)
def test_gradient(name, device, grader, gradcheck):
    result = grader.grade("ex1", Config(device=device))
    gradcheck.check(result.row(name), table=f"{result.exercise.title} [{device}]")


@pytest.mark.gradcheck(visibility="after_due_date")
def test_other_shapes(device, grader, gradcheck):
    """Every gradient you have written also matches at other batch, vocabulary and layer sizes."""
    base = grader.grade("ex1", Config(device=device))
    attempted = [row for row in base.report.rows if row.verdict != NOT_STARTED]
    # Nothing written yet, or wrong at the notebook's shapes already: those tests say why.
    if not attempted or not all(row.passed for row in attempted):
        gradcheck.check(attempted or base.report, table=f"{base.exercise.title} [{device}]", record=False)
    attempted_names = [row.name for row in attempted]

    @GRADING_SETTINGS
    @given(config=configs(device))
    def every_attempted_gradient_matches(config):
        report = grader.grade("ex1", config).report
        rows = [report[name] for name in attempted_names]
        gradcheck.check(rows, table=f"{base.exercise.title}, n={config.n} [{device}]", record=False)

    every_attempted_gradient_matches()
