"""The backward passes the benchmark times, written the ways the exercises teach them.

Each function mirrors a step of the notebook: the *chunked* ones run exercise 1's
steps one named intermediate at a time, the *fused* ones are exercises 2-4's
single expressions, and the embedding variants are the four ways of writing the
scatter-add of exercise 4. ``f`` is a namespace with the notebook's names.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

# Re-exported: the variants' shared chain lives apart, for the speed line's worker to load without them.
from gradcheck_kit.bench.mlp_chain import mlp_backward

__all__ = [
    "batchnorm_chunked",
    "batchnorm_fused",
    "cross_entropy_chunked",
    "cross_entropy_fused",
    "embedding_index_add",
    "embedding_index_put",
    "embedding_loop",
    "embedding_one_hot",
    "mlp_backward",
]


def cross_entropy_chunked(f: Any) -> torch.Tensor:
    """dlogits through exercise 1's steps, from ``logprobs`` back to ``logits``."""
    n = f.logits.shape[0]
    dlogprobs = torch.zeros_like(f.logprobs)
    dlogprobs[range(n), f.Yb] = -1.0 / n
    dprobs = (1.0 / f.probs) * dlogprobs
    dcounts_sum_inv = (f.counts * dprobs).sum(1, keepdim=True)
    dcounts_sum = (-(f.counts_sum**-2)) * dcounts_sum_inv
    dcounts = f.counts_sum_inv * dprobs
    dcounts += torch.ones_like(f.counts) * dcounts_sum
    dnorm_logits = f.counts * dcounts
    dlogit_maxes = (-dnorm_logits).sum(1, keepdim=True)
    dlogits = dnorm_logits.clone()
    dlogits += F.one_hot(f.logits.max(1).indices, num_classes=f.logits.shape[1]) * dlogit_maxes
    return dlogits


def cross_entropy_fused(logits: torch.Tensor, Yb: torch.Tensor) -> torch.Tensor:
    """dlogits = (softmax(logits) - one_hot(Yb)) / n, exercise 2."""
    n = logits.shape[0]
    dlogits = F.softmax(logits, dim=1)
    dlogits[range(n), Yb] -= 1
    dlogits /= n
    return dlogits


def batchnorm_chunked(f: Any, dhpreact: torch.Tensor) -> torch.Tensor:
    """dhprebn through exercise 1's steps, from ``bnraw`` back to ``hprebn``."""
    n = dhpreact.shape[0]
    dbnraw = f.bngain * dhpreact
    dbnvar_inv = (f.bndiff * dbnraw).sum(0, keepdim=True)
    dbnvar = (-0.5 * (f.bnvar + 1e-5) ** -1.5) * dbnvar_inv
    dbndiff2 = (1.0 / (n - 1)) * torch.ones_like(f.bndiff2) * dbnvar
    dbndiff = f.bnvar_inv * dbnraw
    dbndiff += (2 * f.bndiff) * dbndiff2
    dbnmeani = (-dbndiff).sum(0, keepdim=True)
    dhprebn = dbndiff.clone()
    dhprebn += (1.0 / n) * (torch.ones_like(f.hprebn) * dbnmeani)
    return dhprebn


def batchnorm_fused(
    dhpreact: torch.Tensor, bngain: torch.Tensor, bnraw: torch.Tensor, bnvar_inv: torch.Tensor
) -> torch.Tensor:
    """dhprebn in one expression, exercise 3."""
    n = dhpreact.shape[0]
    return (
        bngain
        * bnvar_inv
        / n
        * (n * dhpreact - dhpreact.sum(0, keepdim=True) - n / (n - 1) * bnraw * (dhpreact * bnraw).sum(0, keepdim=True))
    )


def embedding_loop(demb: torch.Tensor, Xb: torch.Tensor, num_embeddings: int) -> torch.Tensor:
    """dC row by row in Python, as exercise 1 first writes it."""
    dC = torch.zeros(num_embeddings, demb.shape[-1], dtype=demb.dtype, device=demb.device)
    for k in range(Xb.shape[0]):
        for j in range(Xb.shape[1]):
            dC[Xb[k, j]] += demb[k, j]
    return dC


def embedding_index_add(demb: torch.Tensor, Xb: torch.Tensor, num_embeddings: int) -> torch.Tensor:
    """dC with one ``index_add_``, which sums repeated indices."""
    d = demb.shape[-1]
    dC = torch.zeros(num_embeddings, d, dtype=demb.dtype, device=demb.device)
    dC.index_add_(0, Xb.reshape(-1), demb.reshape(-1, d))
    return dC


def embedding_one_hot(demb: torch.Tensor, Xb: torch.Tensor, num_embeddings: int) -> torch.Tensor:
    """dC as a matrix product: ``emb = one_hot(Xb) @ C``, so ``dC = one_hot(Xb).T @ demb``."""
    d = demb.shape[-1]
    selection = F.one_hot(Xb.reshape(-1), num_classes=num_embeddings).to(demb.dtype)
    return selection.T @ demb.reshape(-1, d)


def embedding_index_put(demb: torch.Tensor, Xb: torch.Tensor, num_embeddings: int) -> torch.Tensor:
    """dC with ``index_put_(accumulate=True)``, the kernel autograd itself uses for ``C[Xb]``."""
    d = demb.shape[-1]
    dC = torch.zeros(num_embeddings, d, dtype=demb.dtype, device=demb.device)
    return dC.index_put_((Xb.reshape(-1),), demb.reshape(-1, d), accumulate=True)
