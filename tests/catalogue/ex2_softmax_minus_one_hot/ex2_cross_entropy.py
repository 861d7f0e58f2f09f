"""Exercise 2, right: softmax minus the one-hot labels, over n."""

import torch.nn.functional as F


def cross_entropy_backward(logits, Yb):
    n, vocab_size = logits.shape
    return (F.softmax(logits, dim=1) - F.one_hot(Yb, vocab_size)) / n
