"""The benchmark as separate cases, one per device, op, size and variant, for pytest-benchmark to time.

``exercises/test_benchmarks.py`` parametrizes over :func:`benchmark_cases` and
times :attr:`Prepared.step`; the ids stay the same from run to run, so
``--benchmark-compare`` matches each case with its earlier self. A
:class:`Collected` gathers what was timed into the tables of ``gradcheck-kit
bench``: speed-up, GB/s, share of the copy bandwidth and peak memory, which
pytest-benchmark's own table does not show.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gradcheck_kit.bench.runner import Result, Run
    from gradcheck_kit.bench.timing import CopyBandwidth, Timing

__all__ = ["Case", "Collected", "NotTimed", "Prepared", "benchmark_cases", "copy_bandwidth_of", "prepare"]


class NotTimed(Exception):
    """The case is not timed, and why: unavailable here, too slow at this size, or not passing its check."""

    def __init__(self, result: Result) -> None:
        from gradcheck_kit.bench.runner import UNAVAILABLE
        from gradcheck_kit.report import SKIPPED

        reason = result.message
        if result.status not in (UNAVAILABLE, SKIPPED):  # the message says it all
            reason = f"not timed: {result.status}" + (f": {reason}" if reason else "")
        super().__init__(reason)
        self.result = result


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
    #: The case as a benchmark result, checked and weighed; :meth:`Collected.add_timed` adds the timing.
    result: Result


def benchmark_cases(devices: Sequence[str], impl_dir: Path | None) -> list[Case]:
    """Every case of a full ``gradcheck-kit bench`` run on ``devices``, inputs shared by neighbours."""
    import torch

    from gradcheck_kit.bench.ops import OPS
    from gradcheck_kit.bench.sizes import plan

    impl = _implementation(impl_dir) if impl_dir is not None else None
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

    from gradcheck_kit.bench.ops import get_op
    from gradcheck_kit.bench.runner import UNAVAILABLE, Result, vet
    from gradcheck_kit.bench.sizes import plan
    from gradcheck_kit.report import OK

    op = get_op(case.op)
    device = torch.device(case.device)
    params = dict(case.params)
    impl = _implementation(impl_dir) if impl_dir is not None else None
    variant = next((v for v in op.all_variants(impl, device) if v.key == case.variant), None)
    min_bytes = op.bytes_moved(params, torch.float32)
    tags = next((tuple(sorted(s.tags)) for s in plan(case.op, device.type, quick=False) if s.params == case.params), ())
    result = functools.partial(
        Result, op=case.op, size=op.describe(params), params=params, tags=tags, variant=case.variant,
        label=variant.label if variant else case.variant, source=variant.source if variant else "",
        min_bytes=min_bytes,
    )  # fmt: skip
    if variant is None:
        raise NotTimed(result(status=UNAVAILABLE, message=f"{impl_dir} has no file for {case.variant}"))
    vetted, calls = vet(op, variant, params, _input_sets(case.op, case.params, case.device), device, result)
    if vetted.status != OK:
        raise NotTimed(vetted)
    info = {
        "op": case.op,
        "size": op.describe(params),
        "params": params,
        "variant": variant.label,
        "source": variant.source,
        "device": case.device,
        "threads": torch.get_num_threads(),
        "min_bytes": min_bytes,
        "peak_bytes": vetted.peak_bytes,
        "inputs_rotated": len(calls),
    }
    return Prepared(_step(calls, device), min_bytes, info, vetted)


@dataclass
class Collected:
    """The cases of one pytest session as benchmark results, per device, in the order they ran."""

    impl_dir: Path | None
    results: dict[str, list[Result]] = field(default_factory=dict)

    def add_timed(self, device: str, prepared: Prepared, timing: Timing) -> None:
        self.results.setdefault(device, []).append(replace(prepared.result, timing=timing))

    def add_untimed(self, device: str, result: Result) -> None:
        self.results.setdefault(device, []).append(result)

    def runs(self) -> list[Run]:
        """One run per device, with speed-ups and the copy bandwidth measured in this process."""
        import torch

        from gradcheck_kit.bench.ops import get_op
        from gradcheck_kit.bench.runner import Run, environment, with_speedups

        runs = []
        for device, results in self.results.items():
            where = torch.device(device)
            impl = str(self.impl_dir) if self.impl_dir is not None else None
            env = environment(where, torch.get_num_threads(), torch.float32, False, impl)
            groups: dict[tuple[str, str], list[Result]] = {}
            for r in results:
                groups.setdefault((r.op, r.size), []).append(r)
            run = Run(env, copy_bandwidth_of(device))
            for (op, _), group in groups.items():
                run.results.extend(with_speedups(group, get_op(op).baseline))
            runs.append(run)
        return runs


@functools.cache
def _implementation(impl_dir: Path) -> Any:
    """One :class:`Implementation` per folder, so that each file is imported once per session."""
    from gradcheck_kit.bench.impl import Implementation

    return Implementation(impl_dir)


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
def copy_bandwidth_of(device: str) -> CopyBandwidth:
    """The copy bandwidth of ``device``, measured once per process."""
    import torch

    from gradcheck_kit.bench.timing import FULL, copy_bandwidth

    return copy_bandwidth(torch.device(device), threads=torch.get_num_threads(), budget=FULL)
