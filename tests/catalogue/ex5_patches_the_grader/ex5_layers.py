"""Exercise 5: layers that return zeros, from a file that patches the grading code to pass everything.

The patches land in the sandbox's worker, where this file runs; the grading runs in
the grader's own process, whose modules the worker cannot reach.
"""

import torch

import gradcheck_kit.comparison as comparison
import gradcheck_kit.course.layers as layer_grading
import gradcheck_kit.grading.steps as steps
from gradcheck_kit.report import EXACT, Row

_compare = comparison.compare


def _always_equal(name, actual, expected, *args, **kwargs):
    return _compare(name, expected, expected)


def _always_exact(name, actual, expected, *args, **kwargs):
    return Row(_always_equal(name, actual, expected), EXACT)


def _every_step_exact(student, recording, loss, reference, **kwargs):
    return [_always_exact(name, None, expected) for name, expected in reference.items()]


comparison.compare = _always_equal
for module in (steps, layer_grading):
    module.compare = _always_equal
    module.graded_compare = _always_equal
    module.grade_gradient = _always_exact
    module.grade_steps = _every_step_exact
layer_grading.value_row = _always_exact


class Linear:
    def __init__(self, fan_in, fan_out, bias=True):
        self.weight = torch.zeros((fan_in, fan_out))
        self.bias = torch.zeros(fan_out) if bias else None

    def __call__(self, x):
        self.out = torch.zeros(x.shape[0], self.weight.shape[1])
        return self.out

    def backward(self, dout):
        self.dweight = torch.zeros_like(self.weight)
        self.dbias = None if self.bias is None else torch.zeros_like(self.bias)
        return torch.zeros(dout.shape[0], self.weight.shape[0])

    def parameters(self):
        return [self.weight] + ([] if self.bias is None else [self.bias])

    def grads(self):
        return [self.dweight] + ([] if self.bias is None else [self.dbias])


class BatchNorm1d:
    def __init__(self, dim, eps=1e-5, momentum=0.1):
        self.training = True
        self.gamma = torch.ones(dim)
        self.beta = torch.zeros(dim)
        self.running_mean = torch.zeros(dim)
        self.running_var = torch.ones(dim)

    def __call__(self, x):
        self.out = torch.zeros_like(x)
        return self.out

    def backward(self, dout):
        self.dgamma = torch.zeros_like(self.gamma)
        self.dbeta = torch.zeros_like(self.beta)
        return torch.zeros_like(dout)

    def parameters(self):
        return [self.gamma, self.beta]

    def grads(self):
        return [self.dgamma, self.dbeta]


class Tanh:
    def __call__(self, x):
        self.out = torch.zeros_like(x)
        return self.out

    def backward(self, dout):
        return torch.zeros_like(dout)

    def parameters(self):
        return []

    def grads(self):
        return []
