"""Exercise 2 importing a module that does not exist."""

import torch_backprop_answers  # noqa: F401


def cross_entropy_backward(logits, Yb):
    return torch_backprop_answers.dlogits(logits, Yb)
