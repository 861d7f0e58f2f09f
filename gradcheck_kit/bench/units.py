"""Plain numbers of the bench: the spread of a sample, and times, sizes and ratios as its tables print them.

It imports nothing heavy, so that what only reports (``bench --grading``) does not load torch.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["format_bytes", "format_seconds", "iqr", "times_faster"]


def iqr(values: Sequence[float]) -> float:
    """The interquartile range, interpolated as numpy's percentiles are; 0 for a single value."""
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q3 - q1


def format_seconds(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def format_bytes(nbytes: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes:.0f} B"


def times_faster(slow: float, fast: float) -> str:
    """``"3.1x faster than"`` when ``fast`` is the shorter time, else ``"1.2x slower than"``."""
    ratio = slow / fast
    return f"{ratio:.1f}x faster than" if ratio >= 1 else f"{1 / ratio:.1f}x slower than"
