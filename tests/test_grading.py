"""Step-wise grading: right answers pass however they are written, wrong steps are named once."""

from __future__ import annotations

import pytest
import torch

from gradcheck_kit.grading.mistakes import factor_name, fit_factor
from gradcheck_kit.grading.steps import grade_gradient, grade_steps
from gradcheck_kit.grading.tolerances import grading_tolerances
from gradcheck_kit.makemore.model import GRADED, Config, build
from gradcheck_kit.report import EXACT, INHERITED, NOT_STARTED, OK, WRONG
from gradcheck_kit.sandbox.loading import load_module

SOLUTION = load_module("solutions/ex1_chunked_backward.py")
SOURCE = open("solutions/ex1_chunked_backward.py", encoding="utf-8").read()


@pytest.fixture(scope="module")
def fwd():
    return build()


def grade(fwd, grads):
    rows = grade_steps(grads, fwd.recording, fwd.loss, fwd.reference_grads, n=fwd.n)
    return {row.name: row for row in rows}


def solution_with(tmp_path, old, new):
    """The reference solution with one line changed: a student's mistake, and everything downstream of it."""
    assert old in SOURCE
    path = tmp_path / "ex1_chunked_backward.py"
    path.write_text(SOURCE.replace(old, new), encoding="utf-8")
    return load_module(path)


def test_the_reference_solution_passes_every_gradient(fwd):
    rows = grade(fwd, SOLUTION.chunked_backward(fwd.student_view()))
    assert {row.verdict for row in rows.values()} <= {EXACT, OK}
    assert rows["logprobs"].verdict == EXACT


def test_a_gradient_that_is_pure_rounding_noise_passes(fwd):
    # db1 through a batchnorm is analytically zero; autograd's value is noise of ~1e-10.
    rows = grade(fwd, SOLUTION.chunked_backward(fwd.student_view()))
    assert rows["b1"].verdict in (EXACT, OK)


def test_missing_gradients_are_not_started_not_wrong(fwd):
    grads = SOLUTION.chunked_backward(fwd.student_view())
    grads["W1"] = None
    del grads["C"]
    rows = grade(fwd, grads)
    assert rows["W1"].verdict == NOT_STARTED and rows["C"].verdict == NOT_STARTED
    assert rows["b1"].verdict in (EXACT, OK)


def test_one_wrong_early_step_costs_only_that_step(fwd, tmp_path):
    student = solution_with(tmp_path, "dlogprobs[range(n), f.Yb] = -1.0 / n", "dlogprobs[range(n), f.Yb] = -1.0")
    rows = grade(fwd, student.chunked_backward(fwd.student_view()))
    assert rows["logprobs"].verdict == WRONG
    assert "first wrong step" in rows["logprobs"].note
    assert "n = 32" in rows["logprobs"].explanation
    assert all(rows[name].passed for name in GRADED[1:])
    assert sum(rows[name].verdict == INHERITED for name in GRADED[1:]) >= 20
    assert "dlogprobs" in rows["probs"].note


def test_placeholders_of_zeros_after_a_wrong_step_earn_nothing(fwd):
    # The first eight gradients written, the rest left as zeros: a zero upstream makes every
    # later step zero, so zeros would "match" without showing anything.
    f = fwd.student_view()
    grads = SOLUTION.chunked_backward(f)
    for name in GRADED[8:]:
        grads[name] = torch.zeros_like(getattr(f, name))
    grads["h"] = torch.zeros_like(f.h)  # the first placeholder: wrong in its own right
    rows = grade(fwd, grads)
    assert all(rows[name].passed for name in GRADED[:8])
    # db1 is analytically zero (the batchnorm removes the bias): there zeros are right.
    assert [name for name in GRADED[8:] if rows[name].passed] == ["b1"]
    assert rows["hpreact"].verdict == "unchecked"  # not counted as a mistake of its own
    assert rows["hpreact"].note.startswith("your upstream gradients (dh) make this step zero or NaN everywhere")


def test_nan_everywhere_earns_nothing(fwd):
    f = fwd.student_view()
    rows = grade(fwd, {name: torch.full_like(getattr(f, name), float("nan")) for name in GRADED})
    assert not any(row.passed for row in rows.values())
    assert rows["probs"].verdict == "unchecked" and "no answer would show it right or wrong" in rows["probs"].note


def test_a_huge_wrong_upstream_does_not_widen_the_tolerance_downstream(fwd):
    f = fwd.student_view()
    grads = SOLUTION.chunked_backward(f)
    grads["logits"] = torch.full_like(f.logits, 1e30)
    grads["W2"], grads["b2"] = torch.zeros_like(f.W2), torch.randn_like(f.b2)
    rows = grade(fwd, grads)
    assert rows["logits"].verdict == WRONG
    assert rows["W2"].verdict == WRONG and rows["b2"].verdict == WRONG


@pytest.mark.parametrize(
    ("old", "new", "wrong", "diagnosis"),
    [
        ("dcounts += torch.ones_like(f.counts) * dcounts_sum", "pass", "counts", "through 'counts_sum' is missing"),
        ("dbndiff += (2 * f.bndiff) * dbndiff2", "pass", "bndiff", "through 'bndiff2' is missing"),
        (
            "(1.0 / (n - 1)) * torch.ones_like(f.bndiff2)",
            "(1.0 / n) * torch.ones_like(f.bndiff2)",
            "bndiff2",
            "(n-1)/n",
        ),
        ('g["h"] = dlogits @ f.W2.T', 'g["h"] = 2 * dlogits @ f.W2.T', "h", "factor of 2"),
        ("dcounts_sum = (-(f.counts_sum**-2))", "dcounts_sum = (f.counts_sum**-2)", "counts_sum", "sign is flipped"),
        ('g["W2"] = f.h.T @ dlogits', 'g["W2"] = (dlogits.T @ f.h)', "W2", "transpose"),
        (
            'g["bngain"] = (f.bnraw * dhpreact).sum(0, keepdim=True)',
            'g["bngain"] = (f.bnraw * dhpreact).sum(0)',
            "bngain",
            "keepdim",
        ),
        ('g["bnbias"] = dhpreact.sum(0, keepdim=True)', 'g["bnbias"] = dhpreact', "bnbias", "summed over dimension"),
    ],
)
def test_each_common_mistake_fails_its_own_step_with_a_diagnosis(fwd, tmp_path, old, new, wrong, diagnosis):
    student = solution_with(tmp_path, old, new)
    rows = grade(fwd, student.chunked_backward(fwd.student_view()))
    assert rows[wrong].verdict == WRONG
    assert diagnosis in rows[wrong].explanation
    assert [name for name, row in rows.items() if row.verdict == WRONG] == [wrong]


def test_tolerances_follow_the_dtype_and_the_gradients_scale():
    small = torch.full((3,), 1e-3)
    rtol32, atol32 = grading_tolerances(small)
    rtol64, atol64 = grading_tolerances(small.double())
    assert rtol64 < rtol32 and atol64 < atol32
    assert grading_tolerances(small * 1000)[1] == pytest.approx(atol32 * 1000)
    assert grading_tolerances(small, scale=1.0)[1] == pytest.approx(atol32 * 1000)


def test_float64_grading_is_tighter_and_still_passes_the_solution():
    fwd64 = build(Config(dtype="float64", n=5, vocab_size=7))
    rows = grade(fwd64, SOLUTION.chunked_backward(fwd64.student_view()))
    assert all(row.verdict in (EXACT, OK) for row in rows.values())


def test_factors_are_named_as_a_student_would_write_them():
    e = torch.linspace(-1, 1, 10)
    assert factor_name(fit_factor(e / 32, e), 32) == "1/n = 1/32"
    assert factor_name(fit_factor(e * 32 / 31, e), 32) == "n/(n-1) = 32/31"
    assert factor_name(fit_factor(-e, e), 32).startswith("-1")
    assert fit_factor(e + 1, e) is None


@pytest.mark.parametrize("seed", [1, 3])
def test_at_a_batch_of_two_rounding_noise_is_judged_against_the_terms_that_cancel(seed):
    # At n=2 the batchnorm makes dhprebn and db1 noise: the reference solution's dhprebn
    # and an exact db1 of zeros must pass, though they differ from autograd's noise.
    from gradcheck_kit.grading.steps import grade_gradient
    from gradcheck_kit.grading.tolerances import term_scales

    fwd = build(Config(n=2, seed=seed))
    batchnorm = load_module("solutions/ex3_batchnorm.py").batchnorm_backward
    dhprebn = batchnorm(fwd.all_grads["hpreact"], fwd.bngain.detach(), fwd.bnraw.detach(), fwd.bnvar_inv.detach())
    scale = term_scales(fwd.recording, fwd.loss, fwd.all_grads)("hprebn")
    assert grade_gradient("hprebn", dhprebn, fwd.reference_grads["hprebn"], n=2, scale=scale).passed
    grads = SOLUTION.chunked_backward(fwd.student_view())
    grads["b1"] = torch.zeros_like(fwd.b1)
    assert all(row.passed for row in grade(fwd, grads).values())


def test_at_other_shapes_a_formula_wrong_here_is_held_to_its_shape_and_not_its_values():
    from gradcheck_kit.course.shapes import held_to
    from gradcheck_kit.report import Report

    wrong_here = Report("ex2", (grade_gradient("logits", torch.ones(2, 3), torch.zeros(2, 3)),))
    wrong_there = Report("ex2", (grade_gradient("logits", torch.ones(2, 3), torch.zeros(2, 3)),))
    misshapen = Report("ex2", (grade_gradient("logits", torch.ones(3, 2), torch.zeros(2, 3)),))
    assert held_to(wrong_here, wrong_there).passed
    assert "values not compared" in held_to(wrong_here, wrong_there).rows[0].note
    assert not held_to(wrong_here, misshapen).passed
    right_here = Report("ex2", (grade_gradient("logits", torch.zeros(2, 3), torch.zeros(2, 3)),))
    assert not held_to(right_here, wrong_there).passed
