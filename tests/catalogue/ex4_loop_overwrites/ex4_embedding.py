"""Exercise 4: the notebook's loop with = where += is needed; repeated characters keep one gradient."""

import torch


def embedding_backward(demb, Xb, num_embeddings):
    dC = torch.zeros(num_embeddings, demb.shape[-1], dtype=demb.dtype)
    for k in range(Xb.shape[0]):
        for j in range(Xb.shape[1]):
            dC[Xb[k, j]] = demb[k, j]
    return dC
