"""Time a call the way torch.utils.benchmark does, on inputs rotated past the cache.

``torch.utils.benchmark.Timer`` warms up while it picks how many calls to time
per block, synchronises the accelerator around each block, and pins the thread
count. Repeated blocks give a median and an interquartile range. A working set
smaller than the last-level cache would be timed from the cache after the first
call, which no training step sees; rotating through copies of the inputs keeps
each call's inputs out of it.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from gradcheck_kit.bench.units import iqr

__all__ = [
    "FULL",
    "QUICK",
    "Budget",
    "CopyBandwidth",
    "Timing",
    "cache_bytes",
    "copy_bandwidth",
    "measure",
    "rotation",
]

#: Rotate until the inputs cover this many times the last-level cache.
CACHE_MULTIPLE = 2


@dataclass(frozen=True)
class Budget:
    """How long to time each call, and how many input copies to rotate through at most."""

    min_run_time: float
    max_run_time: float
    #: Stop early once the interquartile range is within this fraction of the median.
    threshold: float
    max_rotation: int
    #: Bytes per buffer of the copy that measures the device's bandwidth.
    copy_bytes: int


QUICK = Budget(min_run_time=0.01, max_run_time=0.06, threshold=0.1, max_rotation=2, copy_bytes=64 << 20)
FULL = Budget(min_run_time=0.2, max_run_time=1.5, threshold=0.05, max_rotation=8, copy_bytes=256 << 20)


@dataclass(frozen=True)
class Timing:
    """Seconds per call: the median and interquartile range over the timed blocks."""

    median: float
    iqr: float
    #: Seconds per call in each block.
    times: tuple[float, ...]
    calls_per_block: int

    @property
    def calls(self) -> int:
        return len(self.times) * self.calls_per_block


def measure(calls: Sequence[Callable[[], object]], *, threads: int, budget: Budget) -> Timing:
    """Time one call, rotating through ``calls`` (the same work on different inputs).

    Args:
        calls: zero-argument callables; each timed call runs the next one.
        threads: the torch thread count to time with.
        budget: how long to time for.
    """
    from torch.utils.benchmark import Timer

    cycle = itertools.cycle(calls)

    def step() -> None:
        next(cycle)()

    timer = Timer(stmt="step()", globals={"step": step}, num_threads=threads)
    m = timer.adaptive_autorange(
        threshold=budget.threshold, min_run_time=budget.min_run_time, max_run_time=budget.max_run_time
    )
    return Timing(median=m.median, iqr=m.iqr, times=tuple(m.times), calls_per_block=m.number_per_run)


def _timing(times: Sequence[float], calls_per_block: int) -> Timing:
    return Timing(statistics.median(times), iqr(times), tuple(times), calls_per_block)


def rotation(working_set: int, cache: int, limit: int) -> int:
    """How many input copies make ``working_set``-byte calls miss a ``cache``-byte cache, up to ``limit``."""
    if working_set <= 0:
        return limit
    return max(1, min(limit, math.ceil(CACHE_MULTIPLE * cache / working_set)))


def cache_bytes(device: torch.device) -> int:
    """The device's last-level cache: the GPU's L2, or the CPU's largest cache."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return int(getattr(props, "L2_cache_size", 0)) or 50 << 20
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        sizes.append(_parse_size(entry.read_text().strip()))
    return max(sizes, default=0) or 32 << 20


def _parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text and text[-1].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text) if text.isdigit() else 0


@dataclass(frozen=True)
class CopyBandwidth:
    """``dst.copy_(src)`` of ``nbytes``-byte buffers: it reads and writes each byte once."""

    nbytes: int
    timing: Timing

    @property
    def bytes_per_second(self) -> float:
        return 2 * self.nbytes / self.timing.median


def copy_bandwidth(device: torch.device, *, threads: int, budget: Budget) -> CopyBandwidth:
    """Measure the bandwidth every variant is compared with, in this process and on this device."""
    nbytes = max(budget.copy_bytes, 8 * cache_bytes(device))
    with torch.no_grad():
        src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
        dst = torch.empty_like(src)
        timing = measure([lambda: dst.copy_(src)], threads=threads, budget=budget)
    return CopyBandwidth(nbytes=src.numel() * 4, timing=timing)
