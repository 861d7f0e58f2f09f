"""Exercise 3 calling sys.exit(0), as a script would."""

import sys


def batchnorm_backward(dhpreact, bngain, bnraw, bnvar_inv):
    sys.exit(0)
