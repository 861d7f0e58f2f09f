"""Check hand-written backward passes against autograd, tensor by tensor.

The package is imported by its pytest plugin in every pytest run where it is
installed, so nothing here imports torch until a name that needs it is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gradcheck_kit._version import __version__

if TYPE_CHECKING:
    from gradcheck_kit.backward_check import BackwardReport, check_backward
    from gradcheck_kit.comparison import Comparison, assert_grad_close, cmp, compare
    from gradcheck_kit.recording.recording import Recording
    from gradcheck_kit.recording.tracer import record
    from gradcheck_kit.report import Report, compare_grads

__all__ = [
    "BackwardReport",
    "Comparison",
    "Recording",
    "Report",
    "__version__",
    "assert_grad_close",
    "check_backward",
    "cmp",
    "compare",
    "compare_grads",
    "record",
]

_LAZY = {
    "BackwardReport": "gradcheck_kit.backward_check",
    "check_backward": "gradcheck_kit.backward_check",
    "Comparison": "gradcheck_kit.comparison",
    "assert_grad_close": "gradcheck_kit.comparison",
    "cmp": "gradcheck_kit.comparison",
    "compare": "gradcheck_kit.comparison",
    "Recording": "gradcheck_kit.recording.recording",
    "record": "gradcheck_kit.recording.tracer",
    "Report": "gradcheck_kit.report",
    "compare_grads": "gradcheck_kit.report",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gradcheck_kit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
