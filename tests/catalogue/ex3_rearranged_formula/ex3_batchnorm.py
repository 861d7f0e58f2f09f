"""Exercise 3, right: the formula with the 1/n and n/(n-1) moved inside, as means over the batch."""


def batchnorm_backward(dhpreact, bngain, bnraw, bnvar_inv):
    n = dhpreact.shape[0]
    dbnraw = bngain * dhpreact
    mean_term = dbnraw.mean(0, keepdim=True)
    var_term = bnraw * (dbnraw * bnraw).sum(0, keepdim=True) / (n - 1)
    return bnvar_inv * (dbnraw - mean_term - var_term)
