"""Exercise 1: dhprebn = dbndiff without a clone, so dhprebn += ... changes dbndiff too; db2 summed with keepdim."""

from __future__ import annotations

import torch


def chunked_backward(f) -> dict[str, torch.Tensor]:
    """Return the gradient of ``f.loss`` with respect to every intermediate and parameter.

    Args:
        f: the forward pass; its attributes carry the notebook's names (``f.logprobs``,
            ``f.W1``, ``f.Xb``, ``f.n`` ...).

    Returns:
        ``{"logprobs": dlogprobs, ..., "C": dC}``, each the shape of its tensor.
    """
    n = f.n
    g: dict[str, torch.Tensor] = {}

    # loss = -mean of the n picked log-probabilities: each picked one gets -1/n, the rest 0.
    dlogprobs = torch.zeros_like(f.logprobs)
    dlogprobs[range(n), f.Yb] = -1.0 / n
    g["logprobs"] = dlogprobs

    # d log(x) / dx = 1 / x
    dprobs = (1.0 / f.probs) * dlogprobs
    g["probs"] = dprobs

    # probs = counts * counts_sum_inv broadcasts counts_sum_inv (n, 1) across the row,
    # so its gradient sums the row back.
    dcounts_sum_inv = (f.counts * dprobs).sum(1, keepdim=True)
    g["counts_sum_inv"] = dcounts_sum_inv

    # d x**-1 / dx = -x**-2
    dcounts_sum = (-(f.counts_sum**-2)) * dcounts_sum_inv
    g["counts_sum"] = dcounts_sum

    # counts is used twice: directly in probs, and through counts_sum.
    dcounts = f.counts_sum_inv * dprobs
    dcounts += torch.ones_like(f.counts) * dcounts_sum
    g["counts"] = dcounts

    # d exp(x) / dx = exp(x), which is counts itself.
    dnorm_logits = f.counts * dcounts
    g["norm_logits"] = dnorm_logits

    # norm_logits = logits - logit_maxes broadcasts logit_maxes (n, 1): sum the row back.
    dlogit_maxes = (-dnorm_logits).sum(1, keepdim=True)
    g["logit_maxes"] = dlogit_maxes

    # logits is used twice: in norm_logits, and where the max was picked.
    dlogits = dnorm_logits.clone()
    dlogits += torch.nn.functional.one_hot(f.logits.max(1).indices, num_classes=f.logits.shape[1]) * dlogit_maxes
    g["logits"] = dlogits

    # logits = h @ W2 + b2: each matrix gradient is the other matrix, transposed, times dlogits.
    g["h"] = dlogits @ f.W2.T
    g["W2"] = f.h.T @ dlogits
    g["b2"] = dlogits.sum(0, keepdim=True)

    # d tanh(x) / dx = 1 - tanh(x)**2, and h is tanh(hpreact). Autograd's CPU kernel
    # rounds 1 - h*h once (a fused multiply-add), so from here on "exact" turns False
    # while "approximate" stays True: a difference of rounding, not of math.
    dhpreact = (1.0 - f.h**2) * g["h"]
    g["hpreact"] = dhpreact

    # hpreact = bngain * bnraw + bnbias: bngain and bnbias (1, n_hidden) broadcast over the batch.
    g["bngain"] = (f.bnraw * dhpreact).sum(0, keepdim=True)
    g["bnbias"] = dhpreact.sum(0, keepdim=True)
    dbnraw = f.bngain * dhpreact
    g["bnraw"] = dbnraw

    # bnraw = bndiff * bnvar_inv, with bnvar_inv (1, n_hidden) broadcast over the batch.
    dbnvar_inv = (f.bndiff * dbnraw).sum(0, keepdim=True)
    g["bnvar_inv"] = dbnvar_inv

    # d (x + eps)**-0.5 / dx = -0.5 * (x + eps)**-1.5
    dbnvar = (-0.5 * (f.bnvar + 1e-5) ** -1.5) * dbnvar_inv
    g["bnvar"] = dbnvar

    # bnvar = 1/(n-1) * sum over the batch: the sum becomes a broadcast.
    dbndiff2 = (1.0 / (n - 1)) * torch.ones_like(f.bndiff2) * dbnvar
    g["bndiff2"] = dbndiff2

    # bndiff is used twice: in bnraw, and squared in bndiff2.
    dbndiff = f.bnvar_inv * dbnraw
    dbndiff += (2 * f.bndiff) * dbndiff2
    g["bndiff"] = dbndiff

    # bndiff = hprebn - bnmeani broadcasts bnmeani (1, n_hidden) over the batch.
    dbnmeani = (-dbndiff).sum(0, keepdim=True)
    g["bnmeani"] = dbnmeani

    # hprebn is used twice: in bndiff, and through the mean bnmeani = 1/n * sum.
    dhprebn = dbndiff
    dhprebn += (1.0 / n) * (torch.ones_like(f.hprebn) * dbnmeani)
    g["hprebn"] = dhprebn

    # hprebn = embcat @ W1 + b1
    g["embcat"] = dhprebn @ f.W1.T
    g["W1"] = f.embcat.T @ dhprebn
    g["b1"] = dhprebn.sum(0)

    # The view only reinterprets the memory: undo it.
    demb = g["embcat"].view(f.emb.shape)
    g["emb"] = demb

    # emb = C[Xb] copies row Xb[k, j] of C into emb[k, j]; rows picked several
    # times collect the sum of their gradients.
    dC = torch.zeros_like(f.C)
    for k in range(f.Xb.shape[0]):
        for j in range(f.Xb.shape[1]):
            dC[f.Xb[k, j]] += demb[k, j]
    g["C"] = dC

    return g
