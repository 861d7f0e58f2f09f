"""Exercise 3: the backward pass of batch normalisation in one expression.

Forward, per hidden unit j over a batch of n (Bessel-corrected variance, eps 1e-5)::

    bnmeani = hprebn.mean(0, keepdim=True)
    bnvar = hprebn.var(0, keepdim=True, unbiased=True)      # divides by n - 1
    bnvar_inv = (bnvar + 1e-5)**-0.5
    bnraw = (hprebn - bnmeani) * bnvar_inv
    hpreact = bngain * bnraw + bnbias

With x̂ = bnraw, dx̂ = bngain * dhpreact, every hprebn[i] moves the mean and the
variance as well as its own x̂[i]. Collecting the three paths gives::

    dhprebn = bnvar_inv / n * (n * dx̂ - sum(dx̂) - n/(n-1) * x̂ * sum(dx̂ * x̂))

where the sums run over the batch.
"""

from __future__ import annotations

import torch


def batchnorm_backward(
    dhpreact: torch.Tensor, bngain: torch.Tensor, bnraw: torch.Tensor, bnvar_inv: torch.Tensor
) -> torch.Tensor:
    """Return dloss/dhprebn given dloss/dhpreact.

    Args:
        dhpreact: (n, n_hidden) gradient of the batchnorm output.
        bngain: (1, n_hidden) scale.
        bnraw: (n, n_hidden) normalised input of the forward pass.
        bnvar_inv: (1, n_hidden) the forward pass's (bnvar + 1e-5)**-0.5.

    Returns:
        dhprebn, (n, n_hidden).
    """
    n = dhpreact.shape[0]
    return (
        bngain
        * bnvar_inv
        / n
        * (n * dhpreact - dhpreact.sum(0, keepdim=True) - n / (n - 1) * bnraw * (dhpreact * bnraw).sum(0, keepdim=True))
    )
