"""Gradescope's results.json: a run's :class:`~gradcheck_kit.autograder.results.Results` in the autograder format.

The format is https://gradescope-autograders.readthedocs.io/en/latest/specs/ ;
:func:`validate` checks a document against it. Tests that never reported (the run
was stopped, a process died) are listed as not graded, with the reason, and
:func:`write_json` writes atomically, so results.json can be rewritten after every
test and still be whole when the run dies.

Gradescope knows two statuses, passed and failed. A skipped test worth points earns
none and is listed as failed, saying why it was skipped. A skipped test worth no
points (exercise 7 where there is no CUDA) is left out of the tests: listed as
failed it would read as a mistake, and it changes no score. The overview names it
and the reason, and ``extra_data.skipped`` keeps it for the instructor.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gradcheck_kit.autograder.points import VISIBILITIES
from gradcheck_kit.autograder.results import (
    FAILED,
    HIDDEN_UNTIL,
    NOT_RUN,
    SKIPPED,
    ExerciseScore,
    Results,
    TestRun,
    format_points,
    points_phrase,
    strip_ansi,
    tidy,
)

__all__ = ["FORMATS", "to_gradescope", "validate", "write_json"]

#: Gradescope's output formats.
FORMATS = ("text", "simple_format", "html", "md", "ansi")

_OUTPUT_LIMIT = 6000


def to_gradescope(
    results: Results,
    *,
    execution_time: float,
    complete: bool = True,
    reason: str = "",
    notes: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
    leaderboard: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """``results`` as Gradescope's results.json.

    Args:
        execution_time: seconds the grading took.
        complete: False when the run stopped before its end.
        reason: why it stopped, or anything else wrong with the run as a whole.
        notes: lines for every student to read under the score (seeds, time limits).
        extra: more top-level ``extra_data``.
        leaderboard: Gradescope's leaderboard entries (``name``, ``value``, ``order``); left out when empty.
    """
    complete = complete and results.complete
    if not complete and not reason:
        reason = "the run stopped before every test had run"
    # Under pytest-xdist reports arrive in completion order: list the tests in the plan's.
    ordered = results.ordered()
    skipped = [t for t in ordered if _skipped_for_nothing(t)]
    tests = [_entry(t) for t in ordered if not _skipped_for_nothing(t)]
    tests += [_missing_entry(e, reason) for e in results.exercises() if e.missing]
    data: dict[str, Any] = {
        "score": results.score,
        "execution_time": round(max(execution_time, 0.0), 3),
        "output": _overview(results, complete, reason, [*_skipped_notes(skipped), *notes]),
        "output_format": "md",
        "test_output_format": "md",
        "test_name_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "extra_data": {
            "complete": complete,
            "reason": reason,
            "total": results.total,
            # None for a run of every test; else how many were selected, and the total of a full run.
            "selection": {"tests": len(results.tests), "full_total": results.course_total}
            if results.selection
            else None,
            "hidden_points": results.hidden_points(),
            "problems": [strip_ansi(p) for p in results.problems],
            "skipped": [{"name": t.share.name, "reason": _skip_reason(t)} for t in skipped],
            **(extra or {}),
        },
        "tests": tests,
    }
    if leaderboard:
        data["leaderboard"] = [dict(entry) for entry in leaderboard]
    return data


def _skipped_for_nothing(run: TestRun) -> bool:
    """A test that was skipped and is worth no points: nothing to pass or fail."""
    return run.outcome == SKIPPED and run.share.max_score == 0


def _skip_reason(run: TestRun) -> str:
    return strip_ansi(run.text).removeprefix("Skipped: ").strip() or "skipped"


def _skipped_notes(skipped: Sequence[TestRun]) -> list[str]:
    """One line per reason: which tests worth no points were skipped, and why."""
    by_reason: dict[str, list[str]] = {}
    for run in skipped:
        by_reason.setdefault(_skip_reason(run), []).append(run.share.name)
    return [f"Not run here, worth no points: {', '.join(names)} ({reason})." for reason, names in by_reason.items()]


def _entry(run: TestRun) -> dict[str, Any]:
    share = run.share
    data: dict[str, Any] = {"nodeid": share.nodeid, "outcome": run.outcome, "duration": round(run.duration, 3)}
    if len(run.rows) == 1:
        row = run.rows[0]
        data.update({k: row.get(k) for k in ("verdict", "maxdiff", "max_rel_diff", "mismatched", "numel")})
    else:
        data["verdict"] = run.verdict or run.outcome
    data["rows"] = run.rows
    return {
        "name": share.name,
        "number": share.number,
        "score": tidy(run.score),
        "max_score": share.max_score,
        "status": "passed" if run.passed else "failed",
        "output": _test_output(run),
        "output_format": "md",
        "tags": [share.exercise],
        "visibility": share.visibility,
        "extra_data": data,
    }


def _test_output(run: TestRun) -> str:
    if run.outcome == NOT_RUN:
        return "This test did not run, so it earns no points: the grading stopped before it."
    if run.outcome == SKIPPED:
        return "This test was skipped, so it earns no points:\n\n" + _fenced(run.text)
    if run.outcome == FAILED:
        return _fenced(run.text or "failed")
    parts = [run.share.description] if run.share.description else []
    if run.rows:
        parts.append(_fenced(_table(run)))
    return "\n\n".join(parts) or "Passed."


def _missing_entry(exercise: ExerciseScore, reason: str) -> dict[str, Any]:
    return {
        "name": f"{exercise.title}: tests that did not report",
        "score": 0.0,
        "max_score": tidy(exercise.missing),
        "status": "failed",
        "output": f"These points were not graded: {strip_ansi(reason) or 'their tests never reported'}.",
        "output_format": "md",
        "tags": [exercise.key],
        "visibility": "visible",
        "extra_data": {"outcome": NOT_RUN},
    }


def _overview(results: Results, complete: bool, reason: str, notes: Sequence[str]) -> str:
    """The top-level output every student sees: it leaves out what hidden tests found."""
    visible = [t for t in results.tests.values() if t.share.visibility == "visible"]
    score = sum(t.score for t in visible)
    parts = []
    if not complete:
        parts.append(f"**Grading did not finish:** {_md(strip_ansi(reason))}. Tests that did not run earn no points.")
    if results.selection:
        parts.append(
            f"**Only some tests were graded:** these figures are of the {len(results.tests)} tests selected, "
            f"out of {format_points(results.total)} points; a run of every test is out of "
            f"{format_points(results.course_total)}."
        )
    hidden = results.hidden_points()
    if hidden:
        shown = sum(t.share.max_score for t in visible)
        later = "; ".join(f"{points_phrase(p)} in tests {HIDDEN_UNTIL[v]}" for v, p in hidden.items())
        parts.append(
            f"**Score on the tests shown now: {format_points(score)} / {format_points(shown)}.** "
            f"Of the {format_points(results.total)} points, {later}: they are graded, "
            "and their results appear when those tests are shown."
        )
    else:
        parts.append(f"**Score: {format_points(results.score)} / {format_points(results.total)}**")
    table = ["| exercise | points | tests passed |", "| --- | ---: | ---: |"]
    for e in results.exercises():
        shown_tests = [t for t in e.tests if t.share.visibility == "visible" and not _skipped_for_nothing(t)]
        if not shown_tests:
            continue
        got = sum(t.score for t in shown_tests)
        worth = sum(t.share.max_score for t in shown_tests)
        passed = sum(t.passed for t in shown_tests)
        table.append(
            f"| {_md(e.title)} | {format_points(got)} / {format_points(worth)} | {passed} / {len(shown_tests)} |"
        )
    if len(table) > 2:
        parts.append("\n".join(table))
    parts.extend(_md(note) for note in notes)
    return "\n\n".join(parts)


def _table(run: TestRun) -> str:
    from gradcheck_kit.report import Report

    return Report.from_dict({"title": run.share.name, "rows": run.rows}).to_text(color=False)


def _fenced(text: str) -> str:
    """``text`` as a markdown code block that nothing in it can close early."""
    text = strip_ansi(text)
    if len(text) > _OUTPUT_LIMIT:
        half = _OUTPUT_LIMIT // 2
        text = f"{text[:half]}\n[... {len(text) - 2 * half} characters left out ...]\n{text[-half:]}"
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def write_json(path: str | Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as strict JSON, atomically: a reader sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, allow_nan=False)
    # Not mkstemp, whose file only its owner may read: results.json gets the umask's mode.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------
# Checking a results.json against Gradescope's specification.

_TOP_KEYS = {
    "score", "execution_time", "output", "output_format", "test_output_format", "test_name_format",
    "visibility", "stdout_visibility", "extra_data", "tests", "leaderboard",
}  # fmt: skip
_TEST_KEYS = {
    "score", "max_score", "status", "name", "name_format", "number", "output", "output_format",
    "tags", "visibility", "extra_data",
}  # fmt: skip


def validate(data: Any) -> list[str]:
    """Say every way ``data`` departs from Gradescope's results.json specification; empty when it conforms."""
    if not isinstance(data, Mapping):
        return [f"results must be a JSON object, got {type(data).__name__}"]
    problems = [f"unknown top-level key {k!r}" for k in data if k not in _TOP_KEYS]
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        problems.append(f"not strict JSON: {exc}")
    problems += _check_fields(data, "results", number=("score", "execution_time"))
    for key in ("output_format", "test_output_format", "test_name_format"):
        if key in data and data[key] not in FORMATS:
            problems.append(f"{key} must be one of {', '.join(FORMATS)}, got {data[key]!r}")
    if "stdout_visibility" in data and data["stdout_visibility"] not in VISIBILITIES:
        problems.append(f"stdout_visibility must be one of {', '.join(VISIBILITIES)}")
    tests = data.get("tests", [])
    if not isinstance(tests, list):
        return [*problems, "tests must be a list"]
    if "score" not in data and (not tests or any(not isinstance(t, Mapping) or "score" not in t for t in tests)):
        problems.append("a top-level score is required unless every test has a score")
    for i, test in enumerate(tests):
        where = f"tests[{i}]"
        if not isinstance(test, Mapping):
            problems.append(f"{where} must be an object")
            continue
        problems += [f"{where}: unknown key {k!r}" for k in test if k not in _TEST_KEYS]
        problems += _check_fields(test, where, number=("score", "max_score"))
        if "status" in test and test["status"] not in ("passed", "failed"):
            problems.append(f"{where}: status must be 'passed' or 'failed', got {test['status']!r}")
        for key in ("name", "number"):
            if key in test and not isinstance(test[key], str):
                problems.append(f"{where}: {key} must be a string")
        for key in ("output_format", "name_format"):
            if key in test and test[key] not in FORMATS:
                problems.append(f"{where}: {key} must be one of {', '.join(FORMATS)}")
        tags = test.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            problems.append(f"{where}: tags must be a list of strings")
    for i, entry in enumerate(data.get("leaderboard", [])):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str) or "value" not in entry:
            problems.append(f"leaderboard[{i}] needs a name and a value")
        elif entry.get("order", "desc") not in ("asc", "desc"):
            problems.append(f"leaderboard[{i}]: order must be 'asc' or 'desc'")
    return problems


def _check_fields(item: Mapping[str, Any], where: str, number: tuple[str, ...]) -> list[str]:
    problems = []
    for key in number:
        value = item.get(key)
        if key in item and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
            problems.append(f"{where}: {key} must be a number, got {value!r}")
    if "output" in item and not isinstance(item["output"], str):
        problems.append(f"{where}: output must be a string")
    if "visibility" in item and item["visibility"] not in VISIBILITIES:
        problems.append(f"{where}: visibility must be one of {', '.join(VISIBILITIES)}, got {item['visibility']!r}")
    if "extra_data" in item and not isinstance(item["extra_data"], Mapping):
        problems.append(f"{where}: extra_data must be an object")
    return problems
