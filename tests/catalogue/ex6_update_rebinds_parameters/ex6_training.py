"""Exercise 6: the update assigns p = p - lr * grad, a new tensor bound to the loop's name: the layers never learn."""

import torch
import torch.nn.functional as F


def train_step(C, layers, Xb, Yb, lr):
    emb = C[Xb]
    x = emb.view(emb.shape[0], -1)
    for layer in layers:
        x = layer(x)
    loss = F.cross_entropy(x, Yb)
    n = x.shape[0]
    dx = F.softmax(x, dim=1)
    dx[range(n), Yb] -= 1
    dx /= n
    for layer in reversed(layers):
        dx = layer.backward(dx)
    demb = dx.view(emb.shape)
    dC = torch.zeros_like(C)
    dC.index_add_(0, Xb.view(-1), demb.view(-1, C.shape[1]))
    C -= lr * dC
    for layer in layers:
        for p, grad in zip(layer.parameters(), layer.grads(), strict=True):
            p = p - lr * grad
    return loss.item()


def calibrate(C, layers, X):
    emb = C[X]
    x = emb.view(emb.shape[0], -1)
    for layer in layers:
        if hasattr(layer, "running_mean"):
            layer.running_mean = x.mean(0)
            layer.running_var = x.var(0, unbiased=True)
            layer.training = False
        x = layer(x)
