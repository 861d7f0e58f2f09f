"""Exercise 4: the right values, returned as a numpy array."""

import numpy as np


def embedding_backward(demb, Xb, num_embeddings):
    demb, Xb = demb.numpy(), Xb.numpy()
    dC = np.zeros((num_embeddings, demb.shape[-1]), dtype=demb.dtype)
    np.add.at(dC, Xb, demb)
    return dC
