"""Exercise 5 grading: the solution's layers match autograd; untouched stubs and common mistakes are caught.

Each check runs through :class:`~gradcheck_kit.course.grader.Grader` as in a student's run,
with the sandbox in this process for speed. A wrong implementation is the solution with
one thing changed, written to ``tmp_path``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from gradcheck_kit.course.catalogue import Hints
from gradcheck_kit.course.grader import Grader, Result
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
