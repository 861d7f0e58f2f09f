"""Exercise 4: moves everything to the cpu for the Python loop and returns dC there."""

import torch


def embedding_backward(demb, Xb, num_embeddings):
    demb, Xb = demb.cpu(), Xb.cpu()
    dC = torch.zeros(num_embeddings, demb.shape[-1])
    for k in range(Xb.shape[0]):
        for j in range(Xb.shape[1]):
            dC[Xb[k, j]] += demb[k, j]
    return dC
