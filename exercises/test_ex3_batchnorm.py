"""Exercise 3: the batchnorm backward pass in one go, graded on every device and at other shapes."""

from __future__ import annotations

import pytest
from hypothesis import given

from gradcheck_kit.course.shapes import GRADING_SETTINGS, configs, held_to
from gradcheck_kit.makemore.model import Config

pytestmark = pytest.mark.gradcheck(exercise="ex3")


def test_notebook_shapes(device, grader, gradcheck):
    result = grader.grade("ex3", Config(device=device))
    gradcheck.check(result.report, table=f"{result.exercise.title} [{device}]")


@pytest.mark.gradcheck(visibility="after_due_date")
def test_other_shapes(device, grader, gradcheck):
    """It also matches at other batch, vocabulary and layer sizes (nothing hard-coded), where it matches here."""
    base = grader.grade("ex3", Config(device=device))
    # Not started or not running at the notebook's shapes: there is nothing to hold other shapes to.
    if not base.outcome.ok:
        gradcheck.check(base.report, table=f"{base.exercise.title} [{device}]", record=False)

    @GRADING_SETTINGS
    @given(config=configs(device))
    def matches(config):
        result = grader.grade("ex3", config)
        report = held_to(base.report, result.report)
        gradcheck.check(report, table=f"{result.exercise.title}, n={config.n} [{device}]", record=False)

    matches()
