"""Exercise 3: the backward pass of batch normalisation in one expression.

Forward (statistics over the batch of n, Bessel-corrected variance, eps 1e-5)::

    bnmeani = 1/n * hprebn.sum(0, keepdim=True)
    bndiff = hprebn - bnmeani
    bnvar = 1/(n-1) * (bndiff**2).sum(0, keepdim=True)
    bnvar_inv = (bnvar + 1e-5)**-0.5
    bnraw = bndiff * bnvar_inv
    hpreact = bngain * bnraw + bnbias

Given dhpreact, find dhprebn. Every hprebn[i, j] reaches the output three ways:
through its own bnraw[i, j], through the mean, and through the variance. Write
the derivative of bnraw with respect to hprebn for one column, collect the three
terms, simplify, and express the result with bnraw and bnvar_inv.
Shapes: dhpreact and bnraw (n, n_hidden); bngain and bnvar_inv (1, n_hidden).
"""

from __future__ import annotations

import torch


def batchnorm_backward(
    dhpreact: torch.Tensor, bngain: torch.Tensor, bnraw: torch.Tensor, bnvar_inv: torch.Tensor
) -> torch.Tensor:
    """Return dloss/dhprebn given dloss/dhpreact."""
    raise NotImplementedError("Exercise 3: write dhprebn for the batchnorm layer in one go")
