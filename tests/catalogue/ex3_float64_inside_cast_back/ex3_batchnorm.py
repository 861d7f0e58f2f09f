"""Exercise 3, right: computed in float64 and cast back to the dtype it was given."""


def batchnorm_backward(dhpreact, bngain, bnraw, bnvar_inv):
    d, g, x, s = dhpreact.double(), bngain.double(), bnraw.double(), bnvar_inv.double()
    n = d.shape[0]
    dhprebn = g * s / n * (n * d - d.sum(0, keepdim=True) - n / (n - 1) * x * (d * x).sum(0, keepdim=True))
    return dhprebn.to(dhpreact.dtype)
