"""A fused cross-entropy as a custom autograd.Function, checked against PyTorch with check_backward.

The forward saves only the logits and labels; the backward rebuilds softmax(logits) in
float32 and writes (softmax - onehot) / n in the logits' dtype, one pass where PyTorch's
autograd runs several. check_backward holds it to PyTorch's own error at float32 and
bfloat16, over shapes drawn by hypothesis (1 x 1 up to 64 x 4096, odd sizes, strided
inputs), on the CPU and on CUDA when there is one, and times it beside PyTorch.

Run: python examples/fused_cross_entropy.py
"""

import sys

import torch
import torch.nn.functional as F

from gradcheck_kit import check_backward


class FusedCrossEntropy(torch.autograd.Function):
    """``F.cross_entropy(logits, target)`` (mean over rows) with a one-pass backward."""

    @staticmethod
    def forward(ctx, logits, target):
        # Computed in float32 whatever the dtype, as a fused kernel keeps its accumulators.
        x = logits.float()
        loss = (torch.logsumexp(x, dim=1) - x.gather(1, target[:, None])[:, 0]).mean()
        ctx.save_for_backward(logits, target)
        return loss.to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_loss):
        logits, target = ctx.saved_tensors
        n = logits.shape[0]
        # d loss / d logits[i, j] = (softmax(logits[i])[j] - (j == target[i])) / n
        grad = torch.softmax(logits.float(), dim=1)
        grad[torch.arange(n, device=logits.device), target] -= 1
        return (grad * (grad_loss.float() / n)).to(logits.dtype), None


def cross_entropy_inputs(shape, generator):
    """Logits and labels for ``shape = (rows, vocabulary)``."""
    n, vocab = shape
    return torch.randn(n, vocab, generator=generator), torch.randint(0, vocab, (n,), generator=generator)


if __name__ == "__main__":
    report = check_backward(F.cross_entropy, FusedCrossEntropy, cross_entropy_inputs, benchmark=True)
    print(report)
    sys.exit(0 if report.passed else 1)
