"""Exercise 1: backprop by hand through every intermediate of the MLP, one step at a time.

The forward pass you are differentiating (``f`` gives you every tensor by name)::

    emb = C[Xb]                                   # (n, block_size, n_embd)
    embcat = emb.view(emb.shape[0], -1)           # (n, block_size * n_embd)
    hprebn = embcat @ W1 + b1                     # (n, n_hidden)
    bnmeani = 1/n * hprebn.sum(0, keepdim=True)   # (1, n_hidden)
    bndiff = hprebn - bnmeani
    bndiff2 = bndiff**2
    bnvar = 1/(n-1) * bndiff2.sum(0, keepdim=True)   # Bessel's correction: n-1
    bnvar_inv = (bnvar + 1e-5)**-0.5
    bnraw = bndiff * bnvar_inv
    hpreact = bngain * bnraw + bnbias
    h = torch.tanh(hpreact)
    logits = h @ W2 + b2                          # (n, vocab_size)
    logit_maxes = logits.max(1, keepdim=True).values
    norm_logits = logits - logit_maxes
    counts = norm_logits.exp()
    counts_sum = counts.sum(1, keepdim=True)
    counts_sum_inv = counts_sum**-1
    probs = counts * counts_sum_inv
    logprobs = probs.log()
    loss = -logprobs[range(n), Yb].mean()

Start at the loss and work backwards. Each gradient has the shape of its tensor
(``dlogprobs.shape == f.logprobs.shape``). Fill in one line at a time and run
``pytest exercises/ -k ex1``: every gradient you have not written yet stays
"not started", and a wrong one is named with what looks off.

Do not call ``backward()`` or ``torch.autograd``: the grader runs your code with
autograd switched off.
"""

from __future__ import annotations

import torch


def chunked_backward(f) -> dict[str, torch.Tensor | None]:
    """Return the gradient of ``f.loss`` with respect to every intermediate and parameter.

    Args:
        f: the forward pass; its attributes carry the notebook's names (``f.logprobs``,
            ``f.W1``, ``f.Xb``, ``f.n`` ...). They are copies: changing them in place is harmless.

    Returns:
        ``{"logprobs": dlogprobs, ..., "C": dC}``; leave a gradient as None until you write it.
    """
    n = f.n  # noqa: F841 (you will need it)
    dlogprobs = None
    dprobs = None
    dcounts_sum_inv = None
    dcounts_sum = None
    dcounts = None
    dnorm_logits = None
    dlogit_maxes = None
    dlogits = None
    dh = None
    dW2 = None
    db2 = None
    dhpreact = None
    dbngain = None
    dbnbias = None
    dbnraw = None
    dbnvar_inv = None
    dbnvar = None
    dbndiff2 = None
    dbndiff = None
    dbnmeani = None
    dhprebn = None
    dembcat = None
    dW1 = None
    db1 = None
    demb = None
    dC = None

    return {
        "logprobs": dlogprobs,
        "probs": dprobs,
        "counts_sum_inv": dcounts_sum_inv,
        "counts_sum": dcounts_sum,
        "counts": dcounts,
        "norm_logits": dnorm_logits,
        "logit_maxes": dlogit_maxes,
        "logits": dlogits,
        "h": dh,
        "W2": dW2,
        "b2": db2,
        "hpreact": dhpreact,
        "bngain": dbngain,
        "bnbias": dbnbias,
        "bnraw": dbnraw,
        "bnvar_inv": dbnvar_inv,
        "bnvar": dbnvar,
        "bndiff2": dbndiff2,
        "bndiff": dbndiff,
        "bnmeani": dbnmeani,
        "hprebn": dhprebn,
        "embcat": dembcat,
        "W1": dW1,
        "b1": db1,
        "emb": demb,
        "C": dC,
    }
