"""A table of gradient comparisons, in backward order, with one verdict per gradient."""

from __future__ import annotations

import difflib
import html
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gradcheck_kit.comparison import Comparison, compare

# Re-exported: the verdicts live in a module that imports nothing, for the plugin to load without torch.
from gradcheck_kit.verdicts import (
    ERROR,
    EXACT,
    INHERITED,
    NOT_STARTED,
    OK,
    PASSING,
    SKIPPED,
    UNCHECKED,
    VERDICTS,
    WRONG,
)

__all__ = [
    "ERROR",
    "EXACT",
    "NO_DIAGNOSIS",
    "INHERITED",
    "KINDS",
    "NOT_STARTED",
    "OK",
    "PASSING",
    "SKIPPED",
    "UNCHECKED",
    "VERDICTS",
    "WRONG",
    "Report",
    "Row",
    "Diagnosis",
    "compare_grads",
    "verdict_for",
]

#: What a row's value is: a gradient, a forward output, a running buffer, a flag, or a metric.
KINDS = ("gradient", "value", "buffer", "flag", "metric")

#: Characters of a note per line in the text table; longer notes wrap.
NOTE_WIDTH = 72

_COLUMNS = ("name", "shape", "exact", "approximate", "maxdiff", "max rel diff", "verdict", "note")
_ANSI = {
    EXACT: "32",
    OK: "32",
    WRONG: "31",
    ERROR: "31",
    INHERITED: "33",
    UNCHECKED: "33",
    NOT_STARTED: "33",
    SKIPPED: "33",
}
_HTML_COLOR = {EXACT: "green", OK: "green", WRONG: "red", ERROR: "red"}


#: What a wrong row says when no detector recognised a mistake in the student's values.
NO_DIAGNOSIS = "no specific mistake recognised"


@dataclass(frozen=True)
class Diagnosis:
    """A mistake recognised in the student's values: what was detected, and the evidence it was seen in.

    A diagnosis is made only by a detector that matched the values (see
    :mod:`gradcheck_kit.grading.detectors`); advice that applies whatever the values
    are is a hint, carried apart on the :class:`Row`.

    Args:
        detected: the mistake, in the student's terms ("each column is off by a factor equal to bnvar_inv").
        evidence: what in the values shows it ("dbnvar_inv / the right value is bnvar_inv in every column").
    """

    detected: str
    evidence: str = ""

    def __str__(self) -> str:
        return f"{self.detected} ({self.evidence})" if self.evidence else self.detected

    def as_dict(self) -> dict[str, str]:
        """Return the diagnosis as plain data."""
        return {"detected": self.detected, "evidence": self.evidence}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Diagnosis | None:
        """Rebuild a diagnosis from :meth:`as_dict` output; None stays None."""
        return None if not data else cls(str(data["detected"]), str(data.get("evidence", "")))


def verdict_for(comparison: Comparison) -> str:
    """Return the verdict a comparison earns on its own: exact, ok, wrong or not started."""
    if comparison.problem == "missing":
        return NOT_STARTED
    if comparison.exact:
        return EXACT
    return OK if comparison.approximate else WRONG


@dataclass(frozen=True)
class Row:
    """One graded value's line in a report: a gradient, or what a check compares besides gradients.

    Args:
        comparison: the comparison behind the row.
        verdict: one of :data:`VERDICTS`.
        note: the grader's remark on the verdict ("first wrong step", "your step is right;
            the error is upstream", what is structurally off), without the diagnosis or hint.
        kind: what the row's value is, one of :data:`KINDS`: the gradient of the
            tensor it names (shown as ``d<name>``), or the value itself (a forward
            output, a running buffer, a flag, a metric), shown by its name.
        diagnosis: the mistake a detector recognised in the values, if one did.
        hint: advice for this gradient or exercise, shown (labelled as a hint) when
            the row is wrong and nothing was recognised.
    """

    comparison: Comparison
    verdict: str
    note: str = ""
    kind: str = "gradient"
    diagnosis: Diagnosis | None = None
    hint: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}; expected one of {', '.join(VERDICTS)}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; expected one of {', '.join(KINDS)}")

    @property
    def name(self) -> str:
        """The gradient's name."""
        return self.comparison.name

    @property
    def label(self) -> str:
        """How messages name the row: ``dW1`` for the gradient of ``W1``, the name itself otherwise."""
        return f"d{self.name}" if self.kind == "gradient" else self.name

    @property
    def passed(self) -> bool:
        """Whether the verdict passes: exact, ok, or inherited from an earlier wrong step."""
        return self.verdict in PASSING

    @property
    def explanation(self) -> str:
        """The note column: the remark, then the diagnosis, or when a wrong row has none, that and the hint.

        ``"first wrong step — off by a constant factor of n = 32 (...)"``, or
        ``"first wrong step — no specific mistake recognised — hint: ..."``.
        """
        parts = [self.note]
        if self.diagnosis is not None:
            parts.append(str(self.diagnosis))
        elif self.verdict == WRONG and self.hint:
            parts.append(f"hint: {self.hint}")
        return " — ".join(part for part in parts if part)

    def as_dict(self) -> dict[str, Any]:
        """Return the comparison's fields plus the verdict, the note, the diagnosis and the hint as plain data.

        ``explanation`` is the note column as shown; ``diagnosis`` is None when nothing was recognised.
        """
        return {
            **self.comparison.as_dict(),
            "verdict": self.verdict,
            "note": self.note,
            "kind": self.kind,
            "diagnosis": None if self.diagnosis is None else self.diagnosis.as_dict(),
            "hint": self.hint,
            "explanation": self.explanation,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Row:
        """Rebuild a row from :meth:`as_dict` output."""
        return cls(
            Comparison.from_dict(data),
            data["verdict"],
            data["note"],
            data.get("kind", "gradient"),
            Diagnosis.from_dict(data.get("diagnosis")),
            data.get("hint", ""),
        )


@dataclass(frozen=True, repr=False)
class Report:
    """Rows in backward order (loss side first, parameters last) under a title.

    Args:
        title: what was checked (``"exercise 1"``).
        rows: one row per gradient.
        unknown: names the student returned that match no gradient.
    """

    title: str
    rows: Sequence[Row]
    unknown: Sequence[str] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", tuple(self.rows))
        object.__setattr__(self, "unknown", tuple(self.unknown))

    @classmethod
    def from_comparisons(cls, title: str, comparisons: Iterable[Comparison]) -> Report:
        """Build a report whose verdicts come from each comparison alone (see :func:`verdict_for`)."""
        return cls(title, tuple(Row(c, verdict_for(c), _problem_note(c)) for c in comparisons))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Report:
        """Rebuild a report from :meth:`as_dict` output, e.g. one sent by a pytest-xdist worker."""
        rows = tuple(Row.from_dict(r) for r in data["rows"])
        return cls(data["title"], rows, tuple(data.get("unknown", ())))

    def __getitem__(self, name: str) -> Row:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    @property
    def passed(self) -> bool:
        """Whether there is at least one row and every row is exact or ok."""
        return bool(self.rows) and all(row.passed for row in self.rows)

    def counts(self) -> dict[str, int]:
        """Return how many rows have each verdict, for the verdicts that occur, in :data:`VERDICTS` order."""
        found = [row.verdict for row in self.rows]
        return {verdict: found.count(verdict) for verdict in VERDICTS if verdict in found}

    def suggestions(self) -> dict[str, str | None]:
        """Map each unknown name to the closest gradient name, or ``None`` when nothing is close."""
        names = [row.name for row in self.rows]
        return {key: next(iter(difflib.get_close_matches(key, names, n=1)), None) for key in self.unknown}

    def summary(self) -> str:
        """Return one line such as ``"24/26 gradients match, 2 not started"`` (``values`` for rows of other kinds)."""
        total = len(self.rows)
        matched = sum(row.verdict in (EXACT, OK) for row in self.rows)
        # "gradients" where every row is one; a check that also compares values, buffers or metrics counts rows.
        what = "gradient" if all(row.kind == "gradient" for row in self.rows) else "value"
        text = f"{matched}/{total} {what} matches" if total == 1 else f"{matched}/{total} {what}s match"
        # Inherited rows pass but do not match autograd: counted apart, like every other verdict.
        text += "".join(f", {n} {verdict}" for verdict, n in self.counts().items() if verdict not in (EXACT, OK))
        if self.unknown:
            described = [
                f"{key!r} (did you mean {match!r}?)" if match else repr(key)
                for key, match in self.suggestions().items()
            ]
            label = "unknown name" if len(described) == 1 else f"{len(described)} unknown names"
            text += f"; {label}: {', '.join(described)}"
        return text

    def to_text(self, color: bool | None = None) -> str:
        """Render the title, a table of the rows and the summary line.

        Args:
            color: colour the verdicts with ANSI codes; ``None`` colours only when stdout
                is a terminal and ``NO_COLOR`` is unset or empty.
        """
        from tabulate import tabulate

        if color is None:
            color = _stdout_is_tty() and not os.environ.get("NO_COLOR")
        table = []
        for row in self.rows:
            cells = _cells(row)
            if color:
                cells[6] = f"\x1b[{_ANSI[row.verdict]}m{row.verdict}\x1b[0m"
            table.append(cells)
        body = tabulate(
            table,
            headers=_COLUMNS,
            tablefmt="simple",
            disable_numparse=True,
            colalign=("left", "left", "left", "left", "right", "right", "left", "left"),
            # Long diagnoses wrap inside their cell so the table fits a terminal.
            maxcolwidths=[None] * 7 + [NOTE_WIDTH],
        )
        return f"{self.title}\n{body}\n{self.summary()}"

    def __str__(self) -> str:
        return self.to_text(color=False)

    def __repr__(self) -> str:
        return f"<Report {self.title!r}: {self.summary()}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's plain-text view (a terminal, or a notebook's text output): the whole table."""
        printer.text(repr(self) if cycle else self.to_text(color=False))

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "".join(f"<th>{esc(c)}</th>" for c in _COLUMNS)
        body = []
        for row in self.rows:
            cells = [f"<td>{esc(cell)}</td>" for cell in _cells(row)]
            colour = _HTML_COLOR.get(row.verdict, "darkorange")
            cells[6] = f'<td style="color: {colour}">{esc(row.verdict)}</td>'
            body.append(f"<tr>{''.join(cells)}</tr>")
        return (
            f'<table class="gradcheck-report"><caption>{esc(self.title)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f"<p>{esc(self.summary())}</p>"
        )

    def as_dict(self) -> dict[str, Any]:
        """Return the report as plain, strictly JSON-serialisable data."""
        return {
            "title": self.title,
            "summary": self.summary(),
            "passed": self.passed,
            "counts": self.counts(),
            "unknown": list(self.unknown),
            "suggestions": self.suggestions(),
            "rows": [row.as_dict() for row in self.rows],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """Return :meth:`as_dict` as JSON text."""
        return json.dumps(self.as_dict(), indent=indent, allow_nan=False)


def compare_grads(
    manual: Mapping[str, object],
    reference: Mapping[str, Any],
    *,
    order: Sequence[str] | None = None,
    title: str = "gradients",
    rtol: float | None = None,
    atol: float | None = None,
) -> Report:
    """Compare every reference gradient with the student's gradient of the same name.

    Args:
        manual: the student's gradients by name; a missing name or ``None`` is "not started".
        reference: the autograd gradients by name.
        order: the row order (backward order); reference names it leaves out follow, in
            the reference's order. Defaults to the reference's order.
        title: the report's title.
        rtol: relative tolerance for every gradient; give both or neither.
        atol: absolute tolerance for every gradient.

    Returns:
        A :class:`Report` with one row per reference name; names in ``manual`` that are not
        in ``reference`` are listed as unknown, with the closest reference name.

    Raises:
        ValueError: if ``order`` names a gradient the reference lacks, or only one tolerance is given.
    """
    if (rtol is None) != (atol is None):
        # Checked here as well as in compare() so that an empty reference cannot hide the mistake.
        raise ValueError("rtol and atol must be given together; pass both, or neither to use torch's defaults")
    names = list(order) if order is not None else list(reference)
    strays = [name for name in names if name not in reference]
    if strays:
        raise ValueError(f"order names gradients the reference lacks: {', '.join(map(repr, strays))}")
    names += [name for name in reference if name not in names]
    comparisons = [compare(name, manual.get(name), reference[name], rtol=rtol, atol=atol) for name in names]
    report = Report.from_comparisons(title, comparisons)
    return Report(title, report.rows, tuple(key for key in manual if key not in reference))


def _problem_note(c: Comparison) -> str:
    """Say in one line what is wrong with a failing comparison; empty when it passes."""
    if c.problem in (None, "missing"):
        return ""
    if c.problem == "type":
        return f"got {c.actual_type}, expected a tensor"
    if c.problem == "shape":
        return f"shape {c.actual_shape}, expected {c.expected_shape}"
    if c.problem == "dtype":
        return f"dtype {c.actual_dtype}, expected {c.expected_dtype}"
    if c.problem == "device":
        return f"on {c.actual_device}, expected {c.expected_device}"
    if c.problem == "nonfinite":
        return f"{c.nonfinite} NaN/Inf, first at {c.worst_index}"
    return f"{c.mismatched}/{c.numel} elements off, worst at {c.worst_index}"


def _cells(row: Row) -> list[str]:
    c = row.comparison
    return [
        c.name,
        str(c.expected_shape),
        str(c.exact),
        str(c.approximate),
        _short(c.maxdiff),
        _short(c.max_rel_diff),
        row.verdict,
        row.explanation,
    ]


def _short(value: float) -> str:
    if value != value:  # NaN: nothing was measured
        return "-"
    if value == 0:
        return "0"
    return f"{value:.1e}"


def _stdout_is_tty() -> bool:
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty and isatty())
