"""The one line ``pytest exercises/`` ends with: the student's fused backward against their chunked one.

The line is made like every grade: the inputs and the autograd reference in the
grading process (:func:`speed_line`), the student's code alone in a sandboxed
worker under the guard (:func:`time_passes`, which runs both passes once, times
them, and sends back what they returned and how long they took), and the check
that both returned the right gradients in the grading process again.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gradcheck_kit.sandbox.box import Sandbox

__all__ = ["SPEED_LINE_SECONDS", "speed_line", "time_passes"]

#: Seconds of timing, both passes taking turns: a fraction of a second, so grading stays fast.
SPEED_LINE_SECONDS = 0.15

#: The files of the two passes: exercise 1's chunked backward, and the fused ones of exercises 2-4.
FILES = ("ex1_chunked_backward.py", "ex2_cross_entropy.py", "ex3_batchnorm.py", "ex4_embedding.py")


def speed_line(impl_dir: Path, sandbox: Sandbox, device: str = "cpu") -> str | None:
    """Time the whole MLP backward of ``impl_dir``, fused (exercises 2-4) against chunked (exercise 1).

    Both passes' gradients are checked against autograd at the notebook's size; the
    line is only written when both match.

    Args:
        impl_dir: the directory holding the student's exercise files.
        sandbox: runs the student's code.
        device: where to time them.

    Returns:
        ``"your fused backward (exercises 2-4): 3.1x faster than your chunked one (exercise 1), ..."``,
        or None when either is missing, fails, or is wrong.
    """
    import torch

    from gradcheck_kit.bench.ops import MLP
    from gradcheck_kit.bench.runner import SEED
    from gradcheck_kit.bench.sizes import NOTEBOOK, plan
    from gradcheck_kit.bench.units import format_seconds, times_faster
    from gradcheck_kit.makemore.model import PARAMETERS
    from gradcheck_kit.sandbox.outcome import unwrap

    files = [Path(impl_dir) / name for name in FILES]
    if not all(file.is_file() for file in files):
        return None
    where = torch.device(device)
    notebook = next(size for size in plan(MLP.name, where.type, quick=True) if NOTEBOOK in size.tags)
    inputs = MLP.make_inputs(notebook.values, where, torch.float32, SEED, True)
    outcome = sandbox.call(
        Path(__file__), "time_passes", vars(inputs.f), SPEED_LINE_SECONDS, device=device, student_files=files
    )
    if not outcome.ok:
        return None
    value = unwrap(outcome.value)
    assert inputs.expected is not None
    expected = {name: inputs.expected[name] for name in PARAMETERS}
    if not all(_matches(value["grads"].get(k), expected) for k in ("chunked", "fused")):
        return None
    slow, fast = value["seconds"]["chunked"], value["seconds"]["fused"]
    return (
        f"your fused backward (exercises 2-4): {times_faster(slow, fast)} your chunked one (exercise 1), "
        f"{format_seconds(fast)} against {format_seconds(slow)} a step at the notebook's size "
        f"({MLP.describe(notebook.values)}, {device})"
    )


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


def time_passes(
    ex1: ModuleType, ex2: ModuleType, ex3: ModuleType, ex4: ModuleType, f: dict[str, Any], seconds: float
) -> dict[str, Any]:
    """In the worker: run each pass once, then time both in turn; return their gradients and median times."""
    import torch

    from gradcheck_kit.bench.mlp import fused_pass
    from gradcheck_kit.bench.timing import measure_in_turn
    from gradcheck_kit.makemore.model import PARAMETERS

    # Each pass gets inputs of its own: a student's code may write into what it is given.
    own = {"chunked": SimpleNamespace(**f), "fused": SimpleNamespace(**{k: _copy(v) for k, v in f.items()})}
    calls = {
        "chunked": lambda: ex1.chunked_backward(own["chunked"]),
        "fused": lambda: fused_pass(
            own["fused"], ex2.cross_entropy_backward, ex3.batchnorm_backward, ex4.embedding_backward
        ),
    }
    grads = {}
    for key, call in calls.items():
        out = call()
        grads[key] = {k: out[k] for k in PARAMETERS if isinstance(out, dict) and k in out}
    # One thread: at the notebook's size no op has enough work to split, and on a busy
    # machine a second thread waiting for a core costs more than the whole op.
    on_cuda = any(isinstance(v, torch.Tensor) and v.is_cuda for v in f.values())
    synchronize = torch.cuda.synchronize if on_cuda else None
    timings = measure_in_turn(calls, seconds=seconds, threads=1, synchronize=synchronize)
    return {"grads": grads, "seconds": {key: t.median for key, t in timings.items()}}


def _copy(value: Any) -> Any:
    return value.clone() if hasattr(value, "clone") else value
