"""Exercise 4: the backward pass of the embedding lookup.

Forward::

    emb = C[Xb]    # C (num_embeddings, n_embd), Xb (n, block_size) integers -> emb (n, block_size, n_embd)

Row Xb[k, j] of C is copied into emb[k, j]. Send every gradient row of demb
back to the row of C it came from. The same character appears many times in a
batch: what must happen to a row of C that was picked more than once?
Shapes: demb (n, block_size, n_embd), Xb (n, block_size); dC (num_embeddings, n_embd).
"""

from __future__ import annotations

import torch


def embedding_backward(demb: torch.Tensor, Xb: torch.Tensor, num_embeddings: int) -> torch.Tensor:
    """Return dloss/dC for ``emb = C[Xb]``."""
    raise NotImplementedError("Exercise 4: scatter demb back into the rows of dC")
