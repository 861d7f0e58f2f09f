"""Exercise 2: the gradient of one row's loss, without the 1/n of the mean over the batch."""

import torch.nn.functional as F


def cross_entropy_backward(logits, Yb):
    dlogits = F.softmax(logits, 1)
    dlogits[range(logits.shape[0]), Yb] -= 1
    return dlogits
