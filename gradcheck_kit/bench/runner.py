"""Run the benchmark: for each op and size, check every variant, then time the ones that are right."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from gradcheck_kit.bench.impl import Implementation
from gradcheck_kit.bench.memory import peak_bytes
from gradcheck_kit.bench.ops import OPS
from gradcheck_kit.bench.sizes import Size, plan
from gradcheck_kit.bench.spec import Inputs, Op, Variant
from gradcheck_kit.bench.timing import Budget, CopyBandwidth, Timing, cache_bytes, copy_bandwidth, measure, rotation
from gradcheck_kit.report import ERROR, NOT_STARTED, OK, SKIPPED, WRONG

__all__ = [
    "Check",
    "Environment",
    "Progress",
    "Result",
    "Run",
    "check_variant",
    "environment",
    "run_benchmark",
    "vet",
    "with_speedups",
]

SEED = 2147483647
#: A variant that cannot run here (Triton without CUDA).
UNAVAILABLE = "unavailable"

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Check:
    """Whether a variant's gradients match the reference: ``status`` is ok, wrong, not started or error."""

    status: str
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(frozen=True)
class Result:
    """One variant of one op at one size: its check and, when it passed, its timing and memory."""

    op: str
    size: str
    params: Mapping[str, int]
    tags: tuple[str, ...]
    variant: str
    label: str
    source: str
    status: str
    min_bytes: int
    message: str = ""
    timing: Timing | None = None
    peak_bytes: int | None = None
    #: The baseline's median over this one's: how many times faster than the chunked variant.
    speedup: float | None = None

    @property
    def median(self) -> float | None:
        return self.timing.median if self.timing else None

    @property
    def bandwidth(self) -> float | None:
        """Effective bytes per second: the op's minimum bytes over the median time."""
        return self.min_bytes / self.timing.median if self.timing else None

    def fraction_of(self, copy: CopyBandwidth | None) -> float | None:
        bandwidth = self.bandwidth
        if bandwidth is None or copy is None:
            return None
        return bandwidth / copy.bytes_per_second


@dataclass(frozen=True)
class Environment:
    device: str
    device_name: str
    threads: int
    dtype: str
    torch: str
    python: str
    quick: bool
    impl: str | None


@dataclass
class Run:
    """Everything one benchmark run measured."""

    environment: Environment
    copy: CopyBandwidth | None
    results: list[Result] = field(default_factory=list)


def environment(device: torch.device, threads: int, dtype: torch.dtype, quick: bool, impl: str | None) -> Environment:
    return Environment(
        device=str(device),
        device_name=_device_name(device),
        threads=threads,
        dtype=str(dtype).removeprefix("torch."),
        torch=torch.__version__,
        python=platform.python_version(),
        quick=quick,
        impl=impl,
    )


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def check_variant(op: Op, variant: Variant, inputs: Inputs) -> Check:
    """Run ``variant`` once and compare its gradients with the reference ones.

    The student's code runs with autograd forbidden, and whatever it raises is
    reported rather than raised: ``NotImplementedError`` means not started.
    """
    from gradcheck_kit.comparison import compare
    from gradcheck_kit.grading.steps import grading_tolerances
    from gradcheck_kit.sandbox.guard import forbid_autograd

    assert inputs.expected is not None
    guard = forbid_autograd() if variant.student else contextlib.nullcontext()
    try:
        with guard:
            out = variant.prepare(inputs)()
    except NotImplementedError as exc:
        return Check(NOT_STARTED, str(exc) or "raises NotImplementedError")
    except Exception as exc:
        if not variant.student:
            raise
        return Check(ERROR, f"{type(exc).__name__}: {exc}")
    if not op.output and not isinstance(out, Mapping):
        return Check(WRONG, f"returns {type(out).__name__}, not a dict of gradients by name")
    got: Mapping[str, Any] = out if isinstance(out, Mapping) else {op.output: out}
    names = variant.checked or tuple(inputs.expected)
    # A gate, not a grade: tolerances scale with the largest gradient of the pass, so a
    # gradient that is rounding noise by nature (db1 behind a batchnorm) passes.
    scale = max(float(t.detach().abs().max()) for t in inputs.expected.values() if t.numel())
    comparisons = []
    for name in names:
        expected = inputs.expected[name]
        rtol, atol = grading_tolerances(expected, scale)
        comparisons.append(compare(name, got.get(name), expected, rtol=rtol, atol=atol))
    if all(c.problem == "missing" for c in comparisons):
        return Check(NOT_STARTED, "returns no gradients")
    for c in comparisons:
        if not c.ok:
            return Check(WRONG, f"{c.name}: {c.message.splitlines()[0]}")
    return Check(OK)


def run_benchmark(
    *,
    device: torch.device,
    budget: Budget,
    quick: bool,
    threads: int,
    impl: Implementation | None = None,
    ops: Sequence[Op] = OPS,
    dtype: torch.dtype = torch.float32,
    progress: Progress | None = None,
) -> Run:
    """Measure the copy bandwidth, then check, time and weigh every variant of ``ops``.

    Args:
        device: where to run.
        budget: how long to time each variant.
        quick: only the small sizes.
        threads: torch's thread count for the whole run.
        impl: the implementation under test, benchmarked beside the reference variants.
        ops: which ops.
        dtype: the floating-point dtype of every input.
        progress: called as each variant starts, with (its number, how many, what it is).
    """
    env = environment(device, threads, dtype, quick, str(impl.directory) if impl else None)
    work = [(op, size) for op in ops for size in plan(op.name, device.type, quick)]
    total = sum(len(op.all_variants(impl, device)) for op, _ in work)
    started = 0

    def starting(op: Op, size: str, variant: Variant) -> None:
        nonlocal started
        started += 1
        if progress is not None:
            progress(started, total, f"{op.title}, {size}: {variant.label}")

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        run = Run(env, copy_bandwidth(device, threads=threads, budget=budget))
        for op, size in work:
            group = list(_run_size(op, size, device, dtype, budget, threads, impl, starting))
            run.results.extend(with_speedups(group, op.baseline))
    finally:
        torch.set_num_threads(previous_threads)
    return run


def _run_size(
    op: Op,
    size: Size,
    device: torch.device,
    dtype: torch.dtype,
    budget: Budget,
    threads: int,
    impl: Implementation | None,
    starting: Callable[[Op, str, Variant], None],
) -> Iterator[Result]:
    params = size.values
    min_bytes = op.bytes_moved(params, dtype)
    copies = rotation(min_bytes, cache_bytes(device), budget.max_rotation)
    input_sets = [op.make_inputs(params, device, dtype, SEED, True)]
    input_sets += [op.make_inputs(params, device, dtype, SEED + i, False) for i in range(1, copies)]
    label = op.describe(params)
    tags = tuple(sorted(size.tags))
    for variant in op.all_variants(impl, device):
        starting(op, label, variant)
        result = functools.partial(
            Result, op=op.name, size=label, params=params, tags=tags, variant=variant.key, label=variant.label,
            source=variant.source, min_bytes=min_bytes,
        )  # fmt: skip
        vetted, calls = vet(op, variant, params, input_sets, device, result)
        if calls:
            vetted = replace(vetted, timing=measure(calls, threads=threads, budget=budget))
        del calls
        yield vetted


def vet(
    op: Op,
    variant: Variant,
    params: Mapping[str, int],
    input_sets: Sequence[Inputs],
    device: torch.device,
    result: Callable[..., Result],
) -> tuple[Result, list[Callable[[], Any]]]:
    """Whether ``variant`` is to be timed here, and if so the calls to time, one per input set.

    A variant that is unavailable, too slow at this size or wrong comes back with
    its status and no calls; one that passes its check comes back OK, with its
    peak memory. ``result`` makes the :class:`Result` from its status and details.
    """
    if variant.unavailable:
        return result(status=UNAVAILABLE, message=variant.unavailable), []
    if variant.fits is not None and not variant.fits(params):
        return result(status=SKIPPED, message="too slow at this size"), []
    # The student's code gets copies: what it writes into its inputs must not reach other variants.
    own = [inputs.own_copy() for inputs in input_sets] if variant.student else list(input_sets)
    check = check_variant(op, variant, own[0])
    if not check.ok:
        return result(status=check.status, message=check.message), []
    calls = [variant.prepare(inputs) for inputs in own]
    return result(status=OK, peak_bytes=peak_bytes(calls[0], device)), calls


def with_speedups(group: list[Result], baseline: str) -> list[Result]:
    """``group`` (one op at one size) with each timed variant's speed-up over the reference ``baseline``."""
    reference = next((r for r in group if r.variant == baseline and r.source == "reference"), None)
    if reference is None or reference.median is None:
        return group
    return [replace(r, speedup=reference.median / r.median) if r.median else r for r in group]


def default_threads() -> int:
    """Every core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS and Windows have no affinity mask
        return os.cpu_count() or 1


def stderr_is_tty() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())
