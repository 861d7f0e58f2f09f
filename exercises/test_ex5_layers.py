"""Exercise 5: each layer's backward against autograd, then the notebook's deep MLP and its running buffers."""

from __future__ import annotations

import pytest

from gradcheck_kit.course.layers import LAYER_CHECKS

pytestmark = pytest.mark.gradcheck(exercise="ex5")

CHECKS = [key for key, check in LAYER_CHECKS.items() if check.exercise == "ex5"]


@pytest.mark.parametrize("check", CHECKS)
def test_layers(check, grader, gradcheck):
    result = grader.grade_layers(LAYER_CHECKS[check])
    gradcheck.check(result.report, table=result.report.title)
