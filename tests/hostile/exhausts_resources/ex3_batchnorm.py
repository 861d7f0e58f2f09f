"""Exercise 3 lifting its own memory limit, then taking 16 GiB."""

import resource

import torch


def batchnorm_backward(dhpreact, bngain, bnraw, bnvar_inv):
    try:
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except ValueError:
        pass
    big = torch.empty(2**32)
    return big[: dhpreact.numel()].reshape(dhpreact.shape)
