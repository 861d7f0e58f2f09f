"""Exercise 5 grading: the solution's layers match autograd; untouched stubs and common mistakes are caught."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch

from gradcheck_kit.sandbox.guard import AutogradForbidden
from gradcheck_kit.course.layers_grading import (
    Check,
    compare_checks,
    grade_batchnorm,
    grade_linear,
    grade_mlp,
    grade_tanh,
)
from gradcheck_kit.sandbox.loading import load_module

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = load_module(ROOT / "solutions" / "ex5_layers.py")

GRADERS = {
    "Linear": lambda impl: grade_linear(impl),
    "Linear(bias=False)": lambda impl: grade_linear(impl, bias=False),
    "BatchNorm1d": lambda impl: grade_batchnorm(impl),
    "BatchNorm1d(eval)": lambda impl: grade_batchnorm(impl, training=False),
    "Tanh": lambda impl: grade_tanh(impl),
    "deep MLP": lambda impl: grade_mlp(impl, n_hidden=16),
}


def failing(checks: list[Check]) -> dict[str, str]:
    return {c.name: c.problem for c in compare_checks(checks) if not c.ok}


def implementation(**classes: type) -> ModuleType:
    """The solution's layers with some classes replaced."""
    return SimpleNamespace(**{"Linear": SOLUTION.Linear, "BatchNorm1d": SOLUTION.BatchNorm1d,
                              "Tanh": SOLUTION.Tanh, **classes})  # type: ignore[return-value]  # fmt: skip


@pytest.mark.parametrize("what", list(GRADERS))
def test_the_solution_matches_autograd(what):
    checks = GRADERS[what](SOLUTION)
    assert checks
    assert failing(checks) == {}


@pytest.mark.parametrize("what", list(GRADERS))
def test_an_untouched_stub_raises_not_implemented(what):
    stub = load_module(ROOT / "exercises" / "ex5_layers.py")
    with pytest.raises(NotImplementedError, match="^Exercise 5: "):
        GRADERS[what](stub)


def test_layer_checks_cover_the_forward_pass_the_input_and_every_parameter():
    assert [c.name for c in grade_linear(SOLUTION)] == ["Linear.out", "Linear.dx", "Linear.dweight", "Linear.dbias"]
    assert [c.name for c in grade_batchnorm(SOLUTION, training=False)] == [
        "BatchNorm1d(eval).out",
        "BatchNorm1d(eval).dx",
        "BatchNorm1d(eval).dgamma",
        "BatchNorm1d(eval).dbeta",
        "BatchNorm1d(eval).running_mean",
        "BatchNorm1d(eval).running_var",
    ]


def test_the_deep_mlp_lists_every_layer_gradient_by_name_in_backward_order():
    names = [c.name for c in grade_mlp(SOLUTION, n_hidden=16)]
    assert names[0] == "logits"
    assert names[1:4] == ["layers[16].dgamma", "layers[16].dbeta", "layers[15].dout"]
    assert [f"layers[{i}].dout" for i in reversed(range(16))] == [n for n in names if n.endswith(".dout")]
    assert [n for n in names if n.endswith(".dweight")] == [f"layers[{i}].dweight" for i in (15, 12, 9, 6, 3, 0)]
    batchnorms = (1, 4, 7, 10, 13, 16)
    assert [n for n in names if "running" in n] == [
        f"layers[{i}].{b}" for i in batchnorms for b in ("running_mean", "running_var")
    ]
    assert names.index("dembcat") < names.index("layers[1].running_mean")
    assert names[-1] == "logits(eval)"


class BiasedVarianceBatchNorm(SOLUTION.BatchNorm1d):
    """Backward as if the forward pass divided the variance by n, not n - 1."""

    def backward(self, dout):
        super().backward(dout)
        dxhat = self.gamma * dout
        n = dout.shape[0]
        return self.xvar_inv / n * (n * dxhat - dxhat.sum(0) - self.xhat * (dxhat * self.xhat).sum(0))


class NoBiasSumLinear(SOLUTION.Linear):
    def backward(self, dout):
        dx = super().backward(dout)
        if self.bias is not None:
            self.dbias = dout
        return dx


class GammaBlindBatchNorm(SOLUTION.BatchNorm1d):
    """Backward that forgets to scale by gamma: invisible while gamma is all ones."""

    def backward(self, dout):
        gamma = self.gamma
        self.gamma = torch.ones_like(gamma)
        try:
            dx = super().backward(dout)
        finally:
            self.gamma = gamma
        self.dgamma, self.dbeta = (dout * self.xhat).sum(0), dout.sum(0)
        return dx


class BatchFormulaInEvalBatchNorm(SOLUTION.BatchNorm1d):
    """Backward that always uses the batch-statistics formula, also in eval mode."""

    def backward(self, dout):
        training = self.training
        self.training = True
        try:
            return super().backward(dout)
        finally:
            self.training = training


class BiasedRunningVarBatchNorm(SOLUTION.BatchNorm1d):
    """Right gradients, but the running variance averages the biased batch variance."""

    def __call__(self, x):
        out = super().__call__(x)
        if self.training:
            n = x.shape[0]
            self.running_var = self.running_var - self.momentum * x.var(0) / n
        return out


class TanhFromInput(SOLUTION.Tanh):
    def __call__(self, x):
        self.x = x
        return super().__call__(x)

    def backward(self, dout):
        return (1 - self.x**2) * dout


def test_batchnorm_backward_with_the_biased_variance_is_caught_in_dx_only():
    assert failing(grade_batchnorm(implementation(BatchNorm1d=BiasedVarianceBatchNorm))) == {
        "BatchNorm1d.dx": "mismatch"
    }


def test_linear_backward_missing_the_bias_sum_is_a_shape_mismatch():
    assert failing(grade_linear(implementation(Linear=NoBiasSumLinear))) == {"Linear.dbias": "shape"}


def test_batchnorm_backward_that_forgets_gamma_is_caught_because_gamma_starts_off_one():
    assert "BatchNorm1d.dx" in failing(grade_batchnorm(implementation(BatchNorm1d=GammaBlindBatchNorm)))


def test_eval_mode_backward_through_batch_statistics_is_caught_in_eval_only():
    impl = implementation(BatchNorm1d=BatchFormulaInEvalBatchNorm)
    assert failing(grade_batchnorm(impl)) == {}
    assert failing(grade_batchnorm(impl, training=False)) == {"BatchNorm1d(eval).dx": "mismatch"}


def test_running_buffers_are_checked_on_their_own():
    impl = implementation(BatchNorm1d=BiasedRunningVarBatchNorm)
    assert failing(grade_batchnorm(impl)) == {"BatchNorm1d.running_var": "mismatch"}
    wrong = failing(grade_mlp(impl, n_hidden=16))
    # The eval-mode forward pass normalises with the wrong running variance, too.
    assert set(wrong) == {f"layers[{i}].running_var" for i in (1, 4, 7, 10, 13, 16)} | {"logits(eval)"}


def test_tanh_backward_from_the_input_instead_of_the_output_is_caught():
    assert failing(grade_tanh(implementation(Tanh=TanhFromInput))) == {"Tanh.dx": "mismatch"}


def test_in_the_deep_mlp_a_wrong_layer_shows_first_where_it_sits():
    checks = grade_mlp(implementation(BatchNorm1d=BiasedVarianceBatchNorm), n_hidden=16)
    comparisons = compare_checks(checks)
    first_wrong = next(c.name for c in comparisons if not c.ok)
    # layers[16] is the output batchnorm: its dx is what layers[15] receives.
    assert first_wrong == "layers[15].dout"
    assert all(c.ok for c in comparisons if "running" in c.name or c.name.startswith("logits"))


def test_a_backward_pass_that_calls_autograd_is_refused():
    class AutogradTanh(SOLUTION.Tanh):
        def __call__(self, x):
            self.x = x.detach().requires_grad_()
            self.out = torch.tanh(self.x)
            return self.out.detach()

        def backward(self, dout):
            (dx,) = torch.autograd.grad(self.out, self.x, dout)
            return dx

    with pytest.raises(AutogradForbidden):
        grade_tanh(implementation(Tanh=AutogradTanh))


def test_grading_leaves_the_global_random_state_alone():
    state = torch.random.get_rng_state()
    grade_linear(SOLUTION)
    grade_mlp(SOLUTION, n_hidden=16)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_a_check_with_explicit_tolerances_uses_them():
    expected = torch.tensor([1.0, 2.0])
    actual = torch.tensor([1.0, 2.1])
    assert not Check("x", actual, expected).compare().ok
    assert Check("x", actual, expected, rtol=0.1, atol=0.0).compare().ok


def test_an_implementation_can_be_given_by_the_path_of_its_file():
    assert failing(grade_tanh(ROOT / "solutions" / "ex5_layers.py")) == {}
    with pytest.raises(NotImplementedError):
        grade_tanh(str(ROOT / "exercises" / "ex5_layers.py"))
