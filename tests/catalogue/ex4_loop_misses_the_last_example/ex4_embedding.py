"""Exercise 4: the loop over the batch stops one example short, so the rows of C the last example read miss a part."""

import torch


def embedding_backward(demb, Xb, num_embeddings):
    dC = torch.zeros(num_embeddings, demb.shape[-1], dtype=demb.dtype, device=demb.device)
    for k in range(Xb.shape[0] - 1):
        for j in range(Xb.shape[1]):
            dC[Xb[k, j]] += demb[k, j]
    return dC
