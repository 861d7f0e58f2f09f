"""Exercise 2: a loop over the rows that never moves on to the next row."""

import torch.nn.functional as F


def cross_entropy_backward(logits, Yb):
    n = logits.shape[0]
    dlogits = F.softmax(logits, 1)
    i = 0
    while i < n:
        dlogits[i, Yb[i]] -= 1
    return dlogits / n
