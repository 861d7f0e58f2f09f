"""Exercise 5 grading: the solution's layers match autograd; untouched stubs and common mistakes are caught and named.

Each check runs through :class:`~gradcheck_kit.course.grader.Grader` as in a student's run,
with the sandbox in this process for speed. A wrong implementation is the solution with
one thing changed, written to ``tmp_path``. The detectors that name the mistakes of
exercises 5 and 6 are also fed hand-made values, and the words they put on the rows of
exercise 6 are checked here with those of exercise 5.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from gradcheck_kit.course import layer_mistakes as found
from gradcheck_kit.course.catalogue import Hints
from gradcheck_kit.course.grader import Grader, Result
from gradcheck_kit.course.layer_values import graded
from gradcheck_kit.course.layers import LAYER_CHECKS
from gradcheck_kit.report import ERROR, INHERITED, NOT_STARTED, WRONG
from gradcheck_kit.sandbox.box import Sandbox
from gradcheck_kit.sandbox.policy import ExerciseSandbox

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
CATALOGUE = Path(__file__).resolve().parent / "catalogue"
EX5 = [key for key, check in LAYER_CHECKS.items() if check.exercise == "ex5"]
BATCHNORMS = (1, 4, 7, 10, 13, 16)
TANHS = (2, 5, 8, 11, 14)


def in_process_grader(folder: Path) -> Grader:
    """A grader whose student code runs in this process: the same steps as a worker, without the process."""
    return Grader(folder, ExerciseSandbox(Sandbox(isolate=False), {}, 20.0), Hints())


def grade(grader: Grader, check: str) -> Result:
    return grader.grade_layers(LAYER_CHECKS[check])


def failing(result: Result) -> dict[str, str]:
    """Each row that does not pass, by its label, with what is wrong with it."""
    return {row.label: row.comparison.problem or row.verdict for row in result.report.rows if not row.passed}


Change = Callable[..., Grader]


@pytest.fixture
def changed(tmp_path: Path) -> Change:
    """``changed(file, (old, new), ...)``: a grader of the solutions with ``old`` replaced by ``new`` in ``file``."""

    def change(file: str, *replacements: tuple[str, str]) -> Grader:
        for source in SOLUTIONS.glob("ex*.py"):
            shutil.copy(source, tmp_path)
        path = tmp_path / file
        text = path.read_text(encoding="utf-8")
        for old, new in replacements:
            assert text.count(old) == 1, f"{old!r} is not in {file} exactly once"
            text = text.replace(old, new)
        path.write_text(text, encoding="utf-8")
        return in_process_grader(tmp_path)

    return change


@pytest.fixture(scope="module")
def solution() -> Grader:
    return in_process_grader(SOLUTIONS)


# The mistakes, each one line of the solution changed.
BIASED_VARIANCE = ("n * dxhat - dxhat.sum(0) - n / (n - 1) * self.xhat", "n * dxhat - dxhat.sum(0) - self.xhat")
NO_BIAS_SUM = ("self.dbias = dout.sum(0)", "self.dbias = dout")
FORGETS_GAMMA = ("dxhat = self.gamma * dout", "dxhat = dout")
BATCH_FORMULA_IN_EVAL = (
    "        if not self.training:\n            # The running",
    "        if False:\n            # The running",
)
BIASED_RUNNING_VAR = ("self.momentum * xvar", "self.momentum * x.var(0, unbiased=False)")
TANH_FROM_INPUT = (
    ("        self.out = torch.tanh(x)\n", "        self.x = x\n        self.out = torch.tanh(x)\n"),
    ("return (1 - self.out**2) * dout", "return (1 - self.x**2) * dout"),
)


# ----------------------------------------------------------------------------
# The solution and the stubs.


@pytest.mark.parametrize("check", EX5)
def test_the_solution_passes_every_layer_check(solution, check):
    result = grade(solution, check)
    assert result.status == "ok", result.outcome.message
    assert result.report.rows
    assert failing(result) == {}
    assert INHERITED not in result.report.counts()


@pytest.mark.parametrize("check", EX5)
def test_an_untouched_stub_is_not_started(check):
    result = grade(in_process_grader(ROOT / "exercises"), check)
    assert result.status == "not_started"
    assert result.outcome.message.startswith("Exercise 5: ")
    assert {row.verdict for row in result.report.rows} == {NOT_STARTED}


def test_layer_checks_cover_the_forward_pass_the_input_and_every_parameter(solution):
    def rows(check: str) -> list[tuple[str, str]]:
        return [(row.label, row.kind) for row in grade(solution, check).report.rows]

    assert rows("linear") == [("out", "value"), ("dx", "gradient"), ("dweight", "gradient"), ("dbias", "gradient")]
    assert rows("linear_without_bias") == [("out", "value"), ("dx", "gradient"), ("dweight", "gradient")]
    assert rows("tanh") == [("out", "value"), ("dx", "gradient")]
    for check in ("batchnorm_training", "batchnorm_eval"):
        assert rows(check) == [
            ("out", "value"),
            ("dx", "gradient"),
            ("dgamma", "gradient"),
            ("dbeta", "gradient"),
            ("running_mean", "buffer"),
            ("running_var", "buffer"),
        ]


def test_the_deep_mlp_lists_every_layer_gradient_by_name_in_backward_order(solution):
    rows = grade(solution, "deep_mlp").report.rows
    assert (rows[0].name, rows[0].kind) == ("logits", "value")
    assert (rows[-1].name, rows[-1].kind) == ("logits(eval)", "value")
    params = {0: ("weight",), 3: ("weight",), 6: ("weight",), 9: ("weight",), 12: ("weight",), 15: ("weight",)}
    params |= {i: ("gamma", "beta") for i in BATCHNORMS}
    # Each layer's input gradient (what its backward returns), then its parameters' gradients.
    backward = []
    for i in reversed(range(17)):
        backward.append(f"layers[{i - 1}].out" if i else "embcat")
        backward += [f"layers[{i}].{attr}" for attr in params.get(i, ())]
    assert [row.name for row in rows if row.kind == "gradient"] == backward
    assert [row.label for row in rows[1:4]] == ["dlayers[15].out", "dlayers[16].gamma", "dlayers[16].beta"]
    assert [row.name for row in rows if row.kind == "buffer"] == [
        f"layers[{i}].{b}" for i in BATCHNORMS for b in ("running_mean", "running_var")
    ]


# ----------------------------------------------------------------------------
# Single layers: each mistake shows where it is.


def test_batchnorm_backward_with_the_biased_variance_is_caught_in_dx_only(changed):
    grader = changed("ex5_layers.py", BIASED_VARIANCE)
    assert failing(grade(grader, "batchnorm_training")) == {"dx": "mismatch"}
    # In eval mode the statistics are constants: the formula with the variance is not used.
    assert failing(grade(grader, "batchnorm_eval")) == {}


def test_linear_backward_missing_the_bias_sum_is_a_shape_mismatch(changed):
    grader = changed("ex5_layers.py", NO_BIAS_SUM)
    result = grade(grader, "linear")
    assert failing(result) == {"dbias": "shape"}
    assert "got (32, 64) where (64,) is expected" in result.report["bias"].note
    assert failing(grade(grader, "linear_without_bias")) == {}


def test_batchnorm_backward_that_forgets_gamma_is_caught_because_gamma_starts_off_one(changed):
    grader = changed("ex5_layers.py", FORGETS_GAMMA)
    assert failing(grade(grader, "batchnorm_training")) == {"dx": "mismatch"}
    assert failing(grade(grader, "batchnorm_eval")) == {"dx": "mismatch"}


def test_eval_mode_backward_through_batch_statistics_is_caught_in_eval_only(changed):
    grader = changed("ex5_layers.py", BATCH_FORMULA_IN_EVAL)
    assert failing(grade(grader, "batchnorm_training")) == {}
    assert failing(grade(grader, "batchnorm_eval")) == {"dx": "mismatch"}


def test_running_buffers_are_checked_on_their_own(changed):
    grader = changed("ex5_layers.py", BIASED_RUNNING_VAR)
    assert failing(grade(grader, "batchnorm_training")) == {"running_var": "mismatch"}
    # In the deep MLP the gradients are right; the eval-mode forward pass normalises with the wrong variance.
    wrong = failing(grade(grader, "deep_mlp"))
    assert wrong == {f"layers[{i}].running_var": "mismatch" for i in BATCHNORMS} | {"logits(eval)": "mismatch"}


def test_tanh_backward_from_the_input_instead_of_the_output_is_caught(changed):
    grader = changed("ex5_layers.py", *TANH_FROM_INPUT)
    assert failing(grade(grader, "tanh")) == {"dx": "mismatch"}


def test_a_layer_class_that_is_missing_is_named(tmp_path):
    (tmp_path / "ex5_layers.py").write_text(
        (SOLUTIONS / "ex5_layers.py").read_text(encoding="utf-8").replace("class Tanh:", "class TanH:"),
        encoding="utf-8",
    )
    grader = in_process_grader(tmp_path)
    assert failing(grade(grader, "linear")) == {}
    result = grade(grader, "tanh")
    assert result.status == "missing_function"
    assert "class 'Tanh' is missing; exercise 5 asks for Tanh" in result.outcome.message


# ----------------------------------------------------------------------------
# The deep MLP: one wrong layer costs points where it is.


def test_in_the_deep_mlp_a_wrong_layer_is_the_first_wrong_step_and_the_right_layers_below_it_are_inherited(changed):
    result = grade(changed("ex5_layers.py", *TANH_FROM_INPUT), "deep_mlp")
    rows = result.report.rows
    gradients = [row for row in rows if row.kind == "gradient"]
    names = [row.name for row in gradients]
    # layers[14] is the last Tanh: its backward returns the gradient of layers[13].out.
    first = names.index("layers[13].out")
    assert all(row.passed and row.verdict != INHERITED for row in gradients[:first])
    assert gradients[first].verdict == WRONG
    assert gradients[first].note.startswith("first wrong step")
    # Below it, every Tanh is wrong on its own; every Linear and BatchNorm1d step is right.
    own = {f"layers[{i - 1}].out" for i in TANHS}
    assert {row.name for row in gradients if row.verdict == WRONG} == own
    below = [row for row in gradients[first + 1 :] if row.name not in own]
    assert below and {row.verdict for row in below} == {INHERITED}
    assert below[0].note == "your step is right; the error is upstream (dlayers[13].out)"
    assert all(row.passed for row in rows if row.kind != "gradient")
    assert not result.report.passed


def test_in_the_deep_mlp_a_wrong_output_batchnorm_is_the_first_wrong_step(changed):
    rows = grade(changed("ex5_layers.py", BIASED_VARIANCE), "deep_mlp").report.rows
    first = next(row for row in rows if not row.passed)
    assert (first.name, first.verdict) == ("layers[15].out", WRONG)
    assert {row.name for row in rows if row.verdict == WRONG} == {f"layers[{i - 1}].out" for i in BATCHNORMS}
    assert {row.verdict for row in rows if row.name in ("layers[14].out", "layers[15].weight", "embcat")} == {INHERITED}


# ----------------------------------------------------------------------------
# Integrity.


def test_a_backward_pass_that_calls_autograd_is_refused(changed):
    grader = changed(
        "ex5_layers.py",
        (
            "return (1 - self.out**2) * dout",
            "x = self.out.detach().requires_grad_()\n        (dx,) = torch.autograd.grad(torch.tanh(x), x, dout)\n"
            "        return dx",
        ),
    )
    for check in ("tanh", "deep_mlp"):
        result = grade(grader, check)
        assert result.status == "forbidden"
        assert "manual backward must not use autograd: torch.autograd.grad()" in result.outcome.message
        assert "at ex5_layers.py:" in result.outcome.message
        assert {row.verdict for row in result.report.rows} == {ERROR}
    assert failing(grade(grader, "linear")) == {}


def test_grading_leaves_the_global_random_state_alone():
    grader = in_process_grader(SOLUTIONS)
    state = torch.random.get_rng_state()
    for check in ("linear", "deep_mlp", "training_steps"):
        assert grade(grader, check).report.passed
    assert torch.equal(torch.random.get_rng_state(), state)


def test_layers_that_keep_their_parameters_in_a_list_get_the_graders_parameters(tmp_path):
    # parameters() returns the list built in __init__: the grader's values must be copied into those tensors.
    shutil.copy(CATALOGUE / "ex5_params_in_a_list" / "ex5_layers.py", tmp_path)
    grader = in_process_grader(tmp_path)
    for check in EX5:
        assert failing(grade(grader, check)) == {}, check


def test_the_graders_reference_layers_are_the_solutions_layers():
    from gradcheck_kit.makemore import manual_layers
    from gradcheck_kit.sandbox.loading import load_module

    solution = load_module(Path(__file__).resolve().parents[1] / "solutions" / "ex5_layers.py")
    g = torch.Generator().manual_seed(0)
    x, dout = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    for name, args in (("Linear", (6, 6)), ("BatchNorm1d", (6,)), ("Tanh", ())):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            ours = getattr(manual_layers, name)(*args)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            theirs = getattr(solution, name)(*args)
        assert torch.equal(ours(x), theirs(x)), name
        assert torch.equal(ours.backward(dout), theirs.backward(dout)), name
        for a, b in zip(ours.grads(), theirs.grads(), strict=True):
            assert torch.equal(a, b), name


# ----------------------------------------------------------------------------
# Detectors, fed with hand-made values: each names its mistake and the evidence, and none fires on a right value.

G = torch.Generator().manual_seed(5)
X = 0.5 + 2.0 * torch.randn(32, 8, generator=G)
GAMMA = 1.0 + 0.3 * torch.randn(8, generator=G)
DOUT = torch.randn(32, 8, generator=G)
RUNNING = {"running_mean": 0.5 + torch.randn(8, generator=G), "running_var": 0.5 + 3 * torch.rand(8, generator=G)}


def batchnorm_dx_of(x: torch.Tensor, training: bool, *, biased_backward: bool = False) -> torch.Tensor:
    """dx through autograd, or the solution's formula without n/(n-1) for the biased backward."""
    x = x.clone().requires_grad_()
    if training:
        mean, var = x.mean(0), x.var(0, unbiased=True)
    else:
        mean, var = RUNNING["running_mean"], RUNNING["running_var"]
    xhat = (x - mean) / torch.sqrt(var + 1e-5)
    if biased_backward:
        n, dxhat, var_inv = x.shape[0], GAMMA * DOUT, (var.detach() + 1e-5) ** -0.5
        xhat = xhat.detach()
        return var_inv / n * (n * dxhat - dxhat.sum(0) - xhat * (dxhat * xhat).sum(0))
    (GAMMA * xhat * DOUT).sum().backward()
    return x.grad


def detect_dx(actual: torch.Tensor, right: torch.Tensor, training: bool):
    return found.batchnorm_dx(actual, right, x=X, gamma=GAMMA, dout=DOUT, training=training, eps=1e-5, **RUNNING)


def test_a_batchnorm_backward_without_n_over_n_minus_1_is_named_with_its_evidence():
    right = batchnorm_dx_of(X, training=True)
    diagnosis = detect_dx(batchnorm_dx_of(X, training=True, biased_backward=True), right, True)
    assert diagnosis.detected == "the backward pass used the biased variance, divided by n instead of n-1"
    assert "lacks the factor n/(n-1) = 32/31" in diagnosis.evidence
    assert detect_dx(right, right, True) is None


def test_an_eval_mode_backward_through_the_batch_formula_is_named():
    right = batchnorm_dx_of(X, training=False)
    n, dxhat = 32, GAMMA * DOUT
    var_inv = (RUNNING["running_var"] + 1e-5) ** -0.5
    xhat = (X - RUNNING["running_mean"]) * var_inv
    batch_formula = var_inv / n * (n * dxhat - dxhat.sum(0) - n / (n - 1) * xhat * (dxhat * xhat).sum(0))
    diagnosis = detect_dx(batch_formula, right, False)
    assert diagnosis.detected.startswith("the eval-mode backward used the training-mode formula")
    assert "dx = gamma * dout / sqrt(running_var + eps)" in diagnosis.evidence
    assert detect_dx(right, right, False) is None


def running(name: str, actual: torch.Tensor, right: torch.Tensor, before: torch.Tensor, training: bool = True):
    return found.running_statistic(name, actual, right, before=before, x=X, momentum=0.1, training=training)


def test_swapped_momentum_is_told_by_how_far_the_running_mean_moved():
    before = torch.zeros(8)
    right = 0.9 * before + 0.1 * X.mean(0)
    diagnosis = running("running_mean", 0.1 * before + 0.9 * X.mean(0), right, before)
    assert str(diagnosis) == (
        "momentum swapped (running_mean moved 90% of the way to the batch mean instead of 10%: "
        "the update is (1 - momentum) * running + momentum * batch)"
    )
    assert running("running_mean", right, right, before) is None


def test_a_running_variance_updated_with_the_biased_variance_is_named():
    before = torch.ones(8)
    right = 0.9 * before + 0.1 * X.var(0, unbiased=True)
    diagnosis = running("running_var", 0.9 * before + 0.1 * X.var(0, unbiased=False), right, before)
    assert diagnosis.detected == "running_var is updated with the biased batch variance, divided by n instead of n-1"
    assert diagnosis.evidence == "it equals (1 - momentum) * running_var + momentum * x.var(0, unbiased=False)"
    assert running("running_var", right, right, before) is None


def test_running_statistics_updated_in_eval_mode_are_told_so():
    before = RUNNING["running_mean"]
    diagnosis = running("running_mean", 0.9 * before + 0.1 * X.mean(0), before, before, training=False)
    assert str(diagnosis) == (
        "the running statistics changed in eval mode (running_mean moved 10% of the way to the batch mean; "
        "in eval mode they stay as they are)"
    )


def test_a_tanh_derivative_from_the_input_is_named_and_the_right_one_is_not():
    x = 2.0 * torch.randn(32, 8, generator=G)
    right = DOUT * (1 - torch.tanh(x) ** 2)
    diagnosis = found.tanh_dx(DOUT * (1 - x**2), right, x=x, dout=DOUT)
    assert diagnosis.detected == "Tanh.backward used the input"
    assert diagnosis.evidence.startswith("dx equals dout * (1 - x**2)")
    assert found.tanh_dx(right, right, x=x, dout=DOUT) is None


def test_a_gradient_that_doubles_on_the_second_call_is_accumulated():
    first = torch.randn(4, 3, generator=G)
    diagnosis = found.accumulated("dweight", first, 2 * first, first)
    assert str(diagnosis) == (
        "dweight is accumulated (+=) and never reset (it doubled on a second backward call with the same input; "
        "each call must set it afresh)"
    )
    assert found.accumulated("dweight", first, first.clone(), first) is None
    assert found.accumulated("dweight", first, first + 1, first).detected.startswith("the gradient dweight changed")


def test_a_parameter_left_as_it_was_given_is_unchanged_and_one_that_moved_is_not():
    before = torch.randn(5, generator=G)
    after = before - 0.1
    diagnosis = found.unchanged("C", before.clone(), before, after, 5)
    assert diagnosis.detected == "C did not change in 5 steps"
    assert "C = C - lr * dC makes a new one and rebinds only the name C" in diagnosis.evidence
    assert found.unchanged("layers[0].weight", before.clone(), before, after, 5).evidence.startswith(
        "after them it is the same tensor"
    )
    assert found.unchanged("C", after.clone(), before, after, 5) is None


def test_a_calibrated_biased_variance_is_seen_far_below_the_tolerance_and_rounding_is_not_taken_for_it():
    x = torch.randn(20000, 8, generator=G) * 3
    unbiased, biased = x.var(0, unbiased=True), x.var(0, unbiased=False)
    assert torch.allclose(unbiased, biased, rtol=1e-4)  # within the tolerance: only a detector can see it
    diagnosis = found.calibrated_variance("layers[1].running_var", biased.clone(), unbiased, biased, 20000)
    assert str(diagnosis) == (
        "layers[1].running_var is the biased variance, divided by N instead of N-1 "
        "(it equals the expected one times (N-1)/N, N = 20000)"
    )
    # The variance written another way (in float64, or as a sum of squares over N-1) is not the biased one.
    for right in (x.double().var(0).float(), ((x - x.mean(0)) ** 2).sum(0) / 19999):
        assert found.calibrated_variance("layers[1].running_var", right, unbiased, biased, 20000) is None


def test_calibrate_that_leaves_training_on_says_how_many_layers():
    assert str(found.left_in_training([True, False, True])) == (
        "calibrate left the layers in training mode (2 of 3 batchnorm layers do not have training = False after it; "
        "it must leave every batchnorm in eval mode)"
    )
    assert found.left_in_training([False, False]) is None


def test_a_wrong_value_no_detector_explains_says_so_and_labels_the_hint():
    actual, expected = torch.randn(6, 5, generator=G), torch.randn(6, 5, generator=G)
    row = graded("out", actual, expected, "value", hint="look again")
    assert row.diagnosis is None
    assert row.explanation == "no specific mistake recognised — hint: look again"


def test_a_detector_never_changes_a_verdict_only_the_words():
    right = batchnorm_dx_of(X, training=True)
    wrong = batchnorm_dx_of(X, training=True, biased_backward=True)
    for actual in (right, wrong):
        plain = graded("x", actual, right)
        named = graded("x", actual, right, detect=lambda a=actual: detect_dx(a, right, True))
        assert named.verdict == plain.verdict
    assert graded("x", right, right, detect=lambda: pytest.fail("a passing row is not diagnosed")).passed


# ----------------------------------------------------------------------------
# Through the grader: each mistake's row names it; rows that follow from it name it too.

ACCUMULATES = (
    ("self.dweight: torch.Tensor | None = None\n        self.dbias",
     "self.dweight = torch.zeros(fan_in, fan_out)\n        self.dbias"),
    ("self.dweight = self.x.T @ dout", "self.dweight += self.x.T @ dout"),
)  # fmt: skip
SWAPPED_MOMENTUM = (
    ("(1 - self.momentum) * self.running_mean + self.momentum * xmean",
     "self.momentum * self.running_mean + (1 - self.momentum) * xmean"),
)  # fmt: skip


def test_a_weight_gradient_accumulated_across_calls_fails_on_the_second_call_and_says_so(changed):
    result = grade(changed("ex5_layers.py", *ACCUMULATES), "linear")
    assert failing(result) == {"dweight": "mismatch"}
    assert result.report["weight"].explanation == (
        "dweight is accumulated (+=) and never reset (it doubled on a second backward call with the same input; "
        "each call must set it afresh)"
    )


def test_the_single_layer_checks_name_the_mistake_in_the_row_that_shows_it(changed):
    expected = {
        (BIASED_VARIANCE,): ("batchnorm_training", "x", "the backward pass used the biased variance, divided by n"),
        (BIASED_RUNNING_VAR,): ("batchnorm_training", "running_var", "running_var is updated with the biased batch"),
        SWAPPED_MOMENTUM: ("batchnorm_training", "running_mean", "momentum swapped (running_mean moved 90% of the"),
        (BATCH_FORMULA_IN_EVAL,): ("batchnorm_eval", "x", "the eval-mode backward used the training-mode formula"),
        TANH_FROM_INPUT: ("tanh", "x", "Tanh.backward used the input (dx equals dout * (1 - x**2)"),
    }
    for replacements, (check, row, text) in expected.items():
        result = grade(changed("ex5_layers.py", *replacements), check)
        assert result.report[row].explanation.startswith(text), (check, result.report[row].explanation)


def test_in_the_deep_mlp_the_first_wrong_layer_names_its_mistake_and_eval_logits_blame_the_buffers(changed):
    rows = grade(changed("ex5_layers.py", *TANH_FROM_INPUT), "deep_mlp").report
    assert rows["layers[13].out"].explanation.startswith("first wrong step — Tanh.backward used the input")
    report = grade(changed("ex5_layers.py", BIASED_RUNNING_VAR), "deep_mlp").report
    assert report["logits(eval)"].explanation == (
        "the error is in the running statistics: layers[1].running_var and 5 more (logits(eval) are what the "
        "eval-mode forward pass gives with your running statistics)"
    )


def test_a_train_step_that_rebinds_each_parameter_is_told_the_parameters_never_changed(changed):
    result = grade(changed("ex6_training.py", ("p -= lr * grad", "p = p - lr * grad")), "training_steps")
    report = result.report
    assert report["layers[0].weight"].explanation.startswith(
        "layers[0].weight did not change in 5 steps (after them it is the same tensor, with the values it was given"
    )
    # C is updated, but from the gradients of layers that do not learn: that is named as the cause.
    assert report["C"].explanation == (
        "the error is that layers[0].weight and 17 more did not change (C is what 5 steps give when "
        "layers[0].weight and 17 more stay as given)"
    )


def test_a_calibration_with_the_biased_variance_blames_it_and_not_the_mean_that_follows_from_it(changed):
    result = grade(changed("ex6_training.py", ("x.var(0, unbiased=True)", "x.var(0, unbiased=False)")), "calibration")
    wrong = failing(result)
    assert wrong and all(name.endswith("running_mean") for name in wrong)
    for name in wrong:
        assert result.report[name].explanation.startswith(
            "not this layer's mistake: layers[1].running_var is the biased variance, divided by N instead of N-1"
        )
    assert "allowed" not in " ".join(row.explanation for row in result.report.rows)


def test_a_forward_pass_with_the_wrong_statistics_is_named_and_the_right_one_is_not():
    beta = 0.3 * torch.randn(8, generator=G)

    def out(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        return GAMMA * (X - mean) / torch.sqrt(var + 1e-5) + beta

    def detect(actual: torch.Tensor, right: torch.Tensor, training: bool):
        return found.batchnorm_out(actual, right, x=X, gamma=GAMMA, beta=beta, training=training, eps=1e-5)

    right = out(X.mean(0), X.var(0))
    assert detect(out(X.mean(0), X.var(0, unbiased=False)), right, True).detected == (
        "the forward pass normalised with the biased variance, divided by n instead of n-1"
    )
    assert detect(right, right, True) is None
    right_eval = out(RUNNING["running_mean"], RUNNING["running_var"])
    assert detect(right, right_eval, False).detected == (
        "the eval-mode forward pass normalised with the batch's mean and variance"
    )
    assert detect(right_eval, right_eval, False) is None


def test_eval_values_computed_with_changed_running_statistics_blame_the_change():
    mean, var = RUNNING["running_mean"], RUNNING["running_var"]
    moved = {"running_mean": 0.9 * mean + 0.1 * X.mean(0), "running_var": 0.9 * var + 0.1 * X.var(0)}
    inputs = {"x": X, "gamma": GAMMA, "beta": torch.zeros(8), "dout": DOUT, "eps": 1e-5}
    right = GAMMA * DOUT / torch.sqrt(var + 1e-5)
    yours = GAMMA * DOUT / torch.sqrt(moved["running_var"] + 1e-5)
    diagnosis = found.eval_with_changed_statistics("x", yours, right, **inputs, **moved)
    assert str(diagnosis) == (
        "the running statistics changed in eval mode before the batch was normalised (dx is what your updated "
        "running_mean and running_var give; in eval mode they stay as they are)"
    )
    assert found.eval_with_changed_statistics("x", right, right, **inputs, running_mean=mean, running_var=var) is None
