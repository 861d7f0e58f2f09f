"""Time fused against chunked backward passes: the ops, the timing, the memory, and the reports.

Nothing here imports torch until it is used: ``gradcheck-kit bench`` builds its
option parser from :mod:`gradcheck_kit.bench.cli` alongside the other commands.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gradcheck_kit.bench.kernel import KernelTiming, measure_kernel
    from gradcheck_kit.bench.runner import Result, Run, run_benchmark
    from gradcheck_kit.bench.speed import speed_line

__all__ = ["KernelTiming", "Result", "Run", "measure_kernel", "run_benchmark", "speed_line"]

_LAZY = {
    "KernelTiming": "gradcheck_kit.bench.kernel",
    "measure_kernel": "gradcheck_kit.bench.kernel",
    "Result": "gradcheck_kit.bench.runner",
    "Run": "gradcheck_kit.bench.runner",
    "run_benchmark": "gradcheck_kit.bench.runner",
    "speed_line": "gradcheck_kit.bench.speed",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gradcheck_kit.bench' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
