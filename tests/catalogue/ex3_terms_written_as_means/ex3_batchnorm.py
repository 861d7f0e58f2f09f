"""Exercise 3, right: the mean term as a mean over the batch (n), the variance term over n-1, written apart."""


def batchnorm_backward(dhpreact, bngain, bnraw, bnvar_inv):
    n = dhpreact.shape[0]
    mean_term = dhpreact.mean(0, keepdim=True)
    var_term = bnraw * (dhpreact * bnraw).sum(0, keepdim=True) / (n - 1)
    return bngain * bnvar_inv * (dhpreact - mean_term - var_term)
