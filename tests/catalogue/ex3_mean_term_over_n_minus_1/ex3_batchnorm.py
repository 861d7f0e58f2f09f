"""Exercise 3: the mean term divided by n-1 like the variance's; the batch mean divides by n."""


def batchnorm_backward(dhpreact, bngain, bnraw, bnvar_inv):
    n = dhpreact.shape[0]
    mean_term = dhpreact.sum(0, keepdim=True) / (n - 1)
    var_term = bnraw * (dhpreact * bnraw).sum(0, keepdim=True) / (n - 1)
    return bngain * bnvar_inv * (dhpreact - mean_term - var_term)
