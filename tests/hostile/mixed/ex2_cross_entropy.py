"""Exercise 2 that never returns: an infinite loop, stopped by the time limit."""


def cross_entropy_backward(logits, Yb):
    while True:
        pass
