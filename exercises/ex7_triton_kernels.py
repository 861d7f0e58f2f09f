"""Exercise 7 (advanced, needs a CUDA GPU and Triton): exercises 2 and 3 as single GPU kernels.

Eager PyTorch runs exercise 2's three lines as several kernels, each reading and
writing the whole (n, vocab_size) matrix. A Triton kernel can read the logits
once and write dlogits once, the least memory traffic the gradient allows.

Cross-entropy, per row i with m_i = max_j logits[i, j] and s_i = sum_j exp(logits[i, j] - m_i)::

    dlogits[i, j] = (exp(logits[i, j] - m_i) / s_i - (j == Yb[i])) / n

A row that does not fit in one block can be read in blocks with an *online*
softmax: keep a running max m and a running sum s of exp(x - m); when a block
raises the max to m', rescale s by exp(m - m') before adding the block.

Batchnorm, per column j, with a = bngain * bnvar_inv and the sums over the batch::

    dhprebn = a * dhpreact - a / n * sum(dhpreact) - a / (n - 1) * bnraw * sum(dhpreact * bnraw)

Every row feeds the two sums, so sum first (partial sums per block of rows,
then add the partials up), and write dhprebn in a second pass.

Shapes: logits (n, vocab_size), Yb (n,) integers; dhpreact and bnraw (n, n_hidden),
bngain and bnvar_inv (1, n_hidden). Return tensors shaped and typed like the
gradients of exercises 2 and 3. To debug on a CPU, set TRITON_INTERPRET=1 and
pass CPU tensors: Triton's interpreter runs the kernel in Python.
"""

from __future__ import annotations

import torch

try:
    import triton  # noqa: F401 - for the kernels you write here
    import triton.language as tl  # noqa: F401
except ImportError:  # a machine without Triton can still import (and skip) this exercise
    triton = None
    tl = None

# A kernel to start from, one program per row:
#
# @triton.jit
# def _cross_entropy_backward_row(logits_ptr, labels_ptr, dlogits_ptr, n_cols, stride, inv_n, BLOCK: tl.constexpr):
#     row = tl.program_id(0).to(tl.int64)
#     cols = tl.arange(0, BLOCK)
#     x = tl.load(logits_ptr + row * stride + cols, mask=cols < n_cols, other=float("-inf"))
#     ...
#
# launched as _cross_entropy_backward_row[(n,)](logits, Yb, dlogits, ..., BLOCK=triton.next_power_of_2(V)).


def cross_entropy_backward_triton(logits: torch.Tensor, Yb: torch.Tensor) -> torch.Tensor:
    """Return dloss/dlogits for ``loss = F.cross_entropy(logits, Yb)``, computed by one Triton kernel."""
    raise NotImplementedError("Exercise 7: write the cross-entropy backward as a Triton kernel")


def batchnorm_backward_triton(
    dhpreact: torch.Tensor, bngain: torch.Tensor, bnraw: torch.Tensor, bnvar_inv: torch.Tensor
) -> torch.Tensor:
    """Return dloss/dhprebn given dloss/dhpreact, computed by Triton kernels: a summing pass, then a writing pass."""
    raise NotImplementedError("Exercise 7: write the batchnorm backward as Triton kernels")
