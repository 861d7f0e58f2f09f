"""The benchmark as separate cases, one per device, op, size and variant, for pytest-benchmark to time.

``exercises/test_benchmarks.py`` parametrizes over :func:`benchmark_cases` and
times :attr:`Prepared.step`; the ids stay the same from run to run, so
``--benchmark-compare`` matches each case with its earlier self.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Case", "NotTimed", "Prepared", "benchmark_cases", "copy_bytes_per_second", "prepare"]


class NotTimed(Exception):
    """The case is not timed, and why: unavailable here, too slow at this size, or not passing its check."""


@dataclass(frozen=True)
class Case:
    device: str
    op: str
    params: tuple[tuple[str, int], ...]
    variant: str

    @property
    def id(self) -> str:
        size = "-".join(f"{k}{v}" for k, v in self.params)
        return f"{self.device}-{self.op}-{size}-{self.variant}"

    @property
    def group(self) -> str:
        from gradcheck_kit.bench.ops import get_op

        op = get_op(self.op)
        return f"{op.title} {op.describe(dict(self.params))} ({self.device})"


@dataclass(frozen=True)
class Prepared:
    """A case ready to time: ``step`` runs the variant once on the next inputs, and waits for the device."""

    step: Callable[[], None]
    min_bytes: int
    info: dict[str, Any]


def benchmark_cases(devices: Sequence[str], impl_dir: Path | None) -> list[Case]:
    """Every case of a full ``gradcheck-kit bench`` run on ``devices``, inputs shared by neighbours."""
    import torch

    from gradcheck_kit.bench.impl import Implementation
    from gradcheck_kit.bench.ops import OPS
    from gradcheck_kit.bench.sizes import plan

    impl = Implementation(impl_dir) if impl_dir is not None else None
    found = []
    for device in devices:
        where = torch.device(device)
        for op in OPS:
            for size in plan(op.name, where.type, quick=False):
                for variant in op.all_variants(impl, where):
                    found.append(Case(device, op.name, size.params, variant.key))
    return found


def prepare(case: Case, impl_dir: Path | None) -> Prepared:
    """Check the case's variant, measure its peak memory, and return what to time.

    Raises:
        NotTimed: when the variant cannot or should not be timed.
    """
    import torch

    from gradcheck_kit.bench.impl import Implementation
    from gradcheck_kit.bench.memory import peak_bytes
    from gradcheck_kit.bench.ops import get_op
    from gradcheck_kit.bench.runner import check_variant

    op = get_op(case.op)
    device = torch.device(case.device)
    params = dict(case.params)
    impl = Implementation(impl_dir) if impl_dir is not None else None
    variant = next((v for v in op.all_variants(impl, device) if v.key == case.variant), None)
    if variant is None:
        raise NotTimed(f"{impl_dir} has no file for {case.variant}")
    if variant.unavailable:
        raise NotTimed(variant.unavailable)
    if variant.fits is not None and not variant.fits(params):
        raise NotTimed("too slow at this size")
    input_sets = _input_sets(case.op, case.params, case.device)
    check = check_variant(op, variant, input_sets[0])
    if not check.ok:
        raise NotTimed(f"not timed: {check.status}" + (f": {check.message}" if check.message else ""))
    calls = [variant.prepare(inputs) for inputs in input_sets]
    min_bytes = op.bytes_moved(params, torch.float32)
    info = {
        "op": case.op,
        "size": op.describe(params),
        "params": params,
        "variant": variant.label,
        "source": variant.source,
        "device": case.device,
        "threads": torch.get_num_threads(),
        "min_bytes": min_bytes,
        "peak_bytes": peak_bytes(calls[0], device),
        "inputs_rotated": len(calls),
    }
    return Prepared(_step(calls, device), min_bytes, info)


def _step(calls: Sequence[Callable[[], object]], device: Any) -> Callable[[], None]:
    import torch

    cycle = itertools.cycle(calls)
    if device.type == "cuda":

        def step() -> None:
            next(cycle)()
            torch.cuda.synchronize(device)

    else:

        def step() -> None:
            next(cycle)()

    return step


@functools.lru_cache(maxsize=1)
def _input_sets(op_name: str, params: tuple[tuple[str, int], ...], device: str) -> list[Any]:
    """The rotated input sets of one op and size; neighbouring cases share them, one size at a time."""
    import torch

    from gradcheck_kit.bench.ops import get_op
    from gradcheck_kit.bench.runner import SEED
    from gradcheck_kit.bench.timing import FULL, cache_bytes, rotation

    op = get_op(op_name)
    where = torch.device(device)
    values = dict(params)
    copies = rotation(op.bytes_moved(values, torch.float32), cache_bytes(where), FULL.max_rotation)
    return [op.make_inputs(values, where, torch.float32, SEED + i, i == 0) for i in range(copies)]


@functools.cache
def copy_bytes_per_second(device: str) -> float:
    """The copy bandwidth of ``device``, measured once per process."""
    import torch

    from gradcheck_kit.bench.timing import FULL, copy_bandwidth

    return copy_bandwidth(torch.device(device), threads=torch.get_num_threads(), budget=FULL).bytes_per_second
