"""Exercise 7: the Triton kernels, graded against autograd like exercises 2 and 3.

They run on CUDA, so without a CUDA device or without Triton the tests are
skipped, with the reason. ``TRITON_INTERPRET=1`` grades them on the CPU too, in
Triton's interpreter: slow, but enough to find a wrong index.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

pytestmark = pytest.mark.gradcheck(exercise="ex7")

#: The notebook's size first, then: a row in one block, the longest row held in registers, rows read block by block.
CROSS_ENTROPY_SHAPES = [(32, 27), (64, 1000), (4, 32768), (5, 50257)]
#: The notebook's size first, then: one column, several blocks of rows and of columns, ragged edges.
BATCHNORM_SHAPES = [(32, 64), (7, 1), (300, 130), (1000, 33)]


@pytest.fixture
def triton_device(device):
    if importlib.util.find_spec("triton") is None:
        pytest.skip("exercise 7 needs Triton: pip install triton (Linux, with a CUDA GPU)")
    if device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the Triton kernels are graded on CUDA; TRITON_INTERPRET=1 grades them on the CPU, slowly")
    return device


def test_cross_entropy_kernel(triton_device, grader, gradcheck):
    """dlogits at the notebook's size, then at the sizes that take the kernel's other paths."""
    import torch

    from gradcheck_kit.bench.ops import CROSS_ENTROPY
    from gradcheck_kit.bench.runner import SEED

    for n, vocab_size in CROSS_ENTROPY_SHAPES:
        params = {"n": n, "v": vocab_size}
        inputs = CROSS_ENTROPY.make_inputs(params, torch.device(triton_device), torch.float32, SEED, True)
        assert inputs.expected is not None
        f = inputs.f
        title = f"exercise 7: Triton cross-entropy backward, {n}x{vocab_size} [{triton_device}]"
        result = grader.grade_call(
            "ex7", "cross_entropy_backward_triton", "logits", inputs.expected["logits"], f.logits, f.Yb,
            device=triton_device, title=title,
        )  # fmt: skip
        gradcheck.check(result.report, table=title, record=(n, vocab_size) == CROSS_ENTROPY_SHAPES[0])


def test_batchnorm_kernel(triton_device, grader, gradcheck):
    """dhprebn at the notebook's size, then at sizes with several blocks and ragged edges."""
    import torch

    from gradcheck_kit.bench.ops import BATCHNORM
    from gradcheck_kit.bench.runner import SEED

    for n, n_hidden in BATCHNORM_SHAPES:
        inputs = BATCHNORM.make_inputs({"n": n, "c": n_hidden}, torch.device(triton_device), torch.float32, SEED, True)
        assert inputs.expected is not None
        f = inputs.f
        title = f"exercise 7: Triton batchnorm backward, {n}x{n_hidden} [{triton_device}]"
        result = grader.grade_call(
            "ex7", "batchnorm_backward_triton", "hprebn", inputs.expected["hprebn"], f.dhpreact, f.bngain, f.bnraw,
            f.bnvar_inv, device=triton_device, title=title,
        )  # fmt: skip
        gradcheck.check(result.report, table=title, record=(n, n_hidden) == BATCHNORM_SHAPES[0])
