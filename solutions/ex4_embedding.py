"""Exercise 4: the backward pass of the embedding lookup ``emb = C[Xb]``.

Row ``Xb[k, j]`` of C is copied into ``emb[k, j]``. The gradient flows back the
same way, and a row of C picked several times in the batch collects the sum of
the gradients of all its copies: a scatter-add.
"""

from __future__ import annotations

import torch


def embedding_backward(demb: torch.Tensor, Xb: torch.Tensor, num_embeddings: int) -> torch.Tensor:
    """Return dloss/dC for ``emb = C[Xb]``.

    Args:
        demb: (n, block_size, n_embd) gradient of the looked-up embeddings.
        Xb: (n, block_size) integer indices into C.
        num_embeddings: rows of C (the vocabulary size).

    Returns:
        dC, (num_embeddings, n_embd).
    """
    n_embd = demb.shape[-1]
    dC = torch.zeros(num_embeddings, n_embd, dtype=demb.dtype, device=demb.device)
    # index_add_ adds every row of the source at its index, repeats included.
    dC.index_add_(0, Xb.reshape(-1), demb.reshape(-1, n_embd))
    return dC
