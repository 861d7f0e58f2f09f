"""Exercise 6: train the deep MLP with your own backward pass, then calibrate batchnorm.

The model is an embedding table ``C`` (vocab_size, n_embd) and the layers of
exercise 5 (five ``Linear -> BatchNorm1d -> Tanh`` blocks, then ``Linear ->
BatchNorm1d``). Training runs under ``torch.no_grad()``: nothing requires grad,
and ``loss.backward()`` is not available.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def train_step(C: torch.Tensor, layers: list, Xb: torch.Tensor, Yb: torch.Tensor, lr: float) -> float:
    """One step of gradient descent on a minibatch, with the backward pass written by hand.

    Args:
        C: (vocab_size, n_embd) embedding table, updated in place.
        layers: the exercise 5 layers; their parameters are updated in place.
        Xb: (n, block_size) contexts.
        Yb: (n,) next characters.
        lr: learning rate.

    Returns:
        The minibatch loss before the update, as a float.
    """
    # forward pass
    emb = C[Xb]
    x = emb.view(emb.shape[0], -1)
    for layer in layers:
        x = layer(x)
    loss = F.cross_entropy(x, Yb)

    # backward pass: exercise 2 for the loss ...
    n = x.shape[0]
    dx = F.softmax(x, dim=1)
    dx[range(n), Yb] -= 1
    dx /= n
    # ... exercise 5 through the layers, last one first ...
    for layer in reversed(layers):
        dx = layer.backward(dx)
    # ... and exercise 4 for the embedding lookup, after undoing the view.
    demb = dx.view(emb.shape)
    dC = torch.zeros_like(C)
    dC.index_add_(0, Xb.view(-1), demb.view(-1, C.shape[1]))

    # update, in place, so that the caller's tensors are the ones that learn
    C -= lr * dC
    for layer in layers:
        for p, grad in zip(layer.parameters(), layer.grads(), strict=True):
            p -= lr * grad
    return loss.item()


def calibrate(C: torch.Tensor, layers: list, X: torch.Tensor) -> None:
    """Set each batchnorm's running statistics to those of the whole training set; leave it in eval mode.

    Args:
        C: (vocab_size, n_embd) embedding table.
        layers: the exercise 5 layers.
        X: (N, block_size) every context of the training split.
    """
    emb = C[X]
    x = emb.view(emb.shape[0], -1)
    for layer in layers:
        if hasattr(layer, "running_mean"):
            # The statistics of this layer's input over the whole set replace the
            # momentum-averaged ones; in eval mode the forward pass then normalises
            # exactly as a batch of the whole set would.
            layer.running_mean = x.mean(0)
            layer.running_var = x.var(0, unbiased=True)
            layer.training = False
        x = layer(x)
