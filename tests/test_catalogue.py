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


def ex5(*checks: str) -> tuple[str, ...]:
    """The node ids of exercise 5's tests of ``checks``."""
    return tuple(f"{EX5}::test_layers[{check}]" for check in checks)


def ex6(*checks: str) -> tuple[str, ...]:
    """The node ids of exercise 6's tests of ``checks``."""
    return tuple(f"{EX6}::test_training[{check}]" for check in checks)


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
    Run(
        (
            "ex1_dcounts_missing_branch",
            "ex2_hard_codes_batch_of_32",
            "ex3_mean_term_over_n_minus_1",
            "ex4_index_add_on_a_copy",
        ),
        (EX1, EX2, EX3 + NOTEBOOK, EX4 + NOTEBOOK),
    ),
    Run(
        ("ex1_dbndiff_missing_branch", "ex2_sign_flipped", "ex4_plus_equals_on_all_indices"), (EX1, EX2, EX4 + NOTEBOOK)
    ),
    Run(
        ("ex1_misspelled_key", "ex2_infinite_loop", "ex4_index_put_with_accumulate"),
        (EX1, EX2, EX3 + NOTEBOOK, EX4 + NOTEBOOK),
        ("--gradcheck-timeout", "3"),
    ),
    Run(
        ("ex1_dnorm_logits_divides_by_zero", "ex2_hard_codes_a_32_by_27_buffer", "ex4_loop_misses_the_last_example"),
        (EX1, EX2, EX4 + NOTEBOOK),
    ),
    Run(("ex1_aliased_bndiff_and_extra_keepdim", "ex3_terms_written_as_means"), (EX1, EX3)),
    Run(("ex1_raises_after_a_factor_of_bnvar_inv",), (EX1,)),
    Run(("ex1_half_written",), ("test_ex1_chunked_backward.py",)),
    Run(("ex4_returns_on_cpu",), (EX4 + NOTEBOOK,), ("--gradcheck-device", "cuda")),
    # Exercises 5 and 6: exercise 6 runs on the reference layers while exercise 5 fails.
    Run(("ex5_batchnorm_eval_backward_hangs",), (EX5, EX6), ("--gradcheck-timeout", "3")),
    Run(("ex5_linear_backward_exits",), (EX5, EX6)),
    Run(("ex5_tanh_forward_uses_autograd", "ex6_never_updates_C"), (EX5, EX6)),
    Run(("ex5_patches_the_grader",), (EX5, EX6)),
    Run(("ex5_params_in_a_list", "ex6_calibrate_stays_in_training"), (EX5, EX6)),
    # Exercises 5 and 6: each mistake is named, with its evidence, in the rows that show it; only the checks
    # that show it are run.
    Run(
        ("ex5_batchnorm_backward_biased_variance", "ex6_update_rebinds_parameters"),
        ex5("batchnorm_training", "deep_mlp") + ex6("training_steps"),
    ),
    Run(
        ("ex5_swapped_momentum", "ex6_calibrate_biased_variance"),
        ex5("batchnorm_training", "deep_mlp") + ex6("calibration"),
    ),
    Run(("ex5_running_var_biased",), ex5("batchnorm_training", "deep_mlp")),
    Run(("ex5_running_stats_updated_in_eval",), ex5("batchnorm_eval", "deep_mlp")),
    Run(("ex5_eval_backward_batch_formula",), ex5("batchnorm_eval")),
    Run(("ex5_tanh_derivative_from_input",), ex5("tanh", "deep_mlp")),
    Run(("ex5_weight_gradient_accumulated",), ex5("linear", "linear_without_bias", "deep_mlp")),
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


def shows(run: Any, exercise: str, test: str, *lines: str) -> None:
    """``test``'s failure shows ``lines`` in order: fnmatch patterns in which ``[`` is itself, as layer names print."""
    run.failure(exercise, test).fnmatch_lines([line.replace("[", "[[]") for line in lines])


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
        [
            "*dbndiff2: WRONG: first wrong step — off by a constant factor of (n-1)/n = 31/32: a division by n where "
            "the forward pass divides by n-1*"
        ]
    )


def test_dbndiff_without_the_2_of_x_squared_fails_dbndiff_only_and_the_hint_gives_way_to_the_diagnosis(graded):
    run = graded("ex1_dbndiff_missing_factor_2")
    assert run.failing("ex1") == {"test_gradient[cpu-bndiff]": "failed"}
    lines = run.failure("ex1", "test_gradient[cpu-bndiff]")
    lines.fnmatch_lines(["*dbndiff: WRONG: first wrong step — the contribution through 'bndiff2' is off by*1/2*"])
    assert not any("hint:" in line for line in lines.lines)


def test_dbndiff_without_the_2_of_x_squared_is_diagnosed_as_a_factor_on_the_bndiff2_branch(graded):
    run = graded("ex1_dbndiff_missing_factor_2")
    run.failure("ex1", "test_gradient[cpu-bndiff]").fnmatch_lines(["*dbndiff: WRONG:*'bndiff2'*factor*"])


def test_dW2_as_dlogits_T_at_h_is_recognised_as_the_transpose(graded):
    run = graded("ex1_dW2_transposed")
    assert run.failing("ex1") == {"test_gradient[cpu-W2]": "failed"}
    run.failure("ex1", "test_gradient[cpu-W2]").fnmatch_lines(
        [
            "*dW2: WRONG: first wrong step — Shape mismatch: got (27, 64) where (64, 27) is expected. "
            "— it is the transpose of the right gradient*"
        ]
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
        ["*dh: UNCHECKED: your upstream gradients (dnorm_logits) make this step zero or NaN everywhere*"]
    )


def test_a_gradient_changed_in_place_through_another_is_told_so_and_an_extra_keepdim_is_told_as_extra(graded):
    run = graded("ex1_aliased_bndiff_and_extra_keepdim")
    assert run.failing("ex1") == {"test_gradient[cpu-b2]": "failed", "test_gradient[cpu-bndiff]": "failed"}
    run.failure("ex1", "test_gradient[cpu-bndiff]").fnmatch_lines(
        [
            "*dbndiff: WRONG: dbndiff holds exactly the values of dhprebn: the two are the same tensor (one was set to "
            "the other without a .clone(), say dhprebn = dbndiff*"
        ]
    )
    lines = run.failure("ex1", "test_gradient[cpu-b2]")
    lines.fnmatch_lines(["*db2: WRONG: first wrong step — Shape mismatch: got (1, 27) where (27,) is expected.*"
                         " — an extra keepdim=True*"])  # fmt: skip
    assert not any("missing keepdim" in line for line in lines.lines)


def test_an_exception_is_told_once_and_the_gradients_computed_before_it_are_graded(graded):
    run = graded("ex1_raises_after_a_factor_of_bnvar_inv")
    line = line_of("ex1_raises_after_a_factor_of_bnvar_inv", "ex1_chunked_backward.py", 'g["W1"] = dhprebn @')
    outcomes = run.outcomes("ex1")
    failed = {name for name in GRADED if outcomes[f"test_gradient[cpu-{name}]"] == "failed"}
    assert failed == {"bnvar_inv", "W1", "b1", "emb", "C"}
    run.failure("ex1", "test_gradient[cpu-bnvar_inv]").fnmatch_lines(
        ["*dbnvar_inv: WRONG: first wrong step — each column is off by a factor equal to bnvar_inv*"]
    )
    run.failure("ex1", "test_gradient[cpu-W1]").fnmatch_lines(
        [f"*dW1: ERROR: RuntimeError: *at ex1_chunked_backward.py:{line}: *"]
    )
    run.failure("ex1", "test_gradient[cpu-C]").fnmatch_lines(
        ["*dC: ERROR: not computed: chunked_backward raised before it (see dW1)*"]
    )
    # The exception is told at the first gradient it kept from being computed; the others point there.
    for name in ("b1", "emb", "C"):
        assert not any("RuntimeError" in text for text in run.failure("ex1", f"test_gradient[cpu-{name}]").lines)


# ----------------------------------------------------------------------------
# Exercises 2-4: known mistakes are named, and failures stay in their exercise.


def test_batchnorm_with_its_mean_term_over_n_minus_1_is_told_which_term(graded):
    run = graded("ex3_mean_term_over_n_minus_1")
    assert run.failing("ex3") == {"test_notebook_shapes[cpu]": "failed"}
    run.failure("ex3", "test_notebook_shapes[cpu]").fnmatch_lines(
        [
            "*dhprebn: WRONG: the mean term (dhpreact.sum(0) / n) is off by a factor of n/(n-1) = 32/31: "
            "a division by n-1 where the forward pass divides by n*"
        ]
    )


def test_an_embedding_gradient_left_all_zeros_is_told_so_and_not_a_factor_of_zero(graded):
    run = graded("ex4_index_add_on_a_copy")
    assert run.failing("ex4") == {"test_notebook_shapes[cpu]": "failed"}
    lines = run.failure("ex4", "test_notebook_shapes[cpu]")
    lines.fnmatch_lines(["*dC: WRONG: it is all zeros: nothing was written into it*"])
    assert not any("factor of 0" in line for line in lines.lines)


def test_a_loop_that_misses_the_last_example_names_the_rows_it_left_wrong(graded):
    run = graded("ex4_loop_misses_the_last_example")
    assert run.failing("ex4") == {"test_notebook_shapes[cpu]": "failed"}
    # The notebook's last example reads rows 26, 18 and 22 of C.
    run.failure("ex4", "test_notebook_shapes[cpu]").fnmatch_lines(
        ["*dC: WRONG: only rows 18, 22, 26 of 27 are wrong; the rest is right*"]
    )


def test_plus_equals_on_all_indices_is_told_why_it_keeps_one_row(graded):
    run = graded("ex4_plus_equals_on_all_indices")
    assert run.failing("ex4") == {"test_notebook_shapes[cpu]": "failed"}
    run.failure("ex4", "test_notebook_shapes[cpu]").fnmatch_lines(
        ["*dC: WRONG: rows of C that appear more than once*dC[[]Xb] += demb*write each repeated row once*"]
    )


def test_a_buffer_of_the_notebooks_size_is_named_with_its_line_where_other_shapes_fail(graded):
    run = graded("ex2_hard_codes_a_32_by_27_buffer")
    line = line_of("ex2_hard_codes_a_32_by_27_buffer", "ex2_cross_entropy.py", "torch.zeros((32, 27))")
    assert run.failing("ex2") == {"test_other_shapes[cpu]": "failed"}
    run.failure("ex2", "test_other_shapes[cpu]").fnmatch_lines(
        [f"*dlogits: ERROR: *a size of the notebook is written as a number: 32 (n) and 27 (vocab_size) at "
         f"ex2_cross_entropy.py:{line}: onehot = torch.zeros((32, 27))*"]
    )  # fmt: skip


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
    line = line_of("ex2_hard_codes_batch_of_32", "ex2_cross_entropy.py", "dlogits /= 32")
    run.failure("ex2", "test_other_shapes[cpu]").fnmatch_lines(
        [
            "exercise 2: cross-entropy backward, n=*",
            f"*dlogits: WRONG: *a size of the notebook is written as a number: 32 (n) at ex2_cross_entropy.py:{line}*"
            "off by a constant factor of *",
        ]
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


def test_index_put_with_accumulate_passes_where_plus_equals_on_all_indices_does_not(graded):
    assert graded("ex4_index_put_with_accumulate").outcomes("ex4") == {"test_notebook_shapes[cpu]": "passed"}


def test_batchnorm_with_its_terms_written_as_a_mean_and_a_sum_over_n_minus_1_passes(graded):
    assert graded("ex3_terms_written_as_means").outcomes("ex3") == BOTH_SHAPES


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
    shows(
        run, "ex6", "test_training[training_steps]",
        "  C: WRONG: C did not change in 5 steps (after them it is the same tensor, with the values it was given; "
        "C -= lr * dC changes the tensor in place, C = C - lr * dC makes a new one*",
        "  layers[16].gamma: WRONG: the error is that C did not change (layers[16].gamma is what 5 steps give when "
        "C stays as given)",
    )  # fmt: skip


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
    failure = run.failure("ex6", "test_training[calibration]")
    failure.fnmatch_lines(
        [
            "  training: WRONG: calibrate left the layers in training mode (6 of 6 batchnorm layers do not have "
            "training = False after it; it must leave every batchnorm in eval mode)",
            "      Greatest absolute difference: 1 at index (0,) (up to 0 allowed)",
        ]
    )
    failure.no_fnmatch_line("*e-43 allowed*")


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


# ----------------------------------------------------------------------------
# Exercises 5 and 6: each mistake is named where it shows, with the evidence it was recognised from.


def test_a_batchnorm_backward_with_the_biased_variance_is_named_in_the_layer_and_in_the_deep_mlp(graded):
    run = graded("ex5_batchnorm_backward_biased_variance")
    assert run.failing("ex5") == {"test_layers[batchnorm_training]": "failed", "test_layers[deep_mlp]": "failed"}
    shows(
        run, "ex5", "test_layers[batchnorm_training]",
        "  dx: WRONG: the backward pass used the biased variance, divided by n instead of n-1 (dx matches the "
        "batchnorm backward whose variance term lacks the factor n/(n-1) = 32/31, while the forward pass divides "
        "by n-1)",
    )  # fmt: skip
    shows(
        run, "ex5", "test_layers[deep_mlp]",
        "  dlayers[15].out: WRONG: first wrong step — the backward pass used the biased variance, divided by n*",
    )  # fmt: skip


def test_a_running_variance_updated_with_the_biased_variance_is_named_and_the_eval_logits_blame_it(graded):
    run = graded("ex5_running_var_biased")
    assert run.failing("ex5") == {"test_layers[batchnorm_training]": "failed", "test_layers[deep_mlp]": "failed"}
    shows(
        run, "ex5", "test_layers[batchnorm_training]",
        "  running_var: WRONG: running_var is updated with the biased batch variance, divided by n instead of n-1 "
        "(it equals (1 - momentum) * running_var + momentum * x.var(0, unbiased=False))",
    )  # fmt: skip
    shows(
        run, "ex5", "test_layers[deep_mlp]",
        "  layers[1].running_var: WRONG: layers[1].running_var is updated with the biased batch variance*",
        "  logits(eval): WRONG: the error is in the running statistics: layers[1].running_var and 5 more*",
    )  # fmt: skip


def test_swapped_momentum_is_named_by_how_far_the_running_statistics_moved(graded):
    run = graded("ex5_swapped_momentum")
    assert run.failing("ex5") == {"test_layers[batchnorm_training]": "failed", "test_layers[deep_mlp]": "failed"}
    shows(
        run, "ex5", "test_layers[batchnorm_training]",
        "  running_mean: WRONG: momentum swapped (running_mean moved 90% of the way to the batch mean instead of "
        "10%: the update is (1 - momentum) * running + momentum * batch)",
        "  running_var: WRONG: momentum swapped (running_var moved 90% of the way to the batch variance*",
    )  # fmt: skip


def test_running_statistics_updated_in_eval_mode_are_named_and_the_values_they_change_blame_them(graded):
    run = graded("ex5_running_stats_updated_in_eval")
    assert run.failing("ex5") == {"test_layers[batchnorm_eval]": "failed", "test_layers[deep_mlp]": "failed"}
    shows(
        run, "ex5", "test_layers[batchnorm_eval]",
        "  out: WRONG: the running statistics changed in eval mode before the batch was normalised (out is what "
        "your updated running_mean and running_var give; in eval mode they stay as they are)",
        "  running_mean: WRONG: the running statistics changed in eval mode (running_mean moved 10% of the way to "
        "the batch mean; in eval mode they stay as they are)",
    )  # fmt: skip
    shows(
        run, "ex5", "test_layers[deep_mlp]",
        "  logits(eval): WRONG: the running statistics changed in eval mode before the batch was normalised*",
    )  # fmt: skip


def test_an_eval_mode_backward_through_the_batch_statistics_is_named(graded):
    run = graded("ex5_eval_backward_batch_formula")
    assert run.failing("ex5") == {"test_layers[batchnorm_eval]": "failed"}
    shows(
        run, "ex5", "test_layers[batchnorm_eval]",
        "  dx: WRONG: the eval-mode backward used the training-mode formula, with the paths through the batch "
        "statistics (dx matches that formula applied to the running statistics; in eval mode they are constants, "
        "so dx = gamma * dout / sqrt(running_var + eps))",
    )  # fmt: skip


def test_a_tanh_derivative_taken_from_the_input_is_named_in_the_layer_and_in_the_deep_mlp(graded):
    run = graded("ex5_tanh_derivative_from_input")
    assert run.failing("ex5") == {"test_layers[tanh]": "failed", "test_layers[deep_mlp]": "failed"}
    shows(
        run, "ex5", "test_layers[tanh]",
        "  dx: WRONG: Tanh.backward used the input (dx equals dout * (1 - x**2); the derivative is 1 - tanh(x)**2, "
        "so dout * (1 - out**2) is expected)",
    )  # fmt: skip
    shows(run, "ex5", "test_layers[deep_mlp]", "  dlayers[13].out: WRONG: first wrong step — Tanh.backward used*")


def test_a_weight_gradient_accumulated_across_calls_fails_the_linear_checks_and_says_it_doubled(graded):
    run = graded("ex5_weight_gradient_accumulated")
    # One backward call per layer in the deep MLP: right there; a second call shows the +=.
    assert run.failing("ex5") == {"test_layers[linear]": "failed", "test_layers[linear_without_bias]": "failed"}
    shows(
        run, "ex5", "test_layers[linear]",
        "  dweight: WRONG: dweight is accumulated (+=) and never reset (it doubled on a second backward call with "
        "the same input; each call must set it afresh)",
    )  # fmt: skip


def test_a_train_step_that_rebinds_each_parameter_is_told_the_layers_never_changed_and_C_is_not_blamed(graded):
    run = graded("ex6_update_rebinds_parameters")
    assert run.failing("ex6") == {"test_training[training_steps]": "failed"}
    shows(
        run, "ex6", "test_training[training_steps]",
        "  C: WRONG: the error is that layers[0].weight and 17 more did not change (C is what 5 steps give when "
        "layers[0].weight and 17 more stay as given)",
        "  layers[0].weight: WRONG: layers[0].weight did not change in 5 steps (after them it is the same tensor, "
        "with the values it was given; p -= lr * grad changes the tensor in place, p = p - lr * grad makes a new "
        "one and rebinds only the name p)",
    )  # fmt: skip


def test_a_calibration_with_the_biased_variance_blames_it_not_the_running_mean_that_follows(graded):
    run = graded("ex6_calibrate_biased_variance")
    assert run.failing("ex6") == {"test_training[calibration]": "failed"}
    shows(
        run, "ex6", "test_training[calibration]",
        "  layers[4].running_mean: WRONG: not this layer's mistake: layers[1].running_var is the biased variance, "
        "divided by N instead of N-1 (it equals the expected one times (N-1)/N, N = *; layers[4].running_mean is "
        "the mean of the input your earlier statistics give it)",
    )  # fmt: skip
    run.failure("ex6", "test_training[calibration]").no_fnmatch_line("  layers[[]1].running_var: WRONG*")
