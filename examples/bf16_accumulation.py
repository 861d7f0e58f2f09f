"""A cross-entropy backward that sums its rows in bfloat16: three checks, two of which pass it.

The kernel walks each row in chunks of 128 logits and keeps the running sum of exp(x - max)
in the logits' dtype, where PyTorch accumulates in float32. In bfloat16 (8 significant
bits) the sum stops growing once a chunk is small next to it, so each row's softmax is
scaled by a wrong total: every off-target entry of the row is a few percent off.

- torch.testing.assert_close with its bfloat16 defaults (rtol 1.6e-2, atol 1e-5) passes
  it: at 128 x 32768 the off-target entries are below 1e-5, so atol swallows them.
- FlashAttention's criterion, max|kernel - ref| <= 2 max|torch - ref| against a float64
  reference, passes it: the maximum sits on the -1/n at the labels, which it gets right.
- check_backward fails it: band by band of magnitudes, its typical error on the
  off-target entries is several times PyTorch's. At float32 the same code accumulates in
  float32 and passes.

Run: python examples/bf16_accumulation.py   (about 10 s on a laptop CPU)
"""

import torch
import torch.nn.functional as F

from gradcheck_kit import check_backward

SHAPE = (128, 32768)
CHUNK = 128


class ChunkedCrossEntropy(torch.autograd.Function):
    """``F.cross_entropy(logits, target)`` whose backward keeps its row sums in the logits' dtype."""

    @staticmethod
    def forward(ctx, logits, target):
        x = logits.float()
        ctx.save_for_backward(logits, target)
        return (torch.logsumexp(x, dim=1) - x.gather(1, target[:, None])[:, 0]).mean().to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_loss):
        logits, target = ctx.saved_tensors
        n, vocab = logits.shape
        x = logits.float()
        e = torch.exp(x - x.max(dim=1, keepdim=True).values)
        # The mistake: the running total is rounded to the logits' dtype after every chunk.
        total = torch.zeros(n, 1, dtype=logits.dtype, device=logits.device)
        for start in range(0, vocab, CHUNK):
            total = total + e[:, start : start + CHUNK].sum(dim=1, keepdim=True).to(logits.dtype)
        grad = e / total.float()
        grad[torch.arange(n, device=logits.device), target] -= 1
        return (grad * (grad_loss.float() / n)).to(logits.dtype), None


def cross_entropy_inputs(shape, generator):
    n, vocab = shape
    return torch.randn(n, vocab, generator=generator), torch.randint(0, vocab, (n,), generator=generator)


def main() -> None:
    g = torch.Generator().manual_seed(0)
    logits, target = cross_entropy_inputs(SHAPE, g)
    logits = logits.bfloat16()
    grad_loss = torch.randn((), generator=g).bfloat16()

    def grad_of(fn, x):
        x = x.detach().clone().requires_grad_()
        return torch.autograd.grad(fn(x, target), x, grad_loss.to(x.dtype))[0]

    kernel = grad_of(ChunkedCrossEntropy.apply, logits)
    pytorch = grad_of(F.cross_entropy, logits)
    reference = grad_of(F.cross_entropy, logits.double())

    try:
        torch.testing.assert_close(kernel, pytorch)
        print("torch.testing.assert_close (bfloat16 defaults):  passes")
    except AssertionError:
        print("torch.testing.assert_close (bfloat16 defaults):  fails")

    ratio = (kernel.double() - reference).abs().max() / (pytorch.double() - reference).abs().max()
    print(f"FlashAttention's global max criterion (<= 2):    {'passes' if ratio <= 2 else 'fails'}, ratio {ratio:.2f}")

    report = check_backward(F.cross_entropy, ChunkedCrossEntropy, cross_entropy_inputs, shapes=[SHAPE], devices=["cpu"])
    print(f"check_backward (k = 2) at bfloat16:               {report['input', 'bfloat16'].status}")
    print()
    print(report)


if __name__ == "__main__":
    main()
