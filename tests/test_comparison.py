from __future__ import annotations

import dataclasses
import json
import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gradcheck_kit
from gradcheck_kit.comparison import (
    PROBLEMS,
    Comparison,
    MissingReferenceError,
    assert_grad_close,
    cmp,
    compare,
    default_tolerances,
)


def notebook_cmp(s, dt, t):
    """The backprop-ninja notebook's helper, verbatim, as the format to match."""
    ex = torch.all(dt == t.grad).item()
    app = torch.allclose(dt, t.grad)
    maxdiff = (dt - t.grad).abs().max().item()
    print(f"{s:15s} | exact: {str(ex):5s} | approximate: {str(app):5s} | maxdiff: {maxdiff}")


@pytest.fixture
def grad() -> torch.Tensor:
    return torch.randn(32, 27, generator=torch.Generator().manual_seed(0))


def test_identical_gradient_is_exact_and_approximate(grad):
    c = compare("logits", grad.clone(), grad)

    assert (c.exact, c.approximate, c.ok, c.problem) == (True, True, True, None)
    assert c.maxdiff == 0.0 and c.mismatched == 0 and c.numel == 32 * 27
    assert c.message == "Exact match: all 864 elements are equal."


def test_difference_within_tolerance_is_approximate_but_not_exact(grad):
    actual = grad.clone()
    actual[3, 4] += 1e-6

    c = compare("logits", actual, grad)

    assert (c.exact, c.approximate, c.problem) == (False, True, None)
    assert c.worst_index == (3, 4)
    assert 0 < c.maxdiff < 1e-5


def test_flat_gradient_for_a_row_vector_is_never_approximate():
    expected = torch.randn(1, 64)
    actual = expected.reshape(64)
    assert torch.allclose(actual, expected)  # what the notebook's cmp would have accepted

    c = compare("bnbias", actual, expected)

    assert (c.problem, c.approximate, c.exact) == ("shape", False, False)
    assert (c.actual_shape, c.expected_shape) == ((64,), (1, 64))
    assert math.isnan(c.maxdiff)
    assert "got (64,) where (1, 64) is expected" in c.message
    assert "keepdim=True" in c.message


def test_row_gradient_for_a_full_matrix_is_never_approximate():
    expected = torch.ones(32, 64)
    actual = torch.ones(1, 64)
    assert torch.allclose(actual, expected)  # broadcasting hides the mistake there

    c = compare("hprebn", actual, expected)

    assert (c.problem, c.approximate) == ("shape", False)
    assert "would broadcast to the expected shape" in c.message


def test_transposed_gradient_is_a_shape_problem_that_suggests_a_transpose():
    c = compare("W2", torch.ones(27, 64), torch.ones(64, 27))

    assert c.problem == "shape"
    assert "transpose" in c.message


def test_unsummed_gradient_names_the_broadcast_dimension():
    c = compare("counts_sum", torch.ones(32, 27), torch.ones(32, 1))

    assert c.problem == "shape"
    assert "summed over dimension(s) (1,) with keepdim=True" in c.message


def test_none_is_reported_as_missing(grad):
    c = compare("probs", None, grad)

    assert (c.problem, c.approximate, c.actual_type) == ("missing", False, "NoneType")
    assert "not started" in c.message


@pytest.mark.parametrize(
    ("make", "type_name"),
    [
        (lambda g: g.tolist(), "list"),
        (lambda g: 0.5, "float"),
        (lambda g: pytest.importorskip("numpy").zeros(tuple(g.shape)), "numpy.ndarray"),
        (lambda g: g.to_sparse(), "a sparse_coo torch.Tensor"),
    ],
)
def test_something_other_than_a_dense_tensor_is_a_type_problem(grad, make, type_name):
    c = compare("probs", make(grad), grad)

    assert (c.problem, c.approximate) == ("type", False)
    assert c.message == f"Expected a float32 tensor of shape (32, 27), got {type_name}."


def test_dtype_mismatch_is_reported_but_values_are_still_compared(grad):
    c = compare("W2", grad.double(), grad)

    assert (c.problem, c.approximate, c.exact) == ("dtype", False, False)
    assert (c.actual_dtype, c.expected_dtype) == ("float64", "float32")
    assert c.maxdiff == 0.0
    assert "Values agree, but dtype is float64 where float32 is expected." in c.message


def test_dtype_mismatch_with_wrong_values_also_shows_the_values(grad):
    actual = grad.double()
    actual[0, 0] += 1

    c = compare("W2", actual, grad)

    assert c.problem == "dtype"
    assert "Mismatched elements: 1 / 864" in c.message
    assert "Values agree" not in c.message


def test_integer_gradient_for_a_float_reference_is_a_dtype_problem():
    c = compare("b2", torch.zeros(3, dtype=torch.int64), torch.zeros(3))

    assert (c.problem, c.actual_dtype, c.maxdiff) == ("dtype", "int64", 0.0)


def test_dtype_mismatch_with_non_finite_values_says_where_they_are(grad):
    actual = grad.double()
    actual[1, 2] = math.nan

    c = compare("W2", actual, grad)

    assert c.problem == "dtype"
    assert "1 / 864 elements of the gradient are NaN or Inf; the first is at index (1, 2)" in c.message


def test_device_mismatch_is_reported(grad):
    c = compare("W1", torch.empty(32, 27, device="meta"), grad)

    assert (c.problem, c.approximate) == ("device", False)
    assert (c.actual_device, c.expected_device) == ("meta", "cpu")
    assert c.message.startswith("device mismatch: got meta where cpu is expected.")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_never_pass(grad, bad):
    actual = grad.clone()
    actual[5, 7] = bad
    actual[9, 1] = bad

    c = compare("dlogits", actual, grad)

    assert (c.problem, c.approximate, c.exact) == ("nonfinite", False, False)
    assert c.nonfinite == 2
    assert c.worst_index == (5, 7)
    assert "2 / 864 elements" in c.message and "first is at index (5, 7)" in c.message


def test_non_finite_values_fail_even_where_the_reference_has_the_same_value():
    expected = torch.tensor([1.0, math.inf])

    c = compare("x", expected.clone(), expected)

    assert (c.problem, c.exact, c.approximate) == ("nonfinite", False, False)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_default_tolerances_are_torch_testings_per_dtype(dtype):
    from torch.testing._comparison import default_tolerances as torch_defaults

    c = compare("x", torch.zeros(2, dtype=dtype), torch.zeros(2, dtype=dtype))

    assert (c.rtol, c.atol) == default_tolerances(dtype) == torch_defaults(dtype)


def test_default_tolerances_differ_between_float_dtypes():
    dtypes = [torch.float16, torch.bfloat16, torch.float32, torch.float64]

    assert len({default_tolerances(d) for d in dtypes}) == 4
    assert default_tolerances(torch.int64) == (0.0, 0.0)


def test_a_relative_error_that_float16_allows_fails_in_float32():
    expected = torch.full((4,), 10.0)
    actual = expected * (1 + 5e-4)

    assert compare("x", actual.half(), expected.half()).approximate
    assert not compare("x", actual, expected).approximate


def test_closeness_is_absolute_plus_relative_tolerance_per_element():
    expected = torch.tensor([10.0, 0.0], dtype=torch.float64)

    on_the_boundary = compare("x", torch.tensor([11.0, 0.5], dtype=torch.float64), expected, rtol=0.05, atol=0.5)
    past_it = compare("x", torch.tensor([11.0, 0.51], dtype=torch.float64), expected, rtol=0.05, atol=0.5)

    assert on_the_boundary.approximate
    assert (past_it.approximate, past_it.mismatched, past_it.worst_rel_index) == (False, 1, (0,))


def test_tolerance_overrides_are_used_and_recorded(grad):
    actual = grad + 0.01

    assert not compare("x", actual, grad).approximate
    loose = compare("x", actual, grad, rtol=0.0, atol=0.1)
    assert loose.approximate and (loose.rtol, loose.atol) == (0.0, 0.1)
    assert not compare("x", grad + 1e-7, grad, rtol=0.0, atol=0.0).approximate


@pytest.mark.parametrize("given", [{"rtol": 1e-3}, {"atol": 1e-3}])
def test_giving_only_one_tolerance_raises(grad, given):
    with pytest.raises(ValueError, match="rtol and atol must be given together"):
        compare("x", grad, grad, **given)


def test_negative_tolerance_raises(grad):
    with pytest.raises(ValueError, match="non-negative"):
        compare("x", grad, grad, rtol=-1.0, atol=0.0)


def test_a_reference_that_is_not_a_tensor_raises():
    with pytest.raises(TypeError, match="dense torch.Tensor"):
        compare("x", torch.zeros(2), [0.0, 0.0])  # type: ignore[arg-type]


def test_mismatch_message_says_what_where_how_much_and_what_was_allowed():
    expected = torch.ones(32, 27)
    actual = expected.clone()
    actual[2, 5] = 1.1
    actual[0, 0] = 1.01
    actual[7, 3] = 0.98

    c = compare("dlogits", actual, expected)

    assert c.problem == "mismatch"
    assert (c.mismatched, c.worst_index, c.worst_rel_index) == (3, (2, 5), (2, 5))
    assert c.actual_at_worst == pytest.approx(1.1) and c.expected_at_worst == 1.0
    assert c.message.splitlines() == [
        "Mismatched elements: 3 / 864 (0.3%)",
        "Greatest absolute difference: 0.1 at index (2, 5) (up to 1e-05 allowed)",
        "Greatest relative difference: 0.1 at index (2, 5) (up to 1.3e-06 allowed)",
        "At index (2, 5): actual 1.1, expected 1",
    ]


def test_relative_difference_ignores_elements_where_the_reference_is_zero():
    expected = torch.tensor([0.0, 2.0], dtype=torch.float64)

    c = compare("x", torch.tensor([5.0, 3.0], dtype=torch.float64), expected)

    assert (c.maxdiff, c.max_rel_diff, c.worst_index, c.worst_rel_index) == (5.0, 0.5, (0,), (1,))


def test_empty_gradients_of_the_same_shape_are_exact():
    c = compare("x", torch.empty(0, 3), torch.empty(0, 3))

    assert (c.exact, c.approximate, c.maxdiff, c.worst_index) == (True, True, 0.0, None)


def test_comparison_is_frozen(grad):
    c = compare("x", grad, grad)

    with pytest.raises(dataclasses.FrozenInstanceError):
        c.approximate = False  # type: ignore[misc]


@pytest.mark.parametrize(
    "actual",
    [None, [1.0], torch.zeros(3), torch.zeros(2, 2), torch.tensor([1.0, math.nan]), torch.ones(2, dtype=torch.float64)],
)
def test_as_dict_is_strict_json_and_rebuilds_the_comparison(actual):
    c = compare("x", actual, torch.ones(2))

    data = json.loads(json.dumps(c.as_dict(), allow_nan=False))

    assert data["ok"] is c.ok and data["message"] == c.message
    rebuilt = Comparison.from_dict(data)
    assert rebuilt.as_dict() == c.as_dict()
    assert rebuilt.line() == c.line()


def test_line_is_the_notebooks_format(capsys):
    t = torch.randn(4, 5, requires_grad=True)
    (t * torch.randn(4, 5)).sum().backward()
    dt = t.grad.clone()
    dt[1, 2] += 3e-9

    notebook_cmp("W1", dt, t)
    expected_line = capsys.readouterr().out
    result = cmp("W1", dt, t)

    assert capsys.readouterr().out == expected_line
    assert result.line() + "\n" == expected_line


def test_cmp_returns_the_comparison(capsys):
    t = torch.ones(3, requires_grad=True)
    t.sum().backward()

    result = cmp("b1", torch.zeros(3), t)

    assert isinstance(result, Comparison)
    assert result.approximate is False and result.problem == "mismatch"
    assert capsys.readouterr().out.startswith("b1              | exact: False | approximate: False")


def test_cmp_refuses_a_tensor_without_gradient_and_points_to_compare(capsys):
    reference = torch.arange(6.0).reshape(2, 3)  # a gradient handed over as t: t.grad is None

    with pytest.raises(MissingReferenceError) as info:
        cmp("h", reference.clone(), reference)

    text = str(info.value)
    assert "compares dt with t.grad, and t has no gradient: it does not require grad" in text
    assert "use compare('h', dt, expected)" in text
    assert capsys.readouterr().out == ""  # no line printed for a comparison that was not made


def test_cmp_compares_with_the_grad_even_of_a_tensor_that_no_longer_requires_it(capsys):
    t = torch.ones(3, requires_grad=True)
    (2 * t).sum().backward()
    t.requires_grad_(False)  # .grad stays

    assert cmp("t", torch.full((3,), 2.0), t).exact


def test_cmp_of_something_that_is_not_a_tensor_says_what_t_must_be():
    with pytest.raises(TypeError, match=r"t must be the torch.Tensor whose gradient dt is, got list; .*compare\("):
        cmp("h", torch.ones(2), [1.0, 2.0])


def test_cmp_on_an_intermediate_without_retain_grad_explains_what_to_do():
    w = torch.ones(3, requires_grad=True)
    logits = w * 2
    logits.sum().backward()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reading .grad of such a tensor would only warn
        with pytest.raises(MissingReferenceError) as info:
            cmp("logits", torch.ones(3), logits)

    assert isinstance(info.value, ValueError)
    assert "logits.retain_grad() before loss.backward()" in str(info.value)
    assert "gradcheck_kit.record()" in str(info.value)


def test_cmp_on_a_parameter_before_backward_says_to_call_backward():
    w = torch.ones(3, requires_grad=True)

    with pytest.raises(MissingReferenceError, match=r"t has no gradient yet: call loss\.backward\(\) first"):
        cmp("W", torch.ones(3), w)


def test_cmp_line_on_a_shape_mismatch_names_both_shapes_not_a_nan(capsys):
    t = torch.ones(1, 64, requires_grad=True)
    t.sum().backward()

    result = cmp("bnbias", torch.ones(64), t)

    out = capsys.readouterr().out
    assert out == "bnbias          | exact: False | approximate: False | shape (64,) vs (1, 64)\n"
    assert "nan" not in out and result.problem == "shape"


@pytest.mark.parametrize(
    ("actual", "last_column"),
    [
        (None, "no gradient (None)"),
        ([1.0, 1.0], "got list, not a tensor"),
        (torch.ones(2, dtype=torch.float64), "maxdiff: 0.0 | dtype float64 vs float32"),
        (torch.tensor([1.0, math.nan]), "maxdiff: nan"),  # a NaN gradient still reads as one
    ],
)
def test_the_line_says_why_nothing_or_what_else_was_compared(actual, last_column):
    assert compare("x", actual, torch.ones(2)).line().split(" | ", 3)[3] == last_column


def test_a_comparison_shows_as_its_line_in_a_repl_and_as_html_in_jupyter():
    good = compare("dlogits", torch.ones(2), torch.ones(2))
    bad = compare("dh", torch.ones(64), torch.ones(1, 64))

    assert repr(good) == "<Comparison dlogits | exact: True  | approximate: True  | maxdiff: 0.0>"
    assert repr(bad) == "<Comparison dh | exact: False | approximate: False | shape (64,) vs (1, 64)>"
    assert "\n" not in repr(bad)
    assert "<pre>" not in good._repr_html_() and "green" in good._repr_html_()
    page = bad._repr_html_()
    assert "red" in page and "shape (64,) vs (1, 64)" in page
    assert "Shape mismatch: got (64,) where (1, 64) is expected." in page  # the message, for what is off


def test_assert_grad_close_reports_the_name_problem_and_worst_index(grad):
    actual = grad.clone()
    actual[4, 9] += 1.0

    with pytest.raises(AssertionError) as info:
        assert_grad_close(actual, grad, name="dlogits")

    text = str(info.value)
    assert text.startswith("dlogits: mismatch\n")
    assert "Greatest absolute difference: 1 at index (4, 9)" in text


def test_assert_grad_close_accepts_a_close_gradient_and_hides_its_frame(grad):
    assert assert_grad_close(grad + 1e-9, grad) is None
    assert "__tracebackhide__" in assert_grad_close.__code__.co_varnames


def test_assert_grad_close_fails_on_shape_alone():
    with pytest.raises(AssertionError, match=r"gradient: shape\nShape mismatch: got \(64,\) where \(1, 64\)"):
        assert_grad_close(torch.zeros(64), torch.zeros(1, 64))


def test_package_exports_the_comparison_api():
    assert gradcheck_kit.cmp is cmp
    assert gradcheck_kit.Comparison is Comparison
    assert gradcheck_kit.assert_grad_close is assert_grad_close


def test_package_attribute_compare_is_the_function_after_the_submodule_is_imported():
    import gradcheck_kit.comparison  # noqa: F401

    assert gradcheck_kit.compare is compare


_DTYPES = st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.bool])
_SHAPES = st.lists(st.integers(0, 3), max_size=3).map(tuple)
_VALUES = st.sampled_from([0.0, 1.0, -2.5, 1e-7, math.nan, math.inf])


@settings(max_examples=60, deadline=None)
@given(a_shape=_SHAPES, e_shape=_SHAPES, a_dtype=_DTYPES, fill=_VALUES, noise=st.booleans())
def test_compare_never_raises_and_its_verdicts_are_consistent(a_shape, e_shape, a_dtype, fill, noise):
    expected = torch.linspace(-1, 1, math.prod(e_shape)).reshape(e_shape)
    actual = torch.full(a_shape, fill).to(a_dtype)
    if noise and a_shape == e_shape:
        actual = (expected + fill).to(a_dtype)

    c = compare("x", actual, expected)

    assert c.problem in (None, *PROBLEMS)
    assert c.approximate == (c.problem is None)
    assert not c.exact or c.approximate
    if c.actual_shape != c.expected_shape:
        assert c.problem == "shape"
    json.dumps(c.as_dict(), allow_nan=False)
    assert c.message
