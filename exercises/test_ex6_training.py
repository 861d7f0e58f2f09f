"""Exercise 6: training with your own backward matches an autograd-trained twin and reaches a loss target."""

from __future__ import annotations

import pytest

from gradcheck_kit.course.layers import LAYER_CHECKS

pytestmark = pytest.mark.gradcheck(exercise="ex6")

CHECKS = [key for key, check in LAYER_CHECKS.items() if check.exercise == "ex6"]


@pytest.mark.parametrize("check", CHECKS)
def test_training(check, grader, gradcheck):
    result = grader.grade_layers(LAYER_CHECKS[check])
    gradcheck.check(result.report, table=result.report.title)
