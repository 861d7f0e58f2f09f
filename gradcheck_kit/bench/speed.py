"""The one line ``pytest exercises/`` ends with: the student's fused backward against their chunked one."""

from __future__ import annotations

from pathlib import Path

from gradcheck_kit.bench.timing import Budget

__all__ = ["SPEED_LINE_BUDGET", "speed_line"]

#: A fraction of a second per variant, so grading stays fast.
SPEED_LINE_BUDGET = Budget(min_run_time=0.02, max_run_time=0.15, threshold=0.1, max_rotation=1, copy_bytes=0)


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
    from gradcheck_kit.bench.report import format_seconds, times_faster
    from gradcheck_kit.bench.runner import SEED, check_variant
    from gradcheck_kit.bench.sizes import NOTEBOOK, plan
    from gradcheck_kit.bench.timing import measure

    where = torch.device(device)
    variants = {v.key: v for v in MLP.impl_variants(Implementation(impl_dir), where)}
    chunked, fused = variants.get("impl-chunked"), variants.get("impl-fused")
    if chunked is None or fused is None:
        return None
    notebook = next(size for size in plan(MLP.name, where.type, quick=True) if NOTEBOOK in size.tags)
    # Each gets inputs of its own: a student's code may write into what it is given.
    chunked_inputs, fused_inputs = (
        MLP.make_inputs(notebook.values, where, torch.float32, SEED, True) for _ in range(2)
    )
    if not (check_variant(MLP, chunked, chunked_inputs).ok and check_variant(MLP, fused, fused_inputs).ok):
        return None
    threads = torch.get_num_threads()
    calls = {"chunked": chunked.prepare(chunked_inputs), "fused": fused.prepare(fused_inputs)}
    medians: dict[str, list[float]] = {"chunked": [], "fused": []}
    # Alternating, twice each, and keeping the better median: a burst of load from
    # elsewhere on the machine then slows one measurement, not one variant.
    for key in ("chunked", "fused", "chunked", "fused"):
        medians[key].append(measure([calls[key]], threads=threads, budget=SPEED_LINE_BUDGET).median)
    slow, fast = min(medians["chunked"]), min(medians["fused"])
    return (
        f"your fused backward (exercises 2-4): {times_faster(slow, fast)} your chunked one (exercise 1), "
        f"{format_seconds(fast)} against {format_seconds(slow)} a step at the notebook's size "
        f"({MLP.describe(notebook.values)}, {device})"
    )
