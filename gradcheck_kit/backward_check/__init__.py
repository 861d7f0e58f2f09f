"""Check a custom backward kernel against PyTorch, with PyTorch's own error as the yardstick.

``check_backward(forward, backward, inputs)`` runs the reference in float64, PyTorch's
autograd at each dtype and the kernel at the same dtype, over shapes drawn by hypothesis,
and passes a gradient when, band by band of magnitudes, its error is at most ``k`` times
PyTorch's (see :mod:`gradcheck_kit.backward_check.error` for the criterion and why).
"""

from __future__ import annotations

from gradcheck_kit.backward_check.draw import shapes, sizes
from gradcheck_kit.backward_check.error import Band, ErrorMeasure, measure_error
from gradcheck_kit.backward_check.report import BackwardReport, GradientCheck, KernelTime
from gradcheck_kit.backward_check.runner import check_backward

__all__ = [
    "BackwardReport",
    "Band",
    "ErrorMeasure",
    "GradientCheck",
    "KernelTime",
    "check_backward",
    "measure_error",
    "shapes",
    "sizes",
]
