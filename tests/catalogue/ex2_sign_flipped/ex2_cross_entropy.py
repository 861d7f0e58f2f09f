"""Exercise 2: the gradient of the log-likelihood, not of the loss: one-hot minus softmax."""

import torch.nn.functional as F


def cross_entropy_backward(logits, Yb):
    n, vocab_size = logits.shape
    return (F.one_hot(Yb, vocab_size) - F.softmax(logits, dim=1)) / n
