"""The one line ``pytest exercises/`` ends with: the student's fused backward against their chunked one.

The line is made like every grade: the inputs and the autograd reference in the
grading process (:func:`speed_line`), the student's code alone in a sandboxed
worker under the guard (:func:`~gradcheck_kit.bench.timed_passes.time_passes`,
which runs both passes once, then times them round by round and sends back what
they returned and each round's times), and the check that both returned the
right gradients in the grading process again. The ratio is stated with its spread
only when the rounds pin it down (:mod:`gradcheck_kit.bench.ratio`); otherwise the
line says that the two are too close to call, or that the machine was too noisy.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradcheck_kit.bench import timed_passes
from gradcheck_kit.bench.ratio import FASTER, SLOWER, TOLERANCE, TOO_CLOSE, TOO_NOISY, RatioEstimate
from gradcheck_kit.bench.units import format_seconds

if TYPE_CHECKING:
    from gradcheck_kit.sandbox.box import Sandbox

__all__ = ["SPEED_LINE_SECONDS", "describe", "speed_line"]

#: At most this many seconds of rounds once the first ones are timed; they stop as soon as the ratio is known.
SPEED_LINE_SECONDS = 3.0

#: How the line names the two passes.
FUSED = "your fused backward (exercises 2-4)"
CHUNKED = "your chunked one (exercise 1)"

#: The files of the two passes: exercise 1's chunked backward, and the fused ones of exercises 2-4.
FILES = ("ex1_chunked_backward.py", "ex2_cross_entropy.py", "ex3_batchnorm.py", "ex4_embedding.py")


def speed_line(
    impl_dir: Path,
    sandbox: Sandbox,
    device: str = "cpu",
    *,
    seconds: float = SPEED_LINE_SECONDS,
    figures: dict[str, float] | None = None,
) -> str | None:
    """Time the whole MLP backward of ``impl_dir``, fused (exercises 2-4) against chunked (exercise 1).

    Both passes' gradients are checked against autograd at the notebook's size; the
    line is only written when both match.

    Args:
        impl_dir: the directory holding the student's exercise files.
        sandbox: runs the student's code.
        device: where to time them.
        seconds: the most time the rounds may take beyond the first few.
        figures: gets ``speedup``, the median ratio, where the timing was steady enough to state one.

    Returns:
        ``"your fused backward (exercises 2-4): 6.2x faster than your chunked one (exercise 1)
        (5.8x-6.7x over 15 rounds), ..."``, or that the two are too close to call, or that the
        timing was too noisy; None when either pass is missing, fails, or is wrong.
    """
    import torch

    from gradcheck_kit.bench.ops import MLP
    from gradcheck_kit.bench.runner import SEED
    from gradcheck_kit.bench.sizes import NOTEBOOK, plan
    from gradcheck_kit.makemore.model import PARAMETERS
    from gradcheck_kit.sandbox.outcome import unwrap

    files = [Path(impl_dir) / name for name in FILES]
    if not all(file.is_file() for file in files):
        return None
    where = torch.device(device)
    notebook = next(size for size in plan(MLP.name, where.type, quick=True) if NOTEBOOK in size.tags)
    inputs = MLP.make_inputs(notebook.values, where, torch.float32, SEED, True)
    outcome = sandbox.call(
        Path(timed_passes.__file__),
        "time_passes",
        vars(inputs.f),
        tuple(PARAMETERS),
        seconds,
        device=device,
        student_files=files,
    )
    if not outcome.ok:
        return None
    value = unwrap(outcome.value)
    assert inputs.expected is not None
    expected = {name: inputs.expected[name] for name in PARAMETERS}
    if not all(_matches(value["grads"].get(k), expected) for k in ("chunked", "fused")):
        return None
    times = value["seconds"]
    estimate = RatioEstimate.of(times["chunked"], times["fused"])
    if figures is not None and estimate.verdict != TOO_NOISY:
        figures["speedup"] = estimate.median
    return describe(
        estimate,
        chunked=statistics.median(times["chunked"]),
        fused=statistics.median(times["fused"]),
        elapsed=value["elapsed"],
        where=f"{MLP.describe(notebook.values)}, {device}",
    )


def describe(estimate: RatioEstimate, *, chunked: float, fused: float, elapsed: float, where: str) -> str:
    """The speed line for what the rounds showed; a ratio only where they pin it down.

    Args:
        estimate: the rounds' ratios of the chunked pass's time over the fused one's.
        chunked: the chunked pass's median seconds a call.
        fused: the fused pass's median seconds a call.
        elapsed: how long the rounds took, in seconds.
        where: the size and device timed at.
    """
    times = f"{format_seconds(fused)} against {format_seconds(chunked)} a step at the notebook's size ({where})"
    rounds = f"over {estimate.rounds} rounds"
    interval = estimate.interval
    if estimate.verdict == FASTER and interval:
        return (
            f"{FUSED}: {_times(estimate.median)}x faster than {CHUNKED} "
            f"({_times(interval[0])}x-{_times(interval[1])}x {rounds}), {times}"
        )
    if estimate.verdict == SLOWER and interval:
        return (
            f"{FUSED}: {_times(1 / estimate.median)}x slower than {CHUNKED} "
            f"({_times(1 / interval[1])}x-{_times(1 / interval[0])}x {rounds}), {times}"
        )
    if estimate.verdict == TOO_CLOSE and interval:
        return f"{FUSED} against {CHUNKED}: too close to call ({_span(*interval)} {rounds}), {times}"
    noisy = f"{FUSED} against {CHUNKED}: timing too noisy on this machine for a ratio"
    if interval is None:
        return f"{noisy}: {estimate.rounds} rounds in {elapsed:.1f} s are too few for a 95% interval"
    return (
        f"{noisy}: {rounds} in {elapsed:.1f} s its 95% interval is {_span(*interval)}, "
        f"wider than ±{TOLERANCE:.0%} of the median"
    )


def _times(ratio: float) -> str:
    # Two decimals near 1, where "1.0x faster" would read as no difference at all.
    return f"{ratio:.2f}" if ratio < 1.5 else f"{ratio:.1f}"


def _span(low: float, high: float) -> str:
    """An interval of ratios (the chunked pass's time over the fused one's) in words."""
    if low >= 1:
        return f"{_times(low)}x-{_times(high)}x faster"
    if high <= 1:
        return f"{_times(1 / high)}x-{_times(1 / low)}x slower"
    return f"from {_times(1 / low)}x slower to {_times(high)}x faster"


def _matches(grads: Any, expected: dict[str, Any]) -> bool:
    import torch

    from gradcheck_kit.comparison import compare
    from gradcheck_kit.grading.tolerances import grading_tolerances

    if not isinstance(grads, dict):
        return False
    # A gate, not a grade: the tolerance scales with the pass's largest gradient, so a gradient
    # that is rounding noise by nature (db1 behind a batchnorm) passes.
    scale = max(float(t.abs().max()) for t in expected.values() if t.numel())
    for name, reference in expected.items():
        actual = grads.get(name)
        if isinstance(actual, torch.Tensor):
            actual = actual.to(reference.device)
        rtol, atol = grading_tolerances(reference, scale)
        if not compare(name, actual, reference, rtol=rtol, atol=atol).approximate:
            return False
    return True
