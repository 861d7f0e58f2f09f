"""Exercise 6: train the deep MLP with your own backward pass, then calibrate batchnorm.

The model is an embedding table ``C`` (vocab_size, n_embd) and the layers of
exercise 5 (five ``Linear -> BatchNorm1d -> Tanh`` blocks, then ``Linear ->
BatchNorm1d``). Training runs under ``torch.no_grad()``: nothing requires grad,
and ``loss.backward()`` is not available.

Graded by training this model and an autograd twin side by side from the same
start on the same minibatches: after a few steps every parameter must match.
A short run must then bring the loss below a target, and ``calibrate`` must
give each batchnorm the statistics of the whole training set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def train_step(C: torch.Tensor, layers: list, Xb: torch.Tensor, Yb: torch.Tensor, lr: float) -> float:
    """One step of gradient descent on a minibatch, with the backward pass written by hand.

    Forward::

        emb = C[Xb]                          # (n, block_size, n_embd)
        x = emb.view(emb.shape[0], -1)       # (n, block_size * n_embd)
        for layer in layers:
            x = layer(x)                     # x is now the logits, (n, vocab_size)
        loss = F.cross_entropy(x, Yb)

    Backward: dlogits from exercise 2; then ``layer.backward`` of each layer, last
    one first; then dC from exercise 4, after viewing the gradient back to the
    shape of ``emb``.

    Update, in place, so that the caller's tensors learn::

        C -= lr * dC
        for p, grad in zip(layer.parameters(), layer.grads()): p -= lr * grad

    Args:
        C: (vocab_size, n_embd) embedding table, updated in place.
        layers: the exercise 5 layers; their parameters are updated in place.
        Xb: (n, block_size) contexts.
        Yb: (n,) next characters.
        lr: learning rate.

    Returns:
        The minibatch loss before the update, as a float.
    """
    raise NotImplementedError("Exercise 6: train_step: forward, your own backward, update in place")


def calibrate(C: torch.Tensor, layers: list, X: torch.Tensor) -> None:
    """Set each batchnorm's running statistics to those of the whole training set; leave it in eval mode.

    Pass all of ``X`` through the model once. At each batchnorm layer (the ones
    with ``running_mean``), measure the mean and Bessel-corrected variance of its
    input over the whole set, store them as ``running_mean`` and ``running_var``,
    and set ``training = False`` before calling it, so that the forward pass uses
    them instead of averaging them into the buffers.

    Args:
        C: (vocab_size, n_embd) embedding table.
        layers: the exercise 5 layers.
        X: (N, block_size) every context of the training split.
    """
    raise NotImplementedError("Exercise 6: calibrate: the running statistics of the whole training set")
