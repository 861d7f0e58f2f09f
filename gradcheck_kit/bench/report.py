"""Show a benchmark run: a table per op, a JSON document, and a log-log chart of time against size."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gradcheck_kit.bench.ops import OPS
from gradcheck_kit.bench.runner import Result, Run
from gradcheck_kit.bench.sizes import sweep_tag
from gradcheck_kit.bench.units import format_bytes, format_seconds, times_faster
from gradcheck_kit.report import OK

__all__ = [
    "SCHEMA",
    "format_bytes",
    "format_seconds",
    "own_speedups",
    "times_faster",
    "to_json",
    "to_table",
    "write_json",
    "write_plot",
]

SCHEMA = "gradcheck-kit-bench/1"
_COLUMNS = ("size", "variant", "median", "± iqr", "speed-up", "GB/s", "% of copy", "peak memory")


def header(run: Run) -> list[str]:
    env = run.environment
    lines = [
        f"gradcheck-kit bench: {env.device} ({env.device_name}), {_threads(env.threads)}, "
        f"torch {env.torch}, {env.dtype}{', quick' if env.quick else ''}"
    ]
    if run.copy is not None:
        lines.append(
            f"copy bandwidth: {run.copy.bytes_per_second / 1e9:.3g} GB/s "
            f"(dst.copy_(src) of {format_bytes(run.copy.nbytes)}, read and written once)"
        )
    lines.append(f"implementation under test: {env.impl or 'none'}")
    lines.append(
        "speed-up: the exercise-1 variant's median over this one's; GB/s: the op's minimum bytes over the median"
    )
    return lines


def _threads(count: int) -> str:
    return f"{count} thread" if count == 1 else f"{count} threads"


def to_table(run: Run) -> str:
    """The run as text: a header, then per op a table and notes on the variants not timed."""
    from tabulate import tabulate

    blocks = ["\n".join(header(run))]
    for op in OPS:
        results = [r for r in run.results if r.op == op.name]
        if not results:
            continue
        rows, previous = [], None
        for r in results:
            rows.append(_cells(r, run, show_size=r.size != previous))
            previous = r.size
        table = tabulate(rows, headers=_COLUMNS, tablefmt="simple", disable_numparse=True)
        blocks.append("\n".join([op.title, table, *_notes(results)]))
    blocks.append("\n".join(own_speedups(run.results)))
    return "\n\n".join(block for block in blocks if block) + "\n"


def _notes(results: Sequence[Result]) -> list[str]:
    """Why each variant was not timed: one line for all its sizes when the reason is the same."""
    sizes = list(dict.fromkeys(r.size for r in results))
    reasons: dict[tuple[str, str, str], list[str]] = {}
    for r in results:
        if r.status != OK:
            reasons.setdefault((r.label, r.status, r.message), []).append(r.size)
    lines = []
    for (label, status, message), where in reasons.items():
        at = "" if where == sizes else f" (at {', '.join(where)})"
        lines.append(f"  {label}{at}: {status}" + (f": {message}" if message else ""))
    return lines


def _cells(r: Result, run: Run, show_size: bool) -> list[str]:
    size = r.size if show_size else ""
    if r.timing is None:
        return [size, r.label, r.status, "", "", "", "", ""]
    fraction = r.fraction_of(run.copy)
    return [
        size,
        r.label,
        format_seconds(r.timing.median),
        format_seconds(r.timing.iqr),
        f"{r.speedup:.2f}" if r.speedup is not None else "",
        f"{r.bandwidth / 1e9:.3g}" if r.bandwidth is not None else "",
        f"{fraction:.1%}" if fraction is not None else "",
        format_bytes(r.peak_bytes) if r.peak_bytes is not None else "",
    ]


def own_speedups(results: Iterable[Result]) -> list[str]:
    """One line per size where the implementation under test has both a timed chunked and fused MLP backward."""
    by_size: dict[str, dict[str, Result]] = {}
    for r in results:
        if r.op == "mlp" and r.timing is not None and r.variant in ("impl-chunked", "impl-fused"):
            by_size.setdefault(r.size, {})[r.variant] = r
    lines = []
    for size, pair in by_size.items():
        if len(pair) == 2:
            chunked, fused = pair["impl-chunked"].timing, pair["impl-fused"].timing
            assert chunked is not None and fused is not None
            lines.append(
                f"{pair['impl-fused'].source} fused backward (ex 2-4): {times_faster(chunked.median, fused.median)} "
                f"its chunked one (ex 1) at {size}"
            )
    return lines


def to_json(run: Run) -> dict[str, Any]:
    """The run as plain, strictly JSON-serialisable data; times in seconds, sizes in bytes."""
    copy = None
    if run.copy is not None:
        copy = {
            "bytes": run.copy.nbytes,
            "median_s": run.copy.timing.median,
            "bytes_per_s": run.copy.bytes_per_second,
        }
    return {
        "schema": SCHEMA,
        "environment": asdict(run.environment),
        "copy_bandwidth": copy,
        "results": [_result_json(r, run) for r in run.results],
    }


def _result_json(r: Result, run: Run) -> dict[str, Any]:
    t = r.timing
    return {
        "op": r.op,
        "size": r.size,
        "params": dict(r.params),
        "tags": list(r.tags),
        "variant": r.variant,
        "label": r.label,
        "source": r.source,
        "status": r.status,
        "message": r.message or None,
        "min_bytes": r.min_bytes,
        "median_s": t.median if t else None,
        "iqr_s": t.iqr if t else None,
        "calls": t.calls if t else None,
        "times_s": list(t.times) if t else None,
        "speedup_vs_chunked": r.speedup,
        "bandwidth_bytes_per_s": r.bandwidth,
        "fraction_of_copy": r.fraction_of(run.copy),
        "peak_bytes": r.peak_bytes,
    }


def write_json(run: Run, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_json(run), indent=2, allow_nan=False) + "\n")


def write_plot(run: Run, path: str | Path) -> None:
    """A log-log chart of median time against each swept size, a panel per op and axis.

    Raises:
        ModuleNotFoundError: when matplotlib is not installed.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    panels = [(op, axis) for op in OPS for axis in op.axes if len(_swept(run.results, op.name, axis)) > 1]
    columns = min(2, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / columns))
    fig = Figure(figsize=(6 * columns, 4 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (op, axis) in zip(axes, panels, strict=False):
        sizes = _swept(run.results, op.name, axis)
        fixed = ", ".join(f"{k}={v}" for k, v in sizes[0][0].items() if k != axis)
        ticks = [params[axis] for params, _ in sizes]
        for label in dict.fromkeys(r.label for _, group in sizes for r in group):
            points = [(p[axis], r.median) for p, group in sizes for r in group if r.label == label and r.median]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{axis} ({fixed})" if fixed else axis)
        ax.set_ylabel("median time per call (s)")
        ax.set_title(f"{op.title} against {axis}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    env = run.environment
    fig.suptitle(f"{env.device} ({env.device_name}), {_threads(env.threads)}, {env.dtype}")
    fig.savefig(path)


def _swept(results: Sequence[Result], op: str, axis: str) -> list[tuple[dict[str, int], list[Result]]]:
    """The sizes of ``op`` on the sweep over ``axis``, in increasing order, each with its results."""
    groups: dict[str, tuple[dict[str, int], list[Result]]] = {}
    for r in results:
        if r.op == op and sweep_tag(axis) in r.tags:
            groups.setdefault(r.size, (dict(r.params), []))[1].append(r)
    return sorted(groups.values(), key=lambda pair: pair[0][axis])
