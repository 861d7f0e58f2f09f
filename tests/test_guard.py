from __future__ import annotations

import importlib
from collections.abc import Callable

import pytest
import torch
import torch.autograd.forward_ad as forward_ad
import torch.nn.functional as F
from torch.autograd.variable import Variable

from gradcheck_kit.sandbox.guard import AutogradForbidden, forbid_autograd

# Forward-mode AD loads torch's jvp decompositions, which still use torch.jit.script.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def _loss(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x).pow(2).sum()


def _leaf() -> torch.Tensor:
    return torch.randn(3, dtype=torch.float64, requires_grad=True)


def _x() -> torch.Tensor:
    return torch.randn(3, dtype=torch.float64)


def _dual_level() -> None:
    with forward_ad.dual_level():
        pass


# Each entry point, and the name the message must give it.
ENTRY_POINTS: dict[str, tuple[Callable[[], object], str]] = {
    "Tensor.backward": (lambda: _loss(_leaf()).backward(), "torch.Tensor.backward()"),
    "autograd.backward": (lambda: torch.autograd.backward(_loss(_leaf())), "torch.autograd.backward()"),
    "autograd.grad": (lambda: (lambda x: torch.autograd.grad(_loss(x), x))(_leaf()), "torch.autograd.grad()"),
    "functional.jacobian": (
        lambda: torch.autograd.functional.jacobian(torch.tanh, _x()),
        "torch.autograd.functional.jacobian()",
    ),
    "functional.jacobian forward-mode": (
        lambda: torch.autograd.functional.jacobian(torch.tanh, _x(), strategy="forward-mode", vectorize=True),
        "torch.autograd.functional.jacobian()",
    ),
    "functional.hessian": (
        lambda: torch.autograd.functional.hessian(_loss, _x()),
        "torch.autograd.functional.hessian()",
    ),
    "functional.vjp": (
        lambda: torch.autograd.functional.vjp(torch.tanh, _x(), torch.ones(3, dtype=torch.float64)),
        "torch.autograd.functional.vjp()",
    ),
    "func.grad": (lambda: torch.func.grad(_loss)(_x()), "torch.func.grad()"),
    "func.grad_and_value": (lambda: torch.func.grad_and_value(_loss)(_x()), "torch.func.grad_and_value()"),
    "func.vjp": (
        lambda: torch.func.vjp(torch.tanh, _x())[1](torch.ones(3, dtype=torch.float64)),
        "the vjp_fn returned by torch.func.vjp()",
    ),
    "func.jacrev": (lambda: torch.func.jacrev(torch.tanh)(_x()), "torch.func.jacrev()"),
    "func.jacfwd": (lambda: torch.func.jacfwd(torch.tanh)(_x()), "torch.func.jacfwd()"),
    "func.jvp": (
        lambda: torch.func.jvp(torch.tanh, (_x(),), (torch.ones(3, dtype=torch.float64),)),
        "torch.func.jvp()",
    ),
    "func.hessian": (lambda: torch.func.hessian(_loss)(_x()), "torch.func."),
    "forward_ad.dual_level": (_dual_level, "torch.autograd.forward_ad.dual_level.__enter__()"),
}

_g, _y = torch.randn(4, 5), torch.randn(4, 5)
_labels = torch.tensor([0, 2, 1, 0])

BACKWARD_KERNELS: dict[str, Callable[[], object]] = {
    "aten::tanh_backward": lambda: torch.ops.aten.tanh_backward(_g, _y),
    "aten::_softmax_backward_data": lambda: torch.ops.aten._softmax_backward_data(_g, _y, 1, _y.dtype),
    "aten::_log_softmax_backward_data": lambda: torch.ops.aten._log_softmax_backward_data(_g, _y, 1, _y.dtype),
    "aten::native_batch_norm_backward": lambda: torch.ops.aten.native_batch_norm_backward(
        _g, _y, torch.ones(5), None, None, _y.mean(0), _y.var(0), True, 1e-5, [True, True, True]
    ),
    "aten::embedding_dense_backward": lambda: torch.ops.aten.embedding_dense_backward(
        torch.randn(4, 3), _labels, 5, -1, False
    ),
    "aten::nll_loss_backward": lambda: torch.ops.aten.nll_loss_backward(
        torch.tensor(1.0), F.log_softmax(_y, 1), _labels, None, 1, -100, torch.tensor(4.0)
    ),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS.values(), ids=ENTRY_POINTS.keys())
def test_every_autograd_entry_point_is_refused_by_name(entry: tuple[Callable[[], object], str]) -> None:
    run, name = entry
    with pytest.raises(AutogradForbidden) as info, forbid_autograd():
        run()
    assert str(info.value).startswith(f"manual backward must not use autograd: {name}")


@pytest.mark.parametrize("kernel", BACKWARD_KERNELS.values(), ids=BACKWARD_KERNELS.keys())
def test_aten_backward_kernels_are_refused_by_name(
    kernel: Callable[[], object], request: pytest.FixtureRequest
) -> None:
    op = request.node.callspec.id
    kernel()  # a valid call: only the guard can make it fail
    with pytest.raises(AutogradForbidden, match=f"^manual backward must not use autograd: {op} was called"):
        with forbid_autograd():
            kernel()


def test_the_refusal_is_a_runtime_error() -> None:
    assert issubclass(AutogradForbidden, RuntimeError)


def _forward_ops() -> dict[str, Callable[[], torch.Tensor]]:
    torch.manual_seed(0)
    logits = torch.randn(8, 27, dtype=torch.float64)
    labels = torch.randint(0, 27, (8,))
    emb = torch.randn(27, 4, dtype=torch.float64)
    h = torch.randn(8, 6, dtype=torch.float64)
    return {
        "softmax": lambda: F.softmax(logits, dim=1),
        "log_softmax": lambda: F.log_softmax(logits, dim=1),
        "cross_entropy": lambda: F.cross_entropy(logits, labels),
        "one_hot": lambda: F.one_hot(labels, num_classes=27),
        "embedding": lambda: F.embedding(labels, emb),
        "batch_norm": lambda: F.batch_norm(h, None, None, training=True),
        "index_add_": lambda: torch.zeros(27, 4, dtype=torch.float64).index_add_(0, labels, emb[:8]),
        "scatter_add_": lambda: torch.zeros(27, dtype=torch.float64).scatter_add_(0, labels, logits[:, 0]),
        "index_put_": lambda: torch.zeros_like(logits).index_put_(
            (torch.arange(8), labels), torch.tensor(-1.0, dtype=torch.float64), accumulate=True
        ),
        "setitem": lambda: _setitem(logits, labels),
        "matmul": lambda: h.T @ h,
        "tanh": lambda: 1 - torch.tanh(h) ** 2,
        "exp and log": lambda: logits.exp().log(),
        "var": lambda: h.var(0, keepdim=True, unbiased=True),
        "max": lambda: logits.max(1, keepdim=True).values,
        "sum and broadcast": lambda: logits - logits.sum(1, keepdim=True) / 27,
    }


def _setitem(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    d = logits.clone()
    d[range(len(labels)), labels] -= 1
    return d


FORWARD_OPS = _forward_ops()


@pytest.mark.parametrize("op", FORWARD_OPS.values(), ids=FORWARD_OPS.keys())
def test_forward_ops_give_the_same_result_under_the_guard(op: Callable[[], torch.Tensor]) -> None:
    expected = op()
    with forbid_autograd():
        actual = op()
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_a_manual_cross_entropy_backward_matches_autograd_under_the_guard() -> None:
    logits = torch.randn(32, 27, dtype=torch.float64)
    labels = torch.randint(0, 27, (32,))
    leaf = logits.clone().requires_grad_()
    F.cross_entropy(leaf, labels).backward()
    with forbid_autograd():
        dlogits = F.softmax(logits, 1)
        dlogits[range(32), labels] -= 1
        dlogits /= 32
    torch.testing.assert_close(dlogits, leaf.grad)


def test_grad_mode_is_left_as_it_is() -> None:
    with forbid_autograd():
        assert torch.is_grad_enabled()
    with torch.no_grad(), forbid_autograd():
        assert not torch.is_grad_enabled()


def _autograd_works() -> None:
    x = _leaf()
    _loss(x).backward()
    t = torch.tanh(x.detach())
    torch.testing.assert_close(x.grad, 2 * t * (1 - t**2))
    torch.testing.assert_close(torch.func.grad(_loss)(x.detach()), x.grad)
    torch.testing.assert_close(torch.func.jacfwd(torch.tanh)(x.detach()).diagonal(), 1 - t**2)
    torch.testing.assert_close(torch.ops.aten.tanh_backward(_g, _y), _g * (1 - _y**2))


def test_autograd_works_again_after_the_block() -> None:
    engine, enter = Variable._execution_engine, forward_ad.enter_dual_level
    with forbid_autograd():
        assert Variable._execution_engine is not engine
    assert Variable._execution_engine is engine
    assert forward_ad.enter_dual_level is enter
    _autograd_works()


def test_autograd_works_again_after_a_refusal_inside_the_block() -> None:
    engine = Variable._execution_engine
    with pytest.raises(AutogradForbidden), forbid_autograd():
        torch.func.grad(_loss)(_x())
    assert Variable._execution_engine is engine
    _autograd_works()


def test_autograd_works_again_after_another_exception_inside_the_block() -> None:
    with pytest.raises(ValueError, match="inside"), forbid_autograd():
        torch.tanh(torch.ones(1))
        raise ValueError("inside")
    _autograd_works()


def test_a_nested_block_leaves_the_outer_one_in_force() -> None:
    with forbid_autograd():
        with forbid_autograd():
            pass
        with pytest.raises(AutogradForbidden):
            _loss(_leaf()).backward()
        with pytest.raises(AutogradForbidden):
            torch.ops.aten.tanh_backward(_g, _y)
    _autograd_works()


def test_no_engine_of_ones_own_can_be_made_and_the_real_one_is_out_of_reach():
    from torch.autograd.variable import Variable

    with forbid_autograd():
        for make in (torch._C._ImperativeEngine, importlib.import_module("torch.autograd.variable").ImperativeEngine):
            with pytest.raises(AutogradForbidden, match="a new autograd engine"):
                make()
        assert vars(Variable._execution_engine) == {}
    assert isinstance(torch._C._ImperativeEngine(), type(Variable._execution_engine))  # restored
