"""Exercise 4, right: index_put_ with accumulate=True adds every repeated row, unlike dC[Xb] += demb."""

import torch


def embedding_backward(demb, Xb, num_embeddings):
    dC = torch.zeros(num_embeddings, demb.shape[-1], dtype=demb.dtype, device=demb.device)
    dC.index_put_((Xb,), demb, accumulate=True)
    return dC
