"""A catalogue of implementations graded through the real grader: each mistake fails as it should, right answers pass.

Every folder of tests/catalogue/ is one implementation: the exercise files that differ
from solutions/. The exercises' own tests grade them in a pytester copy of exercises/.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

from gradcheck_kit.course.layers import LAYER_CHECKS
from gradcheck_kit.makemore.model import GRADED

pytestmark = pytest.mark.e2e  # each run grades a pytester copy of exercises/ through the real sandbox
CATALOGUE = Path(__file__).parent / "catalogue"

EX1 = "test_ex1_chunked_backward.py::test_gradient"
EX2 = "test_ex2_cross_entropy.py"
EX3 = "test_ex3_batchnorm.py"
EX4 = "test_ex4_embedding.py"
EX5 = "test_ex5_layers.py"
EX6 = "test_ex6_training.py"
NOTEBOOK = "::test_notebook_shapes"

EX1_TABLE = "exercise 1: chunked backward [cpu]"
BOTH_SHAPES = {"test_notebook_shapes[cpu]": "passed", "test_other_shapes[cpu]": "passed"}
EX5_PASSED = {f"test_layers[{key}]": "passed" for key, check in LAYER_CHECKS.items() if check.exercise == "ex5"}
EX6_PASSED = {f"test_training[{key}]": "passed" for key, check in LAYER_CHECKS.items() if check.exercise == "ex6"}
ON_REFERENCE_LAYERS = "exercise 6: training: * (graded on the reference layers: your exercise 5 layers do not pass yet*"


@dataclass(frozen=True)
class Run:
    """Catalogue cases graded in one pytest run, and the exercises' tests it runs."""

    cases: tuple[str, ...]
    tests: tuple[str, ...]
    options: tuple[str, ...] = ()


# One pytest run grades one folder, so a run takes at most one case per exercise file, and
# each case is graded in exactly one run. A run costs seconds (its sandbox starts a worker
# process, which imports torch), so cases of different exercises share one.
RUNS = (
    Run(
        ("ex1_dlogprobs_missing_1_over_n", "ex2_softmax_minus_one_hot", "ex3_rearranged_formula", "ex4_python_loop"),
        (EX1, EX2, EX3, EX4),
    ),
    Run(
        ("ex1_dbngain_missing_keepdim", "ex2_exp_of_log_softmax", "ex3_float64_inside_cast_back", "ex4_index_add"),
        (EX1, EX2, EX3, EX4),
    ),
    Run(
        ("ex1_dbnbias_not_summed", "ex2_modifies_logits_in_place", "ex3_biased_variance", "ex4_one_hot_matmul"),
        (EX1, EX2, EX3 + NOTEBOOK, EX4),
    ),
    Run(
        ("ex1_dbndiff2_biased_variance", "ex2_missing_1_over_n", "ex3_returns_float64", "ex4_loop_overwrites"),
        (EX1, EX2 + NOTEBOOK, EX3 + NOTEBOOK, EX4 + NOTEBOOK),
    ),
    Run(
        (
            "ex1_dbndiff_missing_factor_2",
            "ex2_uses_autograd_grad",
            "ex3_calls_loss_backward",
            "ex4_index_put_without_accumulate",
        ),
        (EX1, EX2 + NOTEBOOK, EX3 + NOTEBOOK, EX4 + NOTEBOOK),
    ),
    Run(
        ("ex1_dW2_transposed", "ex2_returns_none", "ex3_raises", "ex4_returns_numpy"),
        (EX1, EX2 + NOTEBOOK, EX3 + NOTEBOOK, EX4 + NOTEBOOK),
    ),
    Run(("ex1_dcounts_missing_branch", "ex2_hard_codes_batch_of_32"), (EX1, EX2)),
    Run(("ex1_dbndiff_missing_branch", "ex2_sign_flipped"), (EX1, EX2)),
    Run(
        ("ex1_misspelled_key", "ex2_infinite_loop"),
        (EX1, EX2, EX3 + NOTEBOOK, EX4 + NOTEBOOK),
        ("--gradcheck-timeout", "3"),
    ),
    Run(("ex1_dnorm_logits_divides_by_zero",), (EX1,)),
    Run(("ex1_half_written",), ("test_ex1_chunked_backward.py",)),
    Run(("ex4_returns_on_cpu",), (EX4 + NOTEBOOK,), ("--gradcheck-device", "cuda")),
    # Exercises 5 and 6: exercise 6 runs on the reference layers while exercise 5 fails.
    Run(("ex5_batchnorm_eval_backward_hangs",), (EX5, EX6), ("--gradcheck-timeout", "3")),
    Run(("ex5_linear_backward_exits",), (EX5, EX6)),
    Run(("ex5_tanh_forward_uses_autograd", "ex6_never_updates_C"), (EX5, EX6)),
    Run(("ex5_patches_the_grader",), (EX5, EX6)),
    Run(("ex5_params_in_a_list", "ex6_calibrate_stays_in_training"), (EX5, EX6)),
)


@pytest.fixture(scope="module")
def _gradings() -> dict[Run, Any]:
    return {}


@pytest.fixture
def graded(grade_exercises, _gradings):
    """``graded(case)``: the run that grades catalogue case ``case``, made by the first test that asks for it."""

    def graded(case: str):
        (run,) = [run for run in RUNS if case in run.cases]
        if run not in _gradings:
            _gradings[run] = grade_exercises(*run.cases, tests=run.tests, options=run.options)
        return _gradings[run]

    return graded


def line_of(case: str, file: str, text: str) -> int:
    """The line number of ``text`` in a catalogue file, as the grader's messages cite it."""
    lines = (CATALOGUE / case / file).read_text(encoding="utf-8").splitlines()
    return next(number for number, line in enumerate(lines, 1) if text in line)


# ----------------------------------------------------------------------------
# The catalogue itself.


def test_every_catalogue_case_is_graded_in_exactly_one_run():
    cases = [case for run in RUNS for case in run.cases]
    assert sorted(cases) == sorted(path.name for path in CATALOGUE.iterdir() if path.is_dir())


def test_two_cases_that_change_the_same_file_cannot_share_a_run(grade_exercises):
    clash = "'ex2_missing_1_over_n' and 'ex2_sign_flipped' both change ex2_cross_entropy.py"
    with pytest.raises(ValueError, match=clash):
        grade_exercises("ex2_missing_1_over_n", "ex2_sign_flipped", tests=(EX2,))


# ----------------------------------------------------------------------------
# Exercise 1: one wrong step fails that gradient's test only, with a diagnosis.


def test_dlogprobs_without_1_over_n_fails_only_dlogprobs_and_every_later_step_is_inherited(graded):
    run = graded("ex1_dlogprobs_missing_1_over_n")
    assert run.failing("ex1") == {"test_gradient[cpu-logprobs]": "failed"}
    run.failure("ex1", "test_gradient[cpu-logprobs]").fnmatch_lines(
        ["*dlogprobs: WRONG: first wrong step — off by a constant factor of n = 32*"]
    )
    verdicts = run.verdicts(EX1_TABLE)
    assert len(verdicts) == 26
    # dlogit_maxes and db1 are zero up to rounding, so n times them still passes: as a match
    # of the reference, or as the right step applied to the wrong upstream, as rounding falls.
    assert verdicts.pop("logprobs") == "wrong"
    assert verdicts.pop("logit_maxes") in ("ok", "inherited")
    assert verdicts.pop("b1") in ("ok", "inherited")
    assert set(verdicts.values()) == {"inherited"}
    run.result.stdout.fnmatch_lines(["probs *inherited*your step is right; the error is upstream (dlogprobs)*"])


def test_dbngain_summed_without_keepdim_is_a_shape_mismatch_that_suggests_keepdim(graded):
    run = graded("ex1_dbngain_missing_keepdim")
    assert run.failing("ex1") == {"test_gradient[cpu-bngain]": "failed"}
    run.failure("ex1", "test_gradient[cpu-bngain]").fnmatch_lines(
        ["*dbngain: WRONG: *Shape mismatch: got (64,) where (1, 64) is expected.*keepdim=True*"]
    )


def test_dbnbias_not_summed_over_the_batch_is_a_shape_mismatch_that_asks_for_the_sum(graded):
    run = graded("ex1_dbnbias_not_summed")
    assert run.failing("ex1") == {"test_gradient[cpu-bnbias]": "failed"}
    run.failure("ex1", "test_gradient[cpu-bnbias]").fnmatch_lines(
        ["*dbnbias: WRONG: *Shape mismatch: got (32, 64) where (1, 64) is expected.*summed over dimension*(0,)*"]
    )


def test_dbndiff2_with_the_biased_variance_is_off_by_n_minus_1_over_n(graded):
    run = graded("ex1_dbndiff2_biased_variance")
    assert run.failing("ex1") == {"test_gradient[cpu-bndiff2]": "failed"}
    run.failure("ex1", "test_gradient[cpu-bndiff2]").fnmatch_lines(
        ["*dbndiff2: WRONG: first wrong step — off by a constant factor of (n-1)/n = 31/32*Bessel*"]
    )


def test_dbndiff_without_the_2_of_x_squared_fails_dbndiff_with_the_power_rule_hint(graded):
    run = graded("ex1_dbndiff_missing_factor_2")
    assert run.failing("ex1") == {"test_gradient[cpu-bndiff]": "failed"}
    run.failure("ex1", "test_gradient[cpu-bndiff]").fnmatch_lines(["*dbndiff: WRONG: first wrong step*d x**2/dx = 2x*"])


def test_dbndiff_without_the_2_of_x_squared_is_diagnosed_as_a_factor_on_the_bndiff2_branch(graded):
    run = graded("ex1_dbndiff_missing_factor_2")
    run.failure("ex1", "test_gradient[cpu-bndiff]").fnmatch_lines(["*dbndiff: WRONG:*'bndiff2'*factor*"])


def test_dW2_as_dlogits_T_at_h_is_recognised_as_the_transpose(graded):
    run = graded("ex1_dW2_transposed")
    assert run.failing("ex1") == {"test_gradient[cpu-W2]": "failed"}
    run.failure("ex1", "test_gradient[cpu-W2]").fnmatch_lines(
        ["*dW2: WRONG: first wrong step — it is the transpose of the right gradient*"]
    )


def test_dcounts_without_the_counts_sum_branch_names_the_missing_branch(graded):
    run = graded("ex1_dcounts_missing_branch")
    assert run.failing("ex1") == {"test_gradient[cpu-counts]": "failed"}
    run.failure("ex1", "test_gradient[cpu-counts]").fnmatch_lines(
        ["*dcounts: WRONG: first wrong step — the contribution through 'counts_sum' is missing*"]
    )


def test_dbndiff_without_the_bndiff2_branch_names_the_missing_branch(graded):
    run = graded("ex1_dbndiff_missing_branch")
    assert run.failing("ex1") == {"test_gradient[cpu-bndiff]": "failed"}
    run.failure("ex1", "test_gradient[cpu-bndiff]").fnmatch_lines(
        ["*dbndiff: WRONG: first wrong step — the contribution through 'bndiff2' is missing*"]
    )


def test_a_misspelled_key_fails_that_gradient_and_suggests_the_right_key(graded):
    run = graded("ex1_misspelled_key")
    assert run.failing("ex1") == {"test_gradient[cpu-logprobs]": "failed"}
    run.failure("ex1", "test_gradient[cpu-logprobs]").fnmatch_lines(
        ["*dlogprobs: WRONG: returned under the key 'logprob': did you mean 'logprobs'?*"]
    )


def test_dividing_by_zero_fails_the_step_with_the_count_of_non_finite_values(graded):
    run = graded("ex1_dnorm_logits_divides_by_zero")
    assert run.outcomes("ex1")["test_gradient[cpu-norm_logits]"] == "failed"
    assert run.outcomes("ex1")["test_gradient[cpu-counts]"] == "passed"
    run.failure("ex1", "test_gradient[cpu-norm_logits]").fnmatch_lines(
        ["*dnorm_logits: WRONG: first wrong step — Non-finite values: 32 / 864 elements*actual inf*"]
    )


def test_other_shapes_are_not_earned_while_gradients_are_still_to_be_written(graded):
    run = graded("ex1_half_written")
    outcomes = run.outcomes("ex1")
    assert {name for name, outcome in outcomes.items() if outcome == "passed"} == {
        f"test_gradient[cpu-{name}]" for name in GRADED[:8]
    }
    assert outcomes["test_other_shapes[cpu]"] == "not started"


def test_what_a_division_by_zero_turns_to_inf_everywhere_cannot_be_checked_and_earns_nothing(graded):
    run = graded("ex1_dnorm_logits_divides_by_zero")
    outcomes = run.outcomes("ex1")
    for name in ("logprobs", "probs", "counts_sum_inv", "counts_sum", "counts"):  # right up to the division
        assert outcomes[f"test_gradient[cpu-{name}]"] == "passed", name
    # dh = dlogits @ W2.T is inf or NaN everywhere: no output would show its step wrong.
    assert outcomes["test_gradient[cpu-h]"] == "failed"
    run.failure("ex1", "test_gradient[cpu-h]").fnmatch_lines(
        ["*dh: WRONG: cannot be checked: your upstream gradients (dnorm_logits) make this step zero or NaN everywhere*"]
    )


# ----------------------------------------------------------------------------
# Exercises 2-4: known mistakes are named, and failures stay in their exercise.


def test_cross_entropy_without_1_over_n_is_off_by_n(graded):
    run = graded("ex2_missing_1_over_n")
    assert run.failing("ex2") == {"test_notebook_shapes[cpu]": "failed"}
    run.failure("ex2", "test_notebook_shapes[cpu]").fnmatch_lines(
        ["*dlogits: WRONG: off by a constant factor of n = 32*"]
    )


def test_a_fused_exercise_names_its_gradient_once(graded):
    run = graded("ex2_missing_1_over_n")
    run.failure("ex2", "test_notebook_shapes[cpu]").fnmatch_lines(["  dlogits: WRONG: *"])


def test_cross_entropy_with_the_sign_flipped_says_so(graded):
    run = graded("ex2_sign_flipped")
    assert run.failing("ex2") == {"test_notebook_shapes[cpu]": "failed"}
    run.failure("ex2", "test_notebook_shapes[cpu]").fnmatch_lines(
        ["*dlogits: WRONG: off by a constant factor of -1 (the sign is flipped)*"]
    )


def test_a_wrong_formula_costs_the_notebook_test_only_and_other_shapes_check_what_it_returns(graded):
    run = graded("ex2_sign_flipped")
    assert run.outcomes("ex2")["test_other_shapes[cpu]"] == "passed"


def test_batchnorm_with_the_biased_variance_gets_the_biased_variance_hint(graded):
    run = graded("ex3_biased_variance")
    assert run.failing("ex3") == {"test_notebook_shapes[cpu]": "failed"}
    run.failure("ex3", "test_notebook_shapes[cpu]").fnmatch_lines(
        ["*dhprebn: WRONG: you used the biased variance (divide by n)*n/(n-1)*"]
    )


def test_embedding_loop_with_assignment_instead_of_plus_equals_is_told_to_accumulate(graded):
    run = graded("ex4_loop_overwrites")
    assert run.failing("ex4") == {"test_notebook_shapes[cpu]": "failed"}
    run.failure("ex4", "test_notebook_shapes[cpu]").fnmatch_lines(
        ["*dC: WRONG: rows of C that appear more than once in Xb must collect the sum of their gradients*"]
    )


def test_index_put_without_accumulate_is_told_to_accumulate(graded):
    run = graded("ex4_index_put_without_accumulate")
    assert run.failing("ex4") == {"test_notebook_shapes[cpu]": "failed"}
    run.failure("ex4", "test_notebook_shapes[cpu]").fnmatch_lines(
        ["*dC: WRONG: rows of C that appear more than once in Xb must collect the sum of their gradients*"]
    )


def test_a_float64_result_fails_on_its_dtype_although_the_values_agree(graded):
    run = graded("ex3_returns_float64")
    assert run.failing("ex3") == {"test_notebook_shapes[cpu]": "failed"}
    run.failure("ex3", "test_notebook_shapes[cpu]").fnmatch_lines(
        ["*dhprebn: WRONG: dtype mismatch: got float64 where float32 is expected. Values agree*"]
    )


def test_a_numpy_array_fails_as_not_a_tensor(graded):
    run = graded("ex4_returns_numpy")
    assert run.failing("ex4") == {"test_notebook_shapes[cpu]": "failed"}
    run.failure("ex4", "test_notebook_shapes[cpu]").fnmatch_lines(
        ["*dC: WRONG: Expected a float32 tensor of shape (27, 10), got numpy.ndarray.*"]
    )


def test_cross_entropy_without_a_return_statement_fails_and_says_it_returned_none(graded):
    run = graded("ex2_returns_none")
    assert run.failing("ex2") == {"test_notebook_shapes[cpu]": "failed"}
    run.failure("ex2", "test_notebook_shapes[cpu]").fnmatch_lines(["*dlogits:*None*"])


def test_cross_entropy_without_a_return_statement_does_not_pass(graded):
    run = graded("ex2_returns_none")
    assert run.outcomes("ex2")["test_notebook_shapes[cpu]"] != "passed"
    assert run.result.ret == pytest.ExitCode.TESTS_FAILED


def test_an_exception_fails_with_its_message_and_the_students_line(graded):
    run = graded("ex3_raises")
    line = line_of("ex3_raises", "ex3_batchnorm.py", "var_term = bnraw @")
    assert run.failing("ex3") == {"test_notebook_shapes[cpu]": "failed"}
    run.failure("ex3", "test_notebook_shapes[cpu]").fnmatch_lines(
        [
            "*dhprebn: ERROR: RuntimeError: mat1 and mat2 shapes cannot be multiplied (32x64 and 1x64) "
            f"at ex3_batchnorm.py:{line}: var_term = bnraw @ (dhpreact * bnraw).sum(0, keepdim=True)",
        ]
    )


def test_torch_autograd_grad_is_refused_at_the_students_line(graded):
    run = graded("ex2_uses_autograd_grad")
    line = line_of("ex2_uses_autograd_grad", "ex2_cross_entropy.py", "torch.autograd.grad(")
    assert run.failing("ex2") == {"test_notebook_shapes[cpu]": "failed"}
    run.failure("ex2", "test_notebook_shapes[cpu]").fnmatch_lines(
        [
            "*dlogits: ERROR: AutogradForbidden: manual backward must not use autograd: torch.autograd.grad()*"
            f"at ex2_cross_entropy.py:{line}: (dlogits,) = torch.autograd.grad(loss, logits)",
        ]
    )


def test_loss_backward_is_refused_at_the_students_line(graded):
    run = graded("ex3_calls_loss_backward")
    line = line_of("ex3_calls_loss_backward", "ex3_batchnorm.py", "loss.backward()")
    assert run.failing("ex3") == {"test_notebook_shapes[cpu]": "failed"}
    run.failure("ex3", "test_notebook_shapes[cpu]").fnmatch_lines(
        [
            "*dhprebn: ERROR: AutogradForbidden: manual backward must not use autograd: torch.Tensor.backward()*"
            f"at ex3_batchnorm.py:{line}: loss.backward()",
        ]
    )


def test_an_infinite_loop_times_out_and_the_exercises_after_it_are_still_graded(graded):
    run = graded("ex2_infinite_loop")
    assert run.failing("ex2") == {"test_notebook_shapes[cpu]": "failed", "test_other_shapes[cpu]": "failed"}
    run.failure("ex2", "test_notebook_shapes[cpu]").fnmatch_lines(
        ["*dlogits: ERROR: the call did not finish within 3 s and was stopped; an infinite loop*"]
    )
    assert run.outcomes("ex3") == {"test_notebook_shapes[cpu]": "passed"}
    assert run.outcomes("ex4") == {"test_notebook_shapes[cpu]": "passed"}


def test_hard_coding_the_batch_of_32_passes_the_notebook_and_fails_other_shapes(graded):
    run = graded("ex2_hard_codes_batch_of_32")
    assert run.failing("ex2") == {"test_other_shapes[cpu]": "failed"}
    run.failure("ex2", "test_other_shapes[cpu]").fnmatch_lines(
        ["exercise 2: cross-entropy backward, n=*", "*dlogits: WRONG: off by a constant factor of *"]
    )


@pytest.mark.skipif(not Path("/dev/nvidiactl").exists(), reason="no GPU: a gradient cannot be on the wrong device")
def test_a_gradient_returned_on_the_cpu_fails_on_its_device(graded):
    run = graded("ex4_returns_on_cpu")
    if run.outcomes("ex4") == {"test_notebook_shapes[cuda]": "skipped"}:
        pytest.skip("this torch cannot use the GPU")
    assert run.failing("ex4") == {"test_notebook_shapes[cuda]": "failed"}
    run.failure("ex4", "test_notebook_shapes[cuda]").fnmatch_lines(
        ["*dC: WRONG: device mismatch: got cpu where cuda:0 is expected.*"]
    )


# ----------------------------------------------------------------------------
# Right answers written differently pass every test of their exercise.


def test_softmax_minus_one_hot_passes(graded):
    assert graded("ex2_softmax_minus_one_hot").outcomes("ex2") == BOTH_SHAPES


def test_exp_of_log_softmax_passes(graded):
    assert graded("ex2_exp_of_log_softmax").outcomes("ex2") == BOTH_SHAPES


def test_cross_entropy_that_overwrites_its_logits_in_place_passes(graded):
    assert graded("ex2_modifies_logits_in_place").outcomes("ex2") == BOTH_SHAPES


def test_a_rearranged_batchnorm_formula_passes(graded):
    assert graded("ex3_rearranged_formula").outcomes("ex3") == BOTH_SHAPES


def test_batchnorm_in_float64_cast_back_passes(graded):
    assert graded("ex3_float64_inside_cast_back").outcomes("ex3") == BOTH_SHAPES


def test_the_embedding_as_a_python_loop_passes(graded):
    assert graded("ex4_python_loop").outcomes("ex4") == BOTH_SHAPES


def test_the_embedding_as_index_add_passes(graded):
    assert graded("ex4_index_add").outcomes("ex4") == BOTH_SHAPES


def test_the_embedding_as_a_one_hot_matmul_passes(graded):
    assert graded("ex4_one_hot_matmul").outcomes("ex4") == BOTH_SHAPES


# ----------------------------------------------------------------------------
# Exercises 5 and 6: a failure stays in its check, and exercise 6 is graded on
# the reference layers while exercise 5 fails, so one mistake costs points once.


def test_a_batchnorm_backward_that_hangs_in_eval_mode_fails_that_check_alone_with_the_time_limit(graded):
    run = graded("ex5_batchnorm_eval_backward_hangs")
    assert run.failing("ex5") == {"test_layers[batchnorm_eval]": "failed"}
    run.failure("ex5", "test_layers[batchnorm_eval]").fnmatch_lines(
        ["*batchnorm_eval: ERROR: the call did not finish within 3 s and was stopped; an infinite loop*"]
    )
    assert run.outcomes("ex6") == EX6_PASSED
    run.result.stdout.fnmatch_lines([ON_REFERENCE_LAYERS])


def test_os_exit_in_linear_backward_fails_the_linear_checks_and_the_deep_mlp_only(graded):
    run = graded("ex5_linear_backward_exits")
    assert run.failing("ex5") == {
        "test_layers[linear]": "failed",
        "test_layers[linear_without_bias]": "failed",
        "test_layers[deep_mlp]": "failed",
    }
    for test in ("test_layers[linear]", "test_layers[deep_mlp]"):
        run.failure("ex5", test).fnmatch_lines(["*: ERROR: the worker process exited with code 0 during the call*"])
    assert run.outcomes("ex6") == EX6_PASSED
    run.result.stdout.fnmatch_lines([ON_REFERENCE_LAYERS])


def test_autograd_in_the_tanh_forward_pass_is_refused_at_the_students_line(graded):
    run = graded("ex5_tanh_forward_uses_autograd")
    line = line_of("ex5_tanh_forward_uses_autograd", "ex5_layers.py", "torch.autograd.grad(")
    assert run.failing("ex5") == {"test_layers[tanh]": "failed", "test_layers[deep_mlp]": "failed"}
    for test, check in (("test_layers[tanh]", "tanh"), ("test_layers[deep_mlp]", "deep_mlp")):
        run.failure("ex5", test).fnmatch_lines(
            [
                f"*{check}: ERROR: AutogradForbidden: manual backward must not use autograd: torch.autograd.grad()*"
                f"at ex5_layers.py:{line}: (self.local,) = torch.autograd.grad(out.sum(), x)"
            ]
        )


def test_a_train_step_that_never_updates_C_fails_the_training_steps_at_C(graded):
    run = graded("ex6_never_updates_C")
    assert run.failing("ex6") == {"test_training[training_steps]": "failed"}
    run.failure("ex6", "test_training[training_steps]").fnmatch_lines(["  C: WRONG: *"])


def test_a_file_that_patches_the_grading_code_gains_nothing(graded):
    run = graded("ex5_patches_the_grader")
    assert run.failing("ex5") == {test: "failed" for test in EX5_PASSED}
    # Either the sandbox refuses the import of the grader's modules, or the patches run in the
    # worker while the grading runs in the grader's process, where the zeros are wrong.
    lines = run.failure("ex5", "test_layers[linear]").lines
    refused = "*linear: ERROR: *may not import gradcheck_kit.comparison*"
    assert any(fnmatch(line, refused) for line in lines) or any(fnmatch(line, "  out: WRONG: *") for line in lines)
    run.result.stdout.fnmatch_lines(["exercise 5: layers * 0 / 9 *0 of 6 tests passed"])
    assert run.outcomes("ex6") == EX6_PASSED


def test_layers_that_keep_their_parameters_in_a_list_pass_and_train_in_exercise_6(graded):
    run = graded("ex5_params_in_a_list")
    assert run.outcomes("ex5") == EX5_PASSED
    outcomes = run.outcomes("ex6")
    assert (outcomes["test_training[training_steps]"], outcomes["test_training[loss_target]"]) == ("passed", "passed")
    # Exercise 5 passes, so exercise 6 trains these layers themselves.
    assert "graded on the reference layers" not in run.result.stdout.str()


def test_a_calibration_that_stays_in_training_mode_fails_on_the_training_flag(graded):
    run = graded("ex6_calibrate_stays_in_training")
    assert run.failing("ex6") == {"test_training[calibration]": "failed"}
    run.failure("ex6", "test_training[calibration]").fnmatch_lines(
        ["  training: WRONG: calibrate must leave every batchnorm in eval mode (training = False); 6 of 6 are not"]
    )


# ----------------------------------------------------------------------------
# Order: exercise 6 asks whether exercise 5 passes, whichever of them runs first.


# pytest-randomly 5 runs exercise 5's tests first with seed 1, and exercise 6's with seed 3.
@pytest.mark.parametrize("seed, first", [(1, "test_ex5_layers.py"), (3, "test_ex6_training.py")])
def test_the_solutions_earn_full_marks_for_exercises_5_and_6_in_a_random_order(grade_exercises, seed, first):
    pytest.importorskip("pytest_randomly", reason="pytest-randomly is not installed; it is not a dependency")
    run = grade_exercises(tests=(EX5, EX6), options=("-p", "randomly", f"--randomly-seed={seed}"))
    run.result.stdout.fnmatch_lines([f"Using --randomly-seed={seed}"])
    ran = [line for line in run.result.outlines if line.startswith("test_ex") and " PASSED" in line]
    assert ran and ran[0].startswith(first), ran
    assert run.outcomes("ex5") == EX5_PASSED
    assert run.outcomes("ex6") == EX6_PASSED
    run.result.stdout.fnmatch_lines(["exercise 5: layers * 9 / 9 *", "exercise 6: training * 6 / 6 *"])
