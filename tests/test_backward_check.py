"""check_backward: right kernels pass, wrong ones fail, and the report says where."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import hypothesis
import pytest

# Imported here so that pytester's in-process runs find them already loaded: the module
# snapshot it restores after each run must not unload torch, a C extension.
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

import gradcheck_kit
import gradcheck_kit.backward_check.fixture  # noqa: F401
import gradcheck_kit.bench.kernel
from gradcheck_kit.backward_check import check_backward, measure_error, shapes
from gradcheck_kit.backward_check.draw import draw_shapes
from gradcheck_kit.backward_check.report import ERROR, FAILED, PASSED, SKIPPED, BackwardReport
from gradcheck_kit.backward_check.runner import device_unavailable

CPU = ("cpu",)
BOTH = (torch.float32, torch.bfloat16)


def cross_entropy_inputs(shape, generator):
    n, vocab = shape
    return torch.randn(n, vocab, generator=generator), torch.randint(0, vocab, (n,), generator=generator)


def softmax_minus_onehot(logits, target):
    """(softmax(logits) - onehot(target)) in float32: the gradient of the summed loss."""
    grad = torch.softmax(logits.float(), dim=1)
    grad[torch.arange(logits.shape[0]), target] -= 1
    return grad


class FusedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target):
        x = logits.float()
        ctx.save_for_backward(logits, target)
        return (torch.logsumexp(x, 1) - x.gather(1, target[:, None])[:, 0]).mean().to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_loss):
        logits, target = ctx.saved_tensors
        grad = softmax_minus_onehot(logits, target) * (grad_loss.float() / logits.shape[0])
        return grad.to(logits.dtype), None


def cross_entropy_backward(grad_loss, logits, target):
    return (softmax_minus_onehot(logits, target) * (grad_loss.float() / logits.shape[0])).to(logits.dtype)


def linear(x, w, b):
    return x @ w + b


def linear_inputs(shape, generator):
    n, d = shape
    # A square weight, so that a transposed dw has the right shape and only its values are off.
    return (
        torch.randn(n, d, generator=generator),
        torch.randn(d, d, generator=generator),
        torch.randn(d, generator=generator),
    )


def linear_backward(grad, x, w, b):
    g = grad.float()
    dx, dw, db = g @ w.float().T, x.float().T @ g, g.sum(0)
    return dx.to(x.dtype), dw.to(w.dtype), db.to(b.dtype)


def bf16_row_sums(grad_loss, logits, target, chunk=16):
    """Sums each row's exp(x - max) 16 at a time and keeps the running total in the logits' dtype."""
    x = logits.float()
    e = torch.exp(x - x.max(1, keepdim=True).values)
    total = torch.zeros(x.shape[0], 1, dtype=logits.dtype)
    for start in range(0, x.shape[1], chunk):
        total = total + e[:, start : start + chunk].sum(1, keepdim=True).to(logits.dtype)
    grad = e / total.float()
    grad[torch.arange(x.shape[0]), target] -= 1
    return (grad * (grad_loss.float() / x.shape[0])).to(logits.dtype)


def check(forward, backward, inputs, shapes, dtypes=BOTH, **options):
    return check_backward(forward, backward, inputs, shapes=shapes, dtypes=dtypes, devices=CPU, **options)


# --- right kernels pass ---------------------------------------------------------------


def test_a_right_autograd_function_passes_at_float32_and_bfloat16_over_drawn_shapes():
    report = check(F.cross_entropy, FusedCrossEntropy, cross_entropy_inputs, shapes((1, 33), (1, 700)), examples=5)

    assert [(c.dtype, c.status, c.shapes) for c in report.checks] == [("float32", PASSED, 5), ("bfloat16", PASSED, 5)]
    assert report.passed


def test_a_right_explicit_backward_passes_for_every_input_it_returns():
    report = check(linear, linear_backward, linear_inputs, [(1, 1), (7, 33), (130, 65)])

    assert [(c.name, c.dtype, c.status) for c in report.checks] == [
        (name, dtype, PASSED) for name in ("x", "w", "b") for dtype in ("float32", "bfloat16")
    ]


def test_an_autograd_function_is_accepted_as_the_class_or_its_apply():
    by_class = check(F.cross_entropy, FusedCrossEntropy, cross_entropy_inputs, [(3, 17)], dtypes=[torch.float32])
    by_apply = check(F.cross_entropy, FusedCrossEntropy.apply, cross_entropy_inputs, [(3, 17)], dtypes=[torch.float32])

    assert by_class.checks == by_apply.checks
    assert by_class.title == by_apply.title == "cross_entropy vs FusedCrossEntropy"


# --- the precision PyTorch keeps and the kernel loses --------------------------------


def test_a_row_sum_kept_in_bfloat16_fails_at_bfloat16_where_the_global_maximum_passes_it():
    report = check(F.cross_entropy, bf16_row_sums, cross_entropy_inputs, [(32, 4096)])

    at_fp32, at_bf16 = report["input", "float32"], report["input", "bfloat16"]
    assert at_fp32.status == PASSED  # in float32 the same code accumulates in float32
    assert at_bf16.status == FAILED
    assert at_bf16.measure.ratio > 2 and at_bf16.measure.gross == 0
    assert at_bf16.measure.global_ratio <= 2  # FlashAttention's criterion passes it


# --- wrong kernels fail, one per mistake ---------------------------------------------


def wrong_sign(grad_loss, logits, target):
    return -cross_entropy_backward(grad_loss, logits, target)


def missing_the_label_term(grad_loss, logits, target):
    grad = torch.softmax(logits.float(), dim=1) * (grad_loss.float() / logits.shape[0])
    return grad.to(logits.dtype)


def mean_over_every_element(grad_loss, logits, target):
    return (softmax_minus_onehot(logits, target) * (grad_loss.float() / logits.numel())).to(logits.dtype)


def tail_block_left_out_of_the_sum(grad_loss, logits, target, block=128):
    """Normalises each row by the sum over its full blocks of 128 only: the masked tail block is dropped."""
    x = logits.float()
    full = x.shape[1] - x.shape[1] % block
    e = torch.exp(x - x.max(1, keepdim=True).values)
    grad = e / e[:, :full].sum(1, keepdim=True)
    grad[torch.arange(x.shape[0]), target] -= 1
    return (grad * (grad_loss.float() / x.shape[0])).to(logits.dtype)


def transposed_weight_gradient(grad, x, w, b):
    dx, dw, db = linear_backward(grad, x, w, b)
    return dx, dw.T, db


@pytest.mark.parametrize(
    "kernel",
    [wrong_sign, missing_the_label_term, mean_over_every_element, tail_block_left_out_of_the_sum],
    ids=lambda kernel: kernel.__name__,
)
def test_a_wrong_cross_entropy_backward_fails_at_every_dtype(kernel):
    report = check(F.cross_entropy, kernel, cross_entropy_inputs, [(8, 300)])

    assert [c.status for c in report.checks] == [FAILED, FAILED]
    assert all(c.measure.gross > 0 or c.measure.ratio > 2 for c in report.checks)
    assert not report.passed


def test_a_transposed_weight_gradient_fails_and_the_other_gradients_pass():
    report = check(linear, transposed_weight_gradient, linear_inputs, [(9, 17)])

    assert {(c.name, c.status) for c in report.checks} == {("x", PASSED), ("w", FAILED), ("b", PASSED)}


def test_a_wrong_tail_block_only_shows_at_a_size_that_is_not_a_multiple_of_the_block():
    whole_blocks = check(F.cross_entropy, tail_block_left_out_of_the_sum, cross_entropy_inputs, [(8, 256)])
    ragged = check(F.cross_entropy, tail_block_left_out_of_the_sum, cross_entropy_inputs, [(8, 256), (8, 300)])

    assert whole_blocks.passed
    assert {c.status for c in ragged.checks} == {FAILED}
    assert {c.shape for c in ragged.checks} == {(8, 300)}  # each row names the shape that failed


# --- kernels that do not return a gradient ---------------------------------------------


def test_a_kernel_that_raises_is_an_error_with_its_message():
    def raises(grad_loss, logits, target):
        raise RuntimeError("BLOCK must be a power of two")

    report = check(F.cross_entropy, raises, cross_entropy_inputs, [(2, 3)], dtypes=[torch.float32])

    assert report["input"].status == ERROR
    assert report["input"].note == "the kernel raised RuntimeError: BLOCK must be a power of two"


def test_a_gradient_of_the_wrong_shape_or_dtype_is_an_error_that_says_which():
    def wrong_shape_and_dtype(grad, x, w, b):
        dx, dw, db = linear_backward(grad, x, w, b)
        return dx.float(), dw, db[None]

    report = check(linear, wrong_shape_and_dtype, linear_inputs, [(4, 3)], dtypes=[torch.bfloat16])

    assert report["x"].note == "dtype float32, expected bfloat16"
    assert report["w"].status == PASSED
    assert report["b"].note == "shape (1, 3), expected (3,)"


def test_nan_in_a_gradient_fails_it():
    def nan_at_the_end(grad_loss, logits, target):
        grad = cross_entropy_backward(grad_loss, logits, target)
        grad[-1, -1] = math.nan
        return grad

    report = check(F.cross_entropy, nan_at_the_end, cross_entropy_inputs, [(4, 70)], dtypes=[torch.float32])

    assert report["input"].status == FAILED
    assert report["input"].measure.nonfinite == 1
    assert report["input"].measure.worst_index == (3, 69)


# --- the criterion on its own ----------------------------------------------------------


def large_and_small_entries(generator):
    """One entry of about 1 per row, 511 of about 1e-4: a cross-entropy gradient's layout."""
    ref = torch.rand(64, 512, generator=generator, dtype=torch.float64) * 1e-4 + 1e-5
    ref[:, 0] = -1 + torch.rand(64, generator=generator, dtype=torch.float64) * 0.1
    return ref


def test_errors_hidden_under_the_global_maximum_fail_band_by_band():
    g = torch.Generator().manual_seed(0)
    ref = large_and_small_entries(g)
    pytorch = ref.to(torch.bfloat16)
    kernel = pytorch.clone()
    kernel[:, 1:] = (ref[:, 1:] * 1.03).to(torch.bfloat16)  # 3% off, where bfloat16's rounding is under 0.4%

    m = measure_error(kernel, pytorch, ref)

    assert m.global_ratio <= 1  # the largest errors are PyTorch's own, on the entries near -1
    assert m.ratio > 2 and not m.passed


def test_an_exact_pytorch_does_not_demand_an_exact_kernel():
    ref = torch.linspace(1, 2, 256, dtype=torch.float64).to(torch.bfloat16).double()  # exact in bfloat16
    one_ulp_off = ref.to(torch.bfloat16).view(torch.int16).add(1).view(torch.bfloat16)

    m = measure_error(one_ulp_off, ref.to(torch.bfloat16), ref)

    assert m.bands[m.worst_band].torch_error == 0
    assert m.passed


def test_anything_written_where_the_reference_is_exactly_zero_is_gross():
    ref = torch.zeros(300, dtype=torch.float64)
    ref[:200] = torch.linspace(0.5, 1, 200, dtype=torch.float64)
    kernel = ref.float()
    kernel[250] = 1e-20  # an unzeroed buffer

    m = measure_error(kernel, ref.float(), ref)

    assert m.gross == 1 and m.worst_index == (250,) and not m.passed


def test_a_few_unlucky_elements_do_not_fail_their_band():
    g = torch.Generator().manual_seed(1)
    ref = torch.rand(1000, generator=g, dtype=torch.float64) + 1
    pytorch = ref.to(torch.bfloat16)
    kernel = pytorch.clone()
    kernel[:5] = (ref[:5] * 1.06).to(torch.bfloat16)  # 20 times PyTorch's worst error, on 5 elements of 1000

    m = measure_error(kernel, pytorch, ref)

    assert m.passed
    assert m.bands[m.worst_band].kernel_max > 20 * m.bands[m.worst_band].torch_max


# --- shapes, strides and devices -----------------------------------------------------


def test_drawn_shapes_are_the_same_every_time_and_reach_block_edges():
    strategy = shapes((1, 64), (1, 4096))

    first, again = draw_shapes(strategy, 8), draw_shapes(strategy, 8)

    assert first == again
    assert (1, 1) in first
    assert any(size % 2 == 1 and size > 1 for shape in first for size in shape)
    assert any(shape[1] % 128 not in (0, 1) for shape in first)


def test_inside_a_hypothesis_test_a_strategy_of_shapes_is_refused_and_a_list_is_checked():
    outcomes = []

    @hypothesis.settings(max_examples=1, database=None, deadline=None)
    @hypothesis.given(st.just((3, 5)))
    def test(shape):
        with pytest.raises(RuntimeError, match="inside @given, draw the shape there and pass shapes="):
            check(F.cross_entropy, cross_entropy_backward, cross_entropy_inputs, shapes((1, 4), (1, 9)))
        outcomes.append(check(F.cross_entropy, cross_entropy_backward, cross_entropy_inputs, [shape]).passed)

    test()

    assert outcomes == [True]


def test_every_other_draw_hands_the_kernel_strided_inputs():
    seen = []

    def spy(grad_loss, logits, target):
        seen.append(logits.is_contiguous())
        return cross_entropy_backward(grad_loss, logits, target)

    report = check(F.cross_entropy, spy, cross_entropy_inputs, [(3, 5), (4, 6), (5, 7)], dtypes=[torch.float32])

    assert seen == [True, False, True]
    assert report.passed


def test_an_absent_device_is_skipped_with_the_reason(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    report = check_backward(
        F.cross_entropy, FusedCrossEntropy, cross_entropy_inputs, shapes=[(2, 3)], devices=("cpu", "cuda")
    )

    assert [(c.device, c.status, c.note) for c in report.checks if c.device == "cuda"] == [
        ("cuda", SKIPPED, "CUDA is not available")
    ] * 2
    assert report.passed
    assert report.summary() == "2/4 gradient checks pass, 2 skipped (CUDA is not available)"


def test_a_dtype_pytorch_has_no_backward_for_is_skipped_with_its_error():
    def float32_only(logits, target):
        if logits.dtype == torch.bfloat16:
            raise RuntimeError("\"log_softmax\" not implemented for 'BFloat16'")
        return F.cross_entropy(logits, target)

    report = check(float32_only, FusedCrossEntropy, cross_entropy_inputs, [(2, 3)])

    assert report["logits", "float32"].status == PASSED  # named after the reference's parameter
    assert report["logits", "bfloat16"].status == SKIPPED
    assert "not implemented for 'BFloat16'" in report["logits", "bfloat16"].note


def test_device_unavailable_names_what_is_missing():
    assert device_unavailable("cpu") == ""
    assert device_unavailable("cuda:99") in ("CUDA is not available", "there is no cuda:99")


# --- the report --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def failing_report() -> BackwardReport:
    return check(F.cross_entropy, wrong_sign, cross_entropy_inputs, [(4, 70), (3, 5)], title="wrong sign")


def test_the_same_check_gives_the_same_report_text(failing_report):
    again = check(F.cross_entropy, wrong_sign, cross_entropy_inputs, [(4, 70), (3, 5)], title="wrong sign")

    assert str(again) == str(failing_report)
    assert again.to_json() == failing_report.to_json()


def test_the_table_gives_each_gradient_dtype_and_device_its_numbers_and_verdict(failing_report):
    lines = str(failing_report).splitlines()

    assert lines[0] == "wrong sign (k = 2)"
    assert lines[1].split() == [
        "gradient", "dtype", "device", "shapes", "kernel", "err", "torch", "err", "ratio", "band", "of", "|ref|",
        "gross", "global", "worst", "at", "kernel", "/", "torch", "/", "float64", "verdict", "note",
    ]  # fmt: skip
    rows = [line.split() for line in lines[3:5]]
    assert [row[:4] for row in rows] == [["input", "float32", "cpu", "2"], ["input", "bfloat16", "cpu", "2"]]
    assert all("failed" in row for row in rows)
    assert lines[-1] == "0/2 gradient checks pass, 2 failed"


def test_failures_say_where_and_by_how_much(failing_report):
    text = failing_report.failures()

    assert text.startswith("dinput at float32 on cpu: FAILED at shape (4, 70)")
    assert "elements grossly off" in text
    assert "kernel err" in text and "PyTorch's" in text and "at index [" in text


def test_plain_data_and_html_carry_the_same_report(failing_report):
    data = json.loads(failing_report.to_json())
    html = failing_report._repr_html_()

    assert BackwardReport.from_dict(data).to_text(color=False) == str(failing_report)
    assert data["passed"] is False and data["counts"] == {"failed": 2}
    assert html.startswith('<table class="gradcheck-backward">') and html.count('style="color: red">failed') == 2


def test_the_repr_is_one_short_line(failing_report):
    assert repr(failing_report) == "<BackwardReport 'wrong sign': 0/2 gradient checks pass, 2 failed>"


def test_a_benchmark_times_the_kernel_at_the_largest_shape_with_measure_kernel(monkeypatch):
    # measure_kernel itself is tested with the bench; here: what it is handed, and where its numbers go.
    calls = []

    def measure_kernel(fn, *, min_bytes, device, quick):
        calls.append((fn(), min_bytes, device, quick))
        timing, copy = SimpleNamespace(iqr=1e-6), SimpleNamespace(bytes_per_second=2e10)
        return SimpleNamespace(
            median=1e-4, timing=timing, bandwidth=1e10, fraction_of_copy=0.5, copy=copy, peak_bytes=4096
        )

    monkeypatch.setattr(gradcheck_kit.bench.kernel, "measure_kernel", measure_kernel)

    report = check(
        F.cross_entropy, FusedCrossEntropy, cross_entropy_inputs, [(2, 3), (8, 300)], [torch.float32], benchmark=True
    )

    ((grads, min_bytes, device, quick),) = calls
    assert grads[0].shape == (8, 300)  # the call runs the kernel's backward once
    assert (min_bytes, device, quick) == (2 * 8 * 300 * 4 + 8 * 8 + 4, torch.device("cpu"), False)
    (timing,) = report.timings
    assert (timing.shape, timing.seconds, timing.fraction_of_copy, timing.peak_bytes) == ((8, 300), 1e-4, 0.5, 4096)
    assert str(report).splitlines()[-3:] == [
        "dtype    device    shape       median    ± iqr    bandwidth    % of copy     copy    peak memory",
        "-------  --------  --------  --------  -------  -----------  -----------  -------  -------------",
        "float32  cpu       (8, 300)    100 µs     1 µs      10 GB/s        50.0%  20 GB/s          4 KiB",
    ]
    assert BackwardReport.from_dict(report.as_dict()).timings == report.timings


def test_check_backward_is_exported_from_the_package():
    assert gradcheck_kit.check_backward is check_backward
    assert {"check_backward", "BackwardReport"} <= set(dir(gradcheck_kit))


# --- the pytest fixture ----------------------------------------------------------------

KERNEL_TESTS = """
import torch
import torch.nn.functional as F

def inputs(shape, generator):
    n, vocab = shape
    return torch.randn(n, vocab, generator=generator), torch.randint(0, vocab, (n,), generator=generator)

def right(grad_loss, logits, target):
    grad = torch.softmax(logits.float(), 1)
    grad[torch.arange(len(target)), target] -= 1
    return (grad * grad_loss.float() / len(target)).to(logits.dtype)

def wrong(grad_loss, logits, target):
    return -right(grad_loss, logits, target)

def test_right(check_backward):
    check_backward(F.cross_entropy, right, inputs, shapes=[(3, 5), (4, 130)])

def test_wrong(check_backward):
    check_backward(F.cross_entropy, wrong, inputs, shapes=[(3, 5)])

def test_no_device(check_backward):
    check_backward(F.cross_entropy, right, inputs, shapes=[(3, 5)], devices=["cuda:99"])
"""


def test_a_kernel_test_is_three_lines_and_its_table_prints_at_the_end_of_the_run(pytester: pytest.Pytester):
    pytester.makepyfile(test_kernels=KERNEL_TESTS)

    result = pytester.runpytest("-p", "no:cacheprovider", "--gradcheck-device", "cpu", "test_kernels.py::test_right")

    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*= gradcheck-kit: backward checks =*",
            "test_kernels.py::test_right",
            "cross_entropy vs right (k = 2)",
            "gradient*dtype*device*shapes*kernel err*torch err*ratio*verdict*",
            "input*float32*cpu*2*passed*",
            "input*bfloat16*cpu*2*passed*",
            "2/2 gradient checks pass",
            "",
            "err: 90th percentile*",
        ]
    )


def test_a_failing_kernel_fails_its_test_with_what_is_off(pytester: pytest.Pytester):
    pytester.makepyfile(test_kernels=KERNEL_TESTS)

    result = pytester.runpytest("-p", "no:cacheprovider", "--gradcheck-device", "cpu", "test_kernels.py::test_wrong")

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*cross_entropy vs wrong: 0/2 gradient checks pass, 2 failed",
            "dinput at float32 on cpu: FAILED at shape (3, 5)",
            "*elements grossly off*",
        ]
    )
    assert result.ret == 1


def test_a_check_with_no_device_present_skips_its_test(pytester: pytest.Pytester):
    pytester.makepyfile(test_kernels=KERNEL_TESTS)

    result = pytester.runpytest("-p", "no:cacheprovider", "-rs", "test_kernels.py::test_no_device")

    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*cross_entropy vs right: 0/2 gradient checks pass, 2 skipped*"])


def test_the_no_tables_option_leaves_the_backward_checks_out_of_the_summary(pytester: pytest.Pytester):
    pytester.makepyfile(test_kernels=KERNEL_TESTS)

    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--gradcheck-device", "cpu", "--gradcheck-no-tables", "test_kernels.py::test_right"
    )

    result.assert_outcomes(passed=1)
    assert "backward checks" not in result.stdout.str()
