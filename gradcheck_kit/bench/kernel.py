"""Time one kernel of your own against the memory-bandwidth limit of its device.

A memory-bound backward pass is as fast as it can be when it moves its minimum
bytes at the speed of a plain copy. :func:`measure_kernel` times a call the way
``gradcheck-kit bench`` times its variants and puts it beside a copy measured in
the same process::

    from gradcheck_kit.bench import measure_kernel

    dy, x = torch.randn(2, 16384, 4096, device="cuda").unbind()
    m = measure_kernel(lambda: my_batchnorm_backward(dy, x), min_bytes=3 * dy.nbytes, name="batchnorm backward")
    print(m)  # name: median ± iqr, bandwidth, share of the copy bandwidth (the copy's), peak memory
    m.median, m.bandwidth, m.fraction_of_copy, m.peak_bytes
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from gradcheck_kit.bench.memory import peak_bytes
from gradcheck_kit.bench.report import format_bytes, format_seconds
from gradcheck_kit.bench.timing import FULL, QUICK, CopyBandwidth, Timing, copy_bandwidth, measure

__all__ = ["KernelTiming", "measure_kernel"]


@dataclass(frozen=True)
class KernelTiming:
    """What :func:`measure_kernel` measured: time per call, effective bandwidth, and peak memory."""

    name: str
    timing: Timing
    min_bytes: int
    copy: CopyBandwidth
    #: Bytes the call allocated at its peak, its result included.
    peak_bytes: int

    @property
    def median(self) -> float:
        """Seconds per call."""
        return self.timing.median

    @property
    def bandwidth(self) -> float:
        """Bytes per second: ``min_bytes`` over the median time."""
        return self.min_bytes / self.timing.median

    @property
    def fraction_of_copy(self) -> float:
        """The bandwidth as a fraction of the copy bandwidth measured in this process."""
        return self.bandwidth / self.copy.bytes_per_second

    def __str__(self) -> str:
        return (
            f"{self.name}: {format_seconds(self.median)} ± {format_seconds(self.timing.iqr)}, "
            f"{_rate(self.bandwidth)}, {self.fraction_of_copy:.1%} of copy ({_rate(self.copy.bytes_per_second)}), "
            f"peak {format_bytes(self.peak_bytes)}"
        )


def measure_kernel(
    fn: Callable[[], object] | Sequence[Callable[[], object]],
    *,
    min_bytes: int,
    device: torch.device | str | None = None,
    name: str | None = None,
    threads: int | None = None,
    quick: bool = False,
) -> KernelTiming:
    """Time ``fn`` and weigh its bandwidth against a copy on the same device.

    Args:
        fn: a zero-argument call that runs the kernel once; or several, the same work on
            different inputs, taken in turn so that no call finds its inputs in the cache.
        min_bytes: the least memory traffic the work needs (for example: read the
            inputs once, write the output once).
        device: where it runs; the default is CUDA when available, else the CPU.
        name: what to call it in the summary line (the function's name by default).
        threads: torch's CPU thread count while timing (the current one by default).
        quick: time for a fraction of a second, for a smoke test, not a figure to quote.

    Raises:
        ValueError: when ``fn`` is empty or ``min_bytes`` is not positive.
    """
    calls = list(fn) if isinstance(fn, Sequence) else [fn]
    if not calls:
        raise ValueError("measure_kernel needs at least one call to time")
    if min_bytes <= 0:
        raise ValueError(f"min_bytes must be positive, not {min_bytes}: the bytes the kernel must read and write")
    where = torch.device(device) if device is not None else _default_device()
    threads = threads if threads is not None else torch.get_num_threads()
    budget = QUICK if quick else FULL
    peak = peak_bytes(calls[0], where)  # the first call also compiles or warms up what it uses
    timing = measure(calls, threads=threads, budget=budget)
    copy = copy_bandwidth(where, threads=threads, budget=budget)
    label = name or getattr(calls[0], "__name__", "kernel").replace("<lambda>", "kernel")
    return KernelTiming(label, timing, min_bytes, copy, peak)


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _rate(bytes_per_second: float) -> str:
    for unit, scale in (("TB/s", 1e12), ("GB/s", 1e9), ("MB/s", 1e6)):
        if bytes_per_second >= scale:
            return f"{bytes_per_second / scale:.3g} {unit}"
    return f"{bytes_per_second / 1e3:.3g} kB/s"
