"""The one line ``pytest exercises/`` ends with: the student's fused backward against their chunked one."""

from __future__ import annotations

from pathlib import Path

__all__ = ["SPEED_LINE_SECONDS", "speed_line"]

#: Seconds of timing, both passes taking turns: a fraction of a second, so grading stays fast.
SPEED_LINE_SECONDS = 0.15


def speed_line(impl_dir: Path, device: str = "cpu") -> str | None:
    """Time the whole MLP backward of ``impl_dir``, fused (exercises 2-4) against chunked (exercise 1).

    Both are checked first, at the notebook's size; the line is only written when
    both match autograd.

    Args:
        impl_dir: the directory holding the student's exercise files.
        device: where to time them.

    Returns:
        ``"your fused backward (exercises 2-4): 3.1x faster than your chunked one (exercise 1), ..."``,
        or None when either is missing, not started or wrong.
    """
    import torch

    from gradcheck_kit.bench.impl import Implementation
    from gradcheck_kit.bench.ops import MLP
    from gradcheck_kit.bench.runner import SEED, check_variant
    from gradcheck_kit.bench.sizes import NOTEBOOK, plan
    from gradcheck_kit.bench.timing import measure_in_turn
    from gradcheck_kit.bench.units import format_seconds, times_faster

    where = torch.device(device)
    variants = {v.key: v for v in MLP.impl_variants(Implementation(impl_dir), where)}
    chunked, fused = variants.get("impl-chunked"), variants.get("impl-fused")
    if chunked is None or fused is None:
        return None
    notebook = next(size for size in plan(MLP.name, where.type, quick=True) if NOTEBOOK in size.tags)
    chunked_inputs = MLP.make_inputs(notebook.values, where, torch.float32, SEED, True)
    # Each gets inputs of its own: a student's code may write into what it is given.
    fused_inputs = chunked_inputs.own_copy()
    if not (check_variant(MLP, chunked, chunked_inputs).ok and check_variant(MLP, fused, fused_inputs).ok):
        return None
    calls = {"chunked": chunked.prepare(chunked_inputs), "fused": fused.prepare(fused_inputs)}
    # One thread: at the notebook's size no op has enough work to split, and on a busy
    # machine a second thread waiting for a core costs more than the whole op.
    synchronize = torch.cuda.synchronize if where.type == "cuda" else None
    timings = measure_in_turn(calls, seconds=SPEED_LINE_SECONDS, threads=1, synchronize=synchronize)
    slow, fast = timings["chunked"].median, timings["fused"].median
    return (
        f"your fused backward (exercises 2-4): {times_faster(slow, fast)} your chunked one (exercise 1), "
        f"{format_seconds(fast)} against {format_seconds(slow)} a step at the notebook's size "
        f"({MLP.describe(notebook.values)}, {device})"
    )
