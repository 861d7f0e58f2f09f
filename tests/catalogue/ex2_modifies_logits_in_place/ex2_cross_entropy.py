"""Exercise 2: turns its logits argument into the gradient in place and returns it."""


def cross_entropy_backward(logits, Yb):
    n = logits.shape[0]
    logits -= logits.max(1, keepdim=True).values
    logits.exp_()
    logits /= logits.sum(1, keepdim=True)
    logits[range(n), Yb] -= 1
    logits /= n
    return logits
