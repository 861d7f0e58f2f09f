"""What a class's grading shows at its end: the score distribution, the commonest mistakes, the slowest submissions.

The mistakes are read back from each submission's results.json: each wrong gradient's
row carries the mistake a detector recognised in its values (``diagnosis.detected``:
off by ``1/n``, a missing ``keepdim``, the biased variance, ...), kept apart from the
evidence (which differs from student to student) and from the hint (which the grader
gives everyone). A wrong row with no diagnosis is counted as such; a failed check with
no wrong row (an exception, a time limit, a use of autograd) by the first line of what
it printed. Each submission counts once per mistake, however many checks showed it.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gradcheck_kit.autograder.gradebook import ERROR, GRADED, INCOMPLETE
from gradcheck_kit.autograder.results import format_points, strip_ansi
from gradcheck_kit.course.catalogue import EXERCISES
from gradcheck_kit.report import NO_DIAGNOSIS
from gradcheck_kit.verdicts import NOT_STARTED, WRONG

__all__ = ["histogram", "mistakes", "mistakes_of", "plot", "summary"]

_BINS = 10
_BAR = 40
_LONGEST = 110


def summary(
    rows: Sequence[Mapping[str, str]],
    results_dir: Path,
    *,
    top: int = 3,
    slowest: int = 5,
) -> list[str]:
    """The lines printed at the end of a class's grading, for the gradebook rows of the submissions given."""
    graded = [r for r in rows if r["status"] in (GRADED, INCOMPLETE)]
    lines = [_counts(rows)]
    if graded:
        lines += ["", "score distribution:", *histogram(graded)]
        found = mistakes(graded, results_dir)
        lines += ["", "most common mistakes (submissions that made each):"]
        if not any(found.values()):
            lines.append("  none detected: every graded check that failed was not started")
        for key, counts in found.items():
            if counts:
                lines.append(f"  {EXERCISES[key].title if key in EXERCISES else key}:")
                lines += [f"    {n:>4}  {_short(label)}" for label, n in counts.most_common(top)]
        timed = sorted(graded, key=lambda r: -float(r["seconds"] or 0))[:slowest]
        lines += ["", "slowest submissions:"]
        lines += [f"  {float(r['seconds']):>7.1f} s  {r['identifier']}" for r in timed]
    errors = [r for r in rows if r["status"] == ERROR]
    if errors:
        lines += ["", "could not be graded:"]
        lines += [f"  {r['identifier']}: {r['note']}" for r in errors]
    return lines


def _counts(rows: Sequence[Mapping[str, str]]) -> str:
    by = Counter(r["status"] for r in rows)
    parts = [f"{by[GRADED]} graded"]
    if by[INCOMPLETE]:
        parts.append(f"{by[INCOMPLETE]} whose grading did not finish (see the note column)")
    if by[ERROR]:
        parts.append(f"{by[ERROR]} could not be graded")
    return f"{len(rows)} submissions: " + ", ".join(parts)


def histogram(rows: Sequence[Mapping[str, str]]) -> list[str]:
    """The scores in ten bins of the total (of the percentage of each row's total, when that does not split evenly)."""
    total, unit = _scale(rows)
    scores = [_fraction(r) * total for r in rows]
    counts = [0] * _BINS
    for score in scores:
        counts[min(int(score / total * _BINS) if total > 0 else 0, _BINS - 1)] += 1
    widest = max(counts)
    lines = []
    for i, n in enumerate(counts):
        low, high = total * i / _BINS, total * (i + 1) / _BINS
        closing = "]" if i == _BINS - 1 else ")"
        label = f"[{format_points(low)}{unit}, {format_points(high)}{unit}{closing}"
        bar = "#" * (math.ceil(n / widest * _BAR) if n else 0)
        lines.append(f"  {label:>14} {n:>4}  {bar}".rstrip())
    mean, median = statistics.mean(scores), statistics.median(scores)
    lines.append(f"  mean {format_points(round(mean, 2))}{unit}, median {format_points(round(median, 2))}{unit}")
    return lines


def _scale(rows: Sequence[Mapping[str, str]]) -> tuple[float, str]:
    """What scores are binned against, and its unit: the rows' total when they share one that splits into
    ten whole bins (100 points), else 100 % of each row's own."""
    totals = {float(r["total"] or 0) for r in rows}
    if len(totals) == 1:
        total = totals.pop()
        if total > 0 and (total / _BINS).is_integer():
            return total, ""
    return 100.0, "%"


def _fraction(row: Mapping[str, str]) -> float:
    total = float(row["total"] or 0)
    return float(row["score"] or 0) / total if total > 0 else 0.0


def mistakes(rows: Iterable[Mapping[str, str]], results_dir: Path) -> dict[str, Counter[str]]:
    """Per exercise, how many submissions made each mistake, from their results.json files."""
    found: dict[str, Counter[str]] = {key: Counter() for key in EXERCISES}
    for row in rows:
        try:
            data = json.loads((results_dir / row["results"]).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for key, labels in mistakes_of(data).items():
            found.setdefault(key, Counter()).update(labels)
    return found


def mistakes_of(data: Mapping[str, Any]) -> dict[str, set[str]]:
    """The mistakes one results.json shows, per exercise, each once however many checks showed it."""
    out: dict[str, set[str]] = {}
    for test in data.get("tests", []):
        extra = test.get("extra_data", {})
        if test.get("status") != "failed" or extra.get("outcome") != "failed":
            continue  # passed, skipped or not run: nothing was detected
        key = (test.get("tags") or ["?"])[0]
        wrong = [row for row in extra.get("rows", []) if row.get("verdict") == WRONG]
        labels = {_detected(row) for row in wrong}
        if not wrong and extra.get("verdict") != NOT_STARTED:
            labels.add(_first_line(strip_ansi(str(test.get("output", "")))))
        out.setdefault(key, set()).update(label for label in labels if label)
    return out


def _detected(row: Mapping[str, Any]) -> str:
    """What the grader found wrong in one gradient: the recognised mistake, else what is structurally off."""
    name = str(row.get("name", "?"))
    shown = f"d{name}" if row.get("kind", "gradient") == "gradient" else name
    diagnosis = row.get("diagnosis")
    if isinstance(diagnosis, Mapping) and diagnosis.get("detected"):
        return f"{shown}: {diagnosis['detected']}"
    message = str(row.get("message") or "").strip()
    if row.get("problem") not in (None, "mismatch") and message:
        return f"{shown}: {message.splitlines()[0]}"  # a shape, dtype, type or device, or NaN: said by the comparison
    return f"{shown}: {NO_DIAGNOSIS}"


def _first_line(output: str) -> str:
    """The first line of a failed check's output that says what happened, without its title."""
    for line in strip_ansi(output).splitlines():
        line = line.strip()
        if not line or line.startswith("```") or line.endswith("]:") or line.startswith("exercise "):
            continue
        return line
    return ""


def _short(text: str) -> str:
    return text if len(text) <= _LONGEST else text[: _LONGEST - 1] + "…"


def plot(rows: Sequence[Mapping[str, str]], path: Path) -> None:
    """Draw the score distribution of the graded rows as a PNG at ``path``.

    Raises:
        ImportError: when matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    graded = [r for r in rows if r["status"] in (GRADED, INCOMPLETE)]
    total, unit = _scale(graded)
    scores = [_fraction(r) * total for r in graded]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(scores, bins=_BINS, range=(0, total or 1), edgecolor="black")
    ax.set_xlabel("score (% of the total)" if unit else "score")
    ax.set_ylabel("submissions")
    ax.set_title(f"{len(graded)} submissions graded by gradcheck-kit")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
