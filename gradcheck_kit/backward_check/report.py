"""What :func:`check_backward` found: one row per gradient, dtype and device, and the kernel's timings.

Rendered like the library's other reports: a tabulate table in the terminal, an HTML table
in Jupyter, plain data through :meth:`BackwardReport.as_dict` and :meth:`BackwardReport.to_json`.
"""

from __future__ import annotations

import html
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from gradcheck_kit.backward_check.error import ErrorMeasure

__all__ = [
    "ERROR",
    "FAILED",
    "LEGEND",
    "PASSED",
    "SKIPPED",
    "STATUSES",
    "BackwardReport",
    "GradientCheck",
    "KernelTime",
]

PASSED = "passed"
FAILED = "failed"
#: The kernel raised, or returned something that is not a gradient of the right shape, dtype and device.
ERROR = "error"
#: Not run: the device is absent, or PyTorch itself has no backward at the dtype there.
SKIPPED = "skipped"
#: Every status, in the order summaries list them.
STATUSES = (PASSED, FAILED, ERROR, SKIPPED)

#: Characters of a note per line in the text table; longer notes wrap.
NOTE_WIDTH = 48

_COLUMNS = (
    "gradient",
    "dtype",
    "device",
    "shapes",
    "kernel err",
    "torch err",
    "ratio",
    "band of |ref|",
    "gross",
    "global",
    "worst at",
    "kernel / torch / float64",
    "verdict",
    "note",
)
_RIGHT = {"shapes", "kernel err", "torch err", "ratio", "gross", "global"}
_TIMING_COLUMNS = ("dtype", "device", "shape", "median", "± iqr", "bandwidth", "% of copy", "copy", "peak memory")
_ANSI = {PASSED: "32", FAILED: "31", ERROR: "31", SKIPPED: "33"}
_HTML_COLOR = {PASSED: "green", FAILED: "red", ERROR: "red", SKIPPED: "darkorange"}
#: What the columns mean, printed under the table.
LEGEND = (
    "err: 90th percentile of |grad - float64 grad| in the band of |ref| where the ratio is worst; "
    "torch err is at least half a step (an ulp, and at least 2^-18 of the value)\n"
    "ratio: kernel err / torch err, at most k to pass; "
    "gross: elements off by over half their value and by k times PyTorch's worst there\n"
    "global: FlashAttention's max|kernel - ref| / max|torch - ref|, for comparison; "
    "a shape marked * had strided inputs"
)


@dataclass(frozen=True)
class GradientCheck:
    """One gradient at one dtype on one device, over every shape checked; numbers are the worst shape's.

    Args:
        name: the input the gradient is for.
        dtype: the dtype checked (``"bfloat16"``).
        device: the device checked (``"cpu"``).
        status: one of :data:`STATUSES`.
        shapes: how many shapes were checked.
        shape: the worst shape (the one that failed, or the highest ratio); ``None`` when skipped.
        contiguous: whether the inputs at that shape were contiguous.
        measure: the errors at that shape; ``None`` when nothing could be measured.
        note: why it was skipped, what went wrong, or ``""``.
    """

    name: str
    dtype: str
    device: str
    status: str
    shapes: int
    shape: tuple[int, ...] | None
    contiguous: bool | None
    measure: ErrorMeasure | None
    note: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; expected one of {', '.join(STATUSES)}")

    @property
    def passed(self) -> bool:
        """Whether the gradient passed at every shape."""
        return self.status == PASSED

    def as_dict(self) -> dict[str, Any]:
        """Return the row as plain, strictly JSON-serialisable data."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["shape"] = list(self.shape) if self.shape is not None else None
        data["measure"] = self.measure.as_dict() if self.measure is not None else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GradientCheck:
        """Rebuild a row from :meth:`as_dict` output."""
        values = dict(data)
        values["shape"] = tuple(data["shape"]) if data["shape"] is not None else None
        values["measure"] = ErrorMeasure.from_dict(data["measure"]) if data["measure"] is not None else None
        return cls(**values)


@dataclass(frozen=True)
class KernelTime:
    """The kernel's backward timed by :func:`~gradcheck_kit.bench.measure_kernel` at one shape, dtype and device."""

    dtype: str
    device: str
    shape: tuple[int, ...]
    #: The least traffic the backward needs: every input and grad_output read once, every gradient written once.
    min_bytes: int
    #: Seconds per call: the median and the interquartile range.
    seconds: float
    iqr: float
    #: ``min_bytes`` over the median, and that as a fraction of a copy's bandwidth on the same device.
    bandwidth: float
    fraction_of_copy: float
    copy_bandwidth: float
    #: Bytes the backward allocated at its peak, its gradients included.
    peak_bytes: int

    def as_dict(self) -> dict[str, Any]:
        """Return the timing as plain data."""
        return {**asdict(self), "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KernelTime:
        """Rebuild a timing from :meth:`as_dict` output."""
        return cls(**{**data, "shape": tuple(data["shape"])})


@dataclass(frozen=True, repr=False)
class BackwardReport:
    """Every gradient checked, by dtype and device, under a title; and the timings when asked for.

    Args:
        title: what was checked (``"cross_entropy vs FusedCrossEntropy"``).
        k: how many times PyTorch's error the kernel's may be.
        checks: one row per gradient, dtype and device.
        timings: one per dtype and device, when ``benchmark`` was asked for.
    """

    title: str
    k: float
    checks: Sequence[GradientCheck]
    timings: Sequence[KernelTime] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "checks", tuple(self.checks))
        object.__setattr__(self, "timings", tuple(self.timings))

    @property
    def passed(self) -> bool:
        """Whether something was checked and nothing failed or raised (skipped rows do not count against it)."""
        statuses = {check.status for check in self.checks}
        return PASSED in statuses and not statuses & {FAILED, ERROR}

    def __getitem__(self, key: str | tuple[str, str] | tuple[str, str, str]) -> GradientCheck:
        """Return the row of a gradient: ``report["input"]``, ``report["input", "bfloat16"]`` or with the device.

        Raises:
            KeyError: when no row matches, or a gradient's name alone matches several rows.
        """
        wanted = (key,) if isinstance(key, str) else tuple(key)
        found = [c for c in self.checks if (c.name, c.dtype, c.device)[: len(wanted)] == wanted]
        if len(found) != 1:
            raise KeyError(f"{key!r} matches {len(found)} rows; name a gradient, dtype and device")
        return found[0]

    def counts(self) -> dict[str, int]:
        """Return how many rows have each status, for the statuses that occur, in :data:`STATUSES` order."""
        found = [check.status for check in self.checks]
        return {status: found.count(status) for status in STATUSES if status in found}

    def summary(self) -> str:
        """Return one line such as ``"2/4 gradient checks pass, 2 skipped (CUDA is not available)"``."""
        counts = self.counts()
        total = len(self.checks)
        text = f"{counts.get(PASSED, 0)}/{total} gradient check{'' if total == 1 else 's'} pass"
        text += "".join(f", {n} {status}" for status, n in counts.items() if status != PASSED)
        reasons = sorted({c.note for c in self.checks if c.status == SKIPPED and c.note})
        if reasons:
            text += f" ({'; '.join(reasons)})"
        return text

    def failures(self) -> str:
        """Explain, a line or two per row, each gradient check that failed or raised; empty when none did."""
        lines = []
        for c in self.checks:
            if c.status not in (FAILED, ERROR):
                continue
            where = f" at shape {c.shape}" + ("" if c.contiguous in (None, True) else " (strided inputs)")
            lines.append(f"d{c.name} at {c.dtype} on {c.device}: {c.status.upper()}{where}")
            m = c.measure
            if c.note:
                lines.append(f"    {c.note}")
            if m is not None and c.status == FAILED:
                band = m.bands[m.worst_band]
                lines.append(
                    f"    where |ref| is in {band.label()} ({band.count} elements): "
                    f"kernel err {_short(band.kernel_error)}, PyTorch's {_short(max(band.torch_error, band.floor))}, "
                    f"ratio {_ratio(m.ratio)} (up to {m.k:g} allowed); "
                    f"{m.gross} gross; at index {list(m.worst_index)}: kernel {_value(m.kernel_at_worst)}, "
                    f"PyTorch {_value(m.torch_at_worst)}, float64 {_value(m.reference_at_worst)}"
                )
        return "\n".join(lines)

    def to_text(self, color: bool | None = None, *, legend: bool = True) -> str:
        """Render the title, the table of checks, a legend, the summary, and the timings when there are any.

        Args:
            color: colour the verdicts with ANSI codes; ``None`` colours only when stdout is a
                terminal and ``NO_COLOR`` is unset or empty.
            legend: explain the columns under the table.
        """
        from tabulate import tabulate

        if color is None:
            color = _stdout_is_tty() and not os.environ.get("NO_COLOR")
        table = []
        for check in self.checks:
            cells = _cells(check)
            if color:
                cells[-2] = f"\x1b[{_ANSI[check.status]}m{check.status}\x1b[0m"
            table.append(cells)
        body = tabulate(
            table,
            headers=_COLUMNS,
            tablefmt="simple",
            disable_numparse=True,
            colalign=tuple("right" if c in _RIGHT else "left" for c in _COLUMNS),
            maxcolwidths=[None] * (len(_COLUMNS) - 1) + [NOTE_WIDTH],
        )
        parts = [f"{self.title} (k = {self.k:g})", body, *([LEGEND] if legend else []), self.summary()]
        if self.timings:
            timing = tabulate(
                [_timing_cells(t) for t in self.timings],
                headers=_TIMING_COLUMNS,
                tablefmt="simple",
                disable_numparse=True,
                colalign=("left", "left", "left", "right", "right", "right", "right", "right", "right"),
            )
            parts += ["", "the kernel's backward timed by measure_kernel, at the largest shape", timing]
        return "\n".join(parts)

    def __str__(self) -> str:
        return self.to_text(color=False)

    def __repr__(self) -> str:
        return f"<BackwardReport {self.title!r}: {self.summary()}>"

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "".join(f"<th>{esc(c)}</th>" for c in _COLUMNS)
        body = []
        for check in self.checks:
            cells = [f"<td>{esc(cell)}</td>" for cell in _cells(check)]
            cells[-2] = f'<td style="color: {_HTML_COLOR[check.status]}">{esc(check.status)}</td>'
            body.append(f"<tr>{''.join(cells)}</tr>")
        out = (
            f'<table class="gradcheck-backward"><caption>{esc(self.title)} (k = {self.k:g})</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f"<p><small>{'<br>'.join(map(esc, LEGEND.splitlines()))}</small></p><p>{esc(self.summary())}</p>"
        )
        if self.timings:
            head = "".join(f"<th>{esc(c)}</th>" for c in _TIMING_COLUMNS)
            rows = "".join(
                "<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in _timing_cells(t)) + "</tr>" for t in self.timings
            )
            out += (
                '<table class="gradcheck-backward-timing">'
                "<caption>the kernel's backward timed by measure_kernel</caption>"
                f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        """Return the report as plain, strictly JSON-serialisable data."""
        return {
            "title": self.title,
            "k": self.k,
            "summary": self.summary(),
            "passed": self.passed,
            "counts": self.counts(),
            "checks": [check.as_dict() for check in self.checks],
            "timings": [timing.as_dict() for timing in self.timings],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BackwardReport:
        """Rebuild a report from :meth:`as_dict` output, e.g. one sent by a pytest-xdist worker."""
        return cls(
            data["title"],
            float(data["k"]),
            tuple(GradientCheck.from_dict(c) for c in data["checks"]),
            tuple(KernelTime.from_dict(t) for t in data.get("timings", ())),
        )

    def to_json(self, indent: int | None = 2) -> str:
        """Return :meth:`as_dict` as JSON text."""
        return json.dumps(self.as_dict(), indent=indent, allow_nan=False)


def _cells(check: GradientCheck) -> list[str]:
    m = check.measure
    shape = "" if check.shape is None else str(check.shape) + ("" if check.contiguous in (None, True) else "*")
    if m is None or not m.bands:
        numbers = ["-"] * 6
        worst = shape
        values = ""
    else:
        band = m.bands[m.worst_band]
        numbers = [
            _short(band.kernel_error),
            _short(max(band.torch_error, band.floor)),
            _ratio(m.ratio),
            band.label(),
            str(m.gross),
            _ratio(m.global_ratio),
        ]
        worst = f"{shape} {list(m.worst_index)}"
        values = " / ".join(_value(v) for v in (m.kernel_at_worst, m.torch_at_worst, m.reference_at_worst))
    return [check.name, check.dtype, check.device, str(check.shapes), *numbers, worst, values, check.status, check.note]


def _timing_cells(t: KernelTime) -> list[str]:
    return [
        t.dtype,
        t.device,
        str(t.shape),
        _seconds(t.seconds),
        _seconds(t.iqr),
        _rate(t.bandwidth),
        f"{t.fraction_of_copy:.1%}",
        _rate(t.copy_bandwidth),
        _bytes(t.peak_bytes),
    ]


def _rate(bytes_per_second: float) -> str:
    for unit, scale in (("TB/s", 1e12), ("GB/s", 1e9), ("MB/s", 1e6)):
        if bytes_per_second >= scale:
            return f"{bytes_per_second / scale:.3g} {unit}"
    return f"{bytes_per_second / 1e3:.3g} kB/s"


def _bytes(nbytes: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes:.0f} B"


def _seconds(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _short(value: float) -> str:
    if math.isnan(value):
        return "-"
    if value == 0:
        return "0"
    return f"{value:.1e}"


def _ratio(value: float) -> str:
    if math.isinf(value):
        return "inf"
    return f"{value:.2f}"


def _value(value: float) -> str:
    return f"{value:.4g}"


def _stdout_is_tty() -> bool:
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty and isatty())
