"""Exercise 3: a matrix product where an elementwise product was meant; the shapes do not fit."""


def batchnorm_backward(dhpreact, bngain, bnraw, bnvar_inv):
    n = dhpreact.shape[0]
    var_term = bnraw @ (dhpreact * bnraw).sum(0, keepdim=True)
    return bngain * bnvar_inv / n * (n * dhpreact - dhpreact.sum(0, keepdim=True) - n / (n - 1) * var_term)
