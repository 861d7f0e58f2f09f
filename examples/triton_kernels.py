"""Exercise 7's Triton kernels (solutions/ex7_triton_kernels.py), checked against PyTorch with check_backward.

Both kernels compute in float32 whatever their inputs, so they should be at least as
accurate as PyTorch at float32, bfloat16 and float16. The kernels are explicit backward
functions, so each is wrapped as ``backward(grad_output, *inputs)``; the batchnorm one
takes what its forward saved (the normalised input and the inverse standard deviation),
which the wrapper recomputes from the inputs in float32, as a fused forward would save them.

CUDA only: without a CUDA device or without Triton the example says why and exits 0.

Run: python examples/triton_kernels.py
"""

import importlib.util
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from gradcheck_kit import check_backward
from gradcheck_kit.backward_check import shapes

SOLUTION = Path(__file__).resolve().parent.parent / "solutions" / "ex7_triton_kernels.py"
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def load_kernels():
    spec = importlib.util.spec_from_file_location("ex7_triton_kernels", SOLUTION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cross_entropy_inputs(shape, generator):
    n, vocab = shape
    return torch.randn(n, vocab, generator=generator), torch.randint(0, vocab, (n,), generator=generator)


def batchnorm(hprebn, bngain, bnbias):
    """Exercise 3's batchnorm forward, with the unbiased variance of the notebook."""
    n = hprebn.shape[0]
    bndiff = hprebn - hprebn.mean(0, keepdim=True)
    bnvar_inv = (bndiff.pow(2).sum(0, keepdim=True) / (n - 1) + 1e-5) ** -0.5
    return bngain * bndiff * bnvar_inv + bnbias


def batchnorm_inputs(shape, generator):
    n, hidden = shape
    hprebn = torch.randn(n, hidden, generator=generator) * 2 + 0.5
    bngain = torch.randn(1, hidden, generator=generator) * 0.1 + 1
    bnbias = torch.randn(1, hidden, generator=generator) * 0.1
    return hprebn, bngain, bnbias


def main() -> int:
    if not torch.cuda.is_available():
        print("skipped: exercise 7's Triton kernels run on CUDA, and CUDA is not available here")
        return 0
    if importlib.util.find_spec("triton") is None:
        print("skipped: exercise 7's kernels need Triton (pip install triton)")
        return 0
    ex7 = load_kernels()

    def cross_entropy_backward(grad_loss, logits, target):
        # The kernel returns d(mean loss)/d logits: scale it by the upstream gradient.
        dlogits = ex7.cross_entropy_backward_triton(logits, target)
        return (dlogits.float() * grad_loss.float()).to(logits.dtype)

    def batchnorm_backward(dhpreact, hprebn, bngain, bnbias):
        x = hprebn.float()
        bndiff = x - x.mean(0, keepdim=True)
        bnvar_inv = (bndiff.pow(2).sum(0, keepdim=True) / (x.shape[0] - 1) + 1e-5) ** -0.5
        return ex7.batchnorm_backward_triton(dhpreact, bngain, bndiff * bnvar_inv, bnvar_inv)

    reports = [
        check_backward(
            F.cross_entropy,
            cross_entropy_backward,
            cross_entropy_inputs,
            # Rows held in registers up to 32768 logits, walked block by block beyond.
            shapes=shapes((1, 256), (1, 65536), max_numel=1 << 23),
            dtypes=DTYPES,
            devices=["cuda"],
            examples=8,
            title="exercise 7: Triton cross-entropy backward",
        ),
        check_backward(
            batchnorm,
            batchnorm_backward,
            batchnorm_inputs,
            # The kernel sums blocks of 256 rows and 128 columns: sizes on either side of both.
            shapes=shapes((2, 2048), (1, 1024), max_numel=1 << 21),
            dtypes=DTYPES,
            devices=["cuda"],
            wrt=["hprebn"],
            examples=8,
            title="exercise 7: Triton batchnorm backward",
        ),
    ]
    for report in reports:
        print(report)
        print()
    return 0 if all(report.passed for report in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
