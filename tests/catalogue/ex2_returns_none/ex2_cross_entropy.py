"""Exercise 2: the right gradient, but the function ends without a return statement."""

import torch.nn.functional as F


def cross_entropy_backward(logits, Yb):
    n = logits.shape[0]
    dlogits = F.softmax(logits, 1)
    dlogits[range(n), Yb] -= 1
    dlogits /= n
