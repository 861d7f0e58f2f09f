"""Detectors name the mistake a wrong gradient shows, from its values; right answers never trigger them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gradcheck_kit.grading.detectors import diagnose, misshapen, per_line_factor, term_factors, wrong_lines, zeros
from gradcheck_kit.grading.sizes import hard_coded, literals
from gradcheck_kit.grading.steps import grade_gradient, grade_steps
from gradcheck_kit.grading.tolerances import term_scales
from gradcheck_kit.makemore.model import GRADED, build
from gradcheck_kit.report import INHERITED, NO_DIAGNOSIS, WRONG, Diagnosis, Report, Row
from gradcheck_kit.sandbox.loading import load_module

SOURCE = Path("solutions/ex1_chunked_backward.py").read_text(encoding="utf-8")
SOLUTION = load_module("solutions/ex1_chunked_backward.py")


@pytest.fixture(scope="module")
def fwd():
    return build()


def graded(fwd, tmp_path, old, new):
    """Exercise 1's rows for the reference solution with one line changed, as a student would."""
    assert old in SOURCE
    path = tmp_path / "ex1_chunked_backward.py"
    path.write_text(SOURCE.replace(old, new), encoding="utf-8")
    student = load_module(path).chunked_backward(fwd.student_view())
    rows = grade_steps(student, fwd.recording, fwd.loss, fwd.reference_grads, n=fwd.n, hints={"bndiff": "a hint"})
    return {row.name: row for row in rows}


def wrong(rows):
    return [name for name, row in rows.items() if not row.passed]


def test_no_detector_fires_on_the_reference_solution(fwd):
    student = SOLUTION.chunked_backward(fwd.student_view())
    reference = fwd.reference_grads
    factors = {k: t.detach() for k, t in fwd.recording.tensors.items()}
    others = {k: (student[k], reference[k]) for k in reference}
    scale = term_scales(fwd.recording, fwd.loss, fwd.all_grads)
    for name in GRADED:
        found = diagnose(
            student[name], reference[name], n=32, factors=factors, others=others, name=name, scale=scale(name)
        )
        assert found is None, name


def test_a_gradient_changed_in_place_through_another_is_named_as_the_same_tensor(fwd, tmp_path):
    rows = graded(fwd, tmp_path, "dhprebn = dbndiff.clone()", "dhprebn = dbndiff")
    assert wrong(rows) == ["bndiff"]
    assert rows["bndiff"].diagnosis.detected.startswith("dbndiff holds exactly the values of dhprebn")
    assert ".clone()" in rows["bndiff"].explanation and "a hint" not in rows["bndiff"].explanation
    assert rows["bndiff"].hint == "a hint"  # carried apart, for results.json


def test_a_factor_per_column_is_named_after_the_forward_tensor_it_equals(fwd, tmp_path):
    rows = graded(fwd, tmp_path, "dbnvar_inv = (f.bndiff * dbnraw)", "dbnvar_inv = (f.bnraw * dbnraw)")
    assert wrong(rows) == ["bnvar_inv"]
    assert rows["bnvar_inv"].diagnosis.detected.startswith("each column is off by a factor equal to bnvar_inv")


def test_an_extra_keepdim_is_told_as_extra_and_a_missing_one_as_missing(fwd, tmp_path):
    extra = graded(fwd, tmp_path, 'g["b2"] = dlogits.sum(0)', 'g["b2"] = dlogits.sum(0, keepdim=True)')
    assert wrong(extra) == ["b2"]
    assert extra["b2"].diagnosis.detected.startswith("an extra keepdim=True")
    assert "missing keepdim" not in extra["b2"].explanation
    missing = misshapen(torch.ones(64), torch.ones(1, 64))
    assert missing.detected.startswith("a missing keepdim=True")


def test_a_sum_over_the_wrong_dimension_is_named(fwd, tmp_path):
    rows = graded(
        fwd, tmp_path, "dcounts_sum_inv = (f.counts * dprobs).sum(1, keepdim=True)",
        "dcounts_sum_inv = (f.counts * dprobs).sum(0, keepdim=True)",
    )  # fmt: skip
    assert rows["counts_sum_inv"].diagnosis.detected.startswith("summed over the wrong dimension: over (0,)")


def test_a_gradient_wrong_only_in_shape_is_charged_once_and_the_steps_below_it_pass(fwd):
    student = SOLUTION.chunked_backward(fwd.student_view())
    student["bnvar_inv"] = student["bnvar_inv"].flatten()  # (64,) where (1, 64) belongs
    rows = grade_steps(student, fwd.recording, fwd.loss, fwd.reference_grads, n=32)
    assert [row.name for row in rows if not row.passed] == ["bnvar_inv"]


def test_all_zeros_is_said_instead_of_a_factor_of_zero():
    expected = torch.randn(27, 10)
    found = zeros(torch.zeros(27, 10), expected)
    assert found.detected.startswith("it is all zeros")
    assert "factor" not in found.detected


def test_zeros_where_the_gradient_is_not_name_their_rows():
    expected = torch.randn(27, 10)
    actual = expected.clone()
    actual[[3, 5]] = 0
    found = zeros(actual, expected)
    assert "20 elements are 0 where the gradient is not (only rows 3, 5 of 27)" in found.detected


def test_rows_wrong_alone_are_named_and_a_wrong_column_too():
    expected = torch.randn(32, 27)
    actual = expected.clone()
    actual[7] += 1
    assert wrong_lines(actual, expected).detected == "only row 7 of 32 is wrong; the rest is right"
    actual = expected.clone()
    actual[:, 2] *= 3
    assert wrong_lines(actual, expected).detected == "only column 2 of 27 is wrong; the rest is right"
    assert wrong_lines(expected + 1, expected) is None  # every element wrong: nothing to single out


def test_a_term_divided_by_n_minus_1_where_n_belongs_is_named():
    n = 32
    terms = {
        "the direct term": torch.randn(n, 4),
        "the mean term": torch.randn(n, 4),
        "the variance term": torch.randn(n, 4),
    }
    expected = sum(terms.values())
    actual = terms["the direct term"] + n / (n - 1) * terms["the mean term"] + terms["the variance term"]
    found = term_factors(actual, expected, terms, n)
    assert found.detected.startswith("the mean term is off by a factor of n/(n-1) = 32/31: a division by n-1")
    missing = term_factors(expected - terms["the variance term"], expected, terms, n)
    assert missing.detected.startswith("the variance term is missing")
    assert term_factors(expected, expected, terms, n) is None


def test_a_factor_per_row_without_a_name_is_still_told_per_row():
    expected = torch.randn(8, 5)
    actual = expected * torch.arange(1.0, 9.0).unsqueeze(1)
    found = per_line_factor(actual, expected, {})
    assert found.detected.startswith("each row is off by a factor of its own")


def test_a_wrong_row_without_a_recognised_mistake_says_so_and_labels_the_hint():
    row = grade_gradient("logits", torch.randn(4, 3), torch.randn(4, 3), hint="differentiate one row")
    assert row.verdict == WRONG and row.diagnosis is None
    assert row.explanation == f"{NO_DIAGNOSIS} — hint: differentiate one row"


def test_diagnosis_and_hint_travel_apart_through_json():
    c = grade_gradient("C", torch.zeros(3, 2), torch.ones(3, 2), hint="accumulate").comparison
    row = Row(c, WRONG, "first wrong step", diagnosis=Diagnosis("it is all zeros", "every element is 0"), hint="h")
    back = Report.from_dict(Report("t", (row,)).as_dict()).rows[0]
    assert back == row
    assert back.as_dict()["diagnosis"] == {"detected": "it is all zeros", "evidence": "every element is 0"}
    assert back.explanation == "first wrong step — it is all zeros (every element is 0)"


def test_hard_coded_sizes_are_found_in_the_function_with_their_line(tmp_path):
    path = tmp_path / "ex2_cross_entropy.py"
    path.write_text(
        "import torch\nBATCH = 32\n\ndef cross_entropy_backward(logits, Yb):\n"
        "    d = torch.zeros((32, 27))\n    return d / 32\n",
        encoding="utf-8",
    )
    assert [(lit.value, lit.line) for lit in literals(path.read_text(), "cross_entropy_backward", {32, 27})] == [
        (32, 5), (27, 5), (32, 6)
    ]  # fmt: skip
    found = hard_coded(path, "cross_entropy_backward", {"n": 32, "vocab_size": 27}, {"n": 5, "vocab_size": 27})
    assert (
        "32 (n) at ex2_cross_entropy.py:5: d = torch.zeros((32, 27)); 32 (n) at ex2_cross_entropy.py:6"
        in found.detected
    )
    assert "27 (" not in found.detected  # the vocabulary is the notebook's in this configuration
    assert found.evidence == "right at the notebook's sizes, not at n=5"


def test_a_sum_over_the_wrong_dimension_is_charged_once_and_the_right_steps_below_it_are_inherited(fwd, tmp_path):
    rows = graded(
        fwd, tmp_path, "dcounts_sum_inv = (f.counts * dprobs).sum(1, keepdim=True)",
        "dcounts_sum_inv = (f.counts * dprobs).sum(0, keepdim=True)",
    )  # fmt: skip
    assert wrong(rows) == ["counts_sum_inv"]
    assert rows["counts_sum"].verdict == INHERITED and rows["counts"].verdict == INHERITED
    assert "dcounts_sum_inv has shape (1, 27), not (32, 1)" in rows["counts_sum"].note


def test_a_wrong_step_below_a_misshapen_upstream_is_still_wrong(fwd, tmp_path):
    rows = graded(
        fwd, tmp_path, "dcounts_sum_inv = (f.counts * dprobs).sum(1, keepdim=True)",
        "dcounts_sum_inv = (f.counts * dprobs).sum(0, keepdim=True)",
    )  # fmt: skip
    student = load_module(tmp_path / "ex1_chunked_backward.py").chunked_backward(fwd.student_view())
    student["counts_sum"] = 2 * student["counts_sum"]
    rows = {r.name: r for r in grade_steps(student, fwd.recording, fwd.loss, fwd.reference_grads, n=32)}
    assert rows["counts_sum"].verdict == WRONG


def test_a_size_hard_coded_in_exercise_1_is_named_once_where_other_shapes_raise(tmp_path):
    from gradcheck_kit.course.catalogue import Hints
    from gradcheck_kit.course.grader import Grader
    from gradcheck_kit.makemore.model import Config
    from gradcheck_kit.sandbox.box import Sandbox
    from gradcheck_kit.sandbox.policy import ExerciseSandbox

    (tmp_path / "ex1_chunked_backward.py").write_text(
        SOURCE.replace("num_classes=f.logits.shape[1]", "num_classes=27"), encoding="utf-8"
    )
    grader = Grader(tmp_path, ExerciseSandbox(Sandbox(isolate=False), {}, 20.0), Hints())
    assert grader.grade("ex1").report.passed
    rows = grader.grade("ex1", Config(n=5, vocab_size=7, n_hidden=9, n_embd=4, block_size=2)).report.rows
    told = [row for row in rows if row.diagnosis is not None]
    assert [row.name for row in told] == ["logits"]  # the gradient the raising line was updating
    assert "27 (vocab_size) at ex1_chunked_backward.py:" in told[0].diagnosis.detected
    assert "num_classes=27" in told[0].diagnosis.detected
    assert told[0].diagnosis.evidence.startswith("right at the notebook's sizes, not at n=5, vocab_size=7")


@pytest.mark.parametrize(
    "changes",
    [
        # No clone, but no in-place update either: dbndiff keeps its values.
        [("dhprebn = dbndiff.clone()", "dhprebn = dbndiff"), ("dhprebn += (1.0 / n)", "dhprebn = dhprebn + (1.0 / n)")],
        [('g["b2"] = dlogits.sum(0)', 'g["b2"] = dlogits.sum(0, keepdim=True).squeeze(0)')],
        [("dbnvar_inv = (f.bndiff * dbnraw)", "dbnvar_inv = (f.bnraw / f.bnvar_inv * dbnraw)")],
    ],
)
def test_right_answers_written_close_to_a_detected_mistake_pass(fwd, tmp_path, changes):
    source = SOURCE
    for old, new in changes:
        assert old in source
        source = source.replace(old, new)
    path = tmp_path / "ex1_chunked_backward.py"
    path.write_text(source, encoding="utf-8")
    student = load_module(path).chunked_backward(fwd.student_view())
    rows = grade_steps(student, fwd.recording, fwd.loss, fwd.reference_grads, n=fwd.n)
    assert all(row.passed and row.diagnosis is None for row in rows)


def test_equal_values_far_apart_in_the_chain_are_not_told_as_the_same_tensor(fwd, tmp_path):
    # dbngain without its bnraw factor equals dbnbias exactly; they are not one variable set to the other.
    rows = graded(
        fwd, tmp_path, 'g["bngain"] = (f.bnraw * dhpreact).sum(0, keepdim=True)',
        'g["bngain"] = dhpreact.sum(0, keepdim=True)',
    )  # fmt: skip
    assert wrong(rows) == ["bngain"]
    assert "same tensor" not in rows["bngain"].explanation


def test_a_missing_keepdim_is_charged_once_when_the_step_below_broadcasts_it(fwd):
    f = fwd.student_view()
    student = SOLUTION.chunked_backward(f)
    student["counts_sum_inv"] = student["counts_sum_inv"].flatten()  # (32,) where (32, 1) belongs
    student["counts_sum"] = -(f.counts_sum**-2) * student["counts_sum_inv"]  # the right step: (32, 32)
    rows = {r.name: r for r in grade_steps(student, fwd.recording, fwd.loss, fwd.reference_grads, n=32)}
    assert [name for name, row in rows.items() if not row.passed] == ["counts_sum_inv"]
    assert rows["counts_sum"].verdict == INHERITED
    assert "dcounts_sum_inv has shape (32,), not (32, 1)" in rows["counts_sum"].note
