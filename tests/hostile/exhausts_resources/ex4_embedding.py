"""Exercise 4 returning a set of integers that all hash alike: built in the grader, it would take quadratic time.

The report behind this case used 100,000 of them; building them takes the worker's own
time (under its limit), so here there are fewer. A reply carries no sets at all.
"""


def embedding_backward(demb, Xb, vocab_size):
    return {i * (2**61 - 1) for i in range(2000)}
