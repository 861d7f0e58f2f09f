"""Exercise 2, right: the probabilities as exp(log_softmax), minus 1 at each label, over n."""

import torch
import torch.nn.functional as F


def cross_entropy_backward(logits, Yb):
    n = logits.shape[0]
    dlogits = F.log_softmax(logits, dim=1).exp()
    dlogits[torch.arange(n), Yb] -= 1
    return dlogits / n
