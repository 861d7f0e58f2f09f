"""Exercise 3: computed in float64 for accuracy, and returned in float64."""


def batchnorm_backward(dhpreact, bngain, bnraw, bnvar_inv):
    d, g, x, s = dhpreact.double(), bngain.double(), bnraw.double(), bnvar_inv.double()
    n = d.shape[0]
    return g * s / n * (n * d - d.sum(0, keepdim=True) - n / (n - 1) * x * (d * x).sum(0, keepdim=True))
