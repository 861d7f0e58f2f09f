"""Gradescope's results.json from the graded tests of a run, written even when the run ends early.

:class:`Results` collects what pytest reports about each graded test (plain data:
node id, phase, outcome, the test's ``user_properties``, the failure text), so it
works the same on the pytest-xdist controller as in a single process. It says
what each test scored under the :class:`~gradcheck_kit.autograder.points.Plan`, prints the
score line, and turns everything into the autograder format of
https://gradescope-autograders.readthedocs.io/en/latest/specs/ . Points of tests
that never reported (the run was stopped, a process died) stay in the total and
are listed as not graded, with the reason.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradcheck_kit.autograder.points import VISIBILITIES, Plan, Share
from gradcheck_kit.verdicts import NOT_STARTED, PLAN_PROPERTY, ROW_PROPERTY, RUNNING, TEST_PROPERTY, VERDICT_PROPERTY

__all__ = [
    "FORMATS",
    "PLAN_PROPERTY",
    "RUNNING",
    "TEST_PROPERTY",
    "Results",
    "TestRun",
    "format_points",
    "validate",
    "write_json",
]

#: Gradescope's output formats.
FORMATS = ("text", "simple_format", "html", "md", "ansi")

PASSED, FAILED, SKIPPED, NOT_RUN = "passed", "failed", "skipped", "not run"
_OUTPUT_LIMIT = 6000
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_WHEN = {
    "after_due_date": "hidden from students until after the due date",
    "after_published": "hidden from students until grades are published",
    "hidden": "never shown to students",
}


@dataclass
class TestRun:
    """What the run said about one graded test."""

    share: Share
    outcome: str = NOT_RUN
    rows: list[dict[str, Any]] = field(default_factory=list)
    verdict: str | None = None
    text: str = ""
    duration: float = 0.0

    @property
    def passed(self) -> bool:
        return self.outcome == PASSED

    @property
    def score(self) -> float:
        return self.share.max_score if self.passed else 0.0


@dataclass(frozen=True)
class _Exercise:
    key: str
    title: str
    points: float
    tests: tuple[TestRun, ...]

    @property
    def score(self) -> float:
        return sum(t.score for t in self.tests)

    @property
    def missing(self) -> float:
        """Points of this exercise in tests not even known to have been planned (their process died)."""
        left = self.points - sum(t.share.max_score for t in self.tests)
        return left if left > 1e-9 else 0.0


class Results:
    """The graded tests of one run and how each ended.

    Args:
        plan: the run's plan, when this process collected the tests; under
            pytest-xdist the controller learns it from the reports instead.
    """

    def __init__(self, plan: Plan | None = None) -> None:
        self.plan = Plan()
        self.tests: dict[str, TestRun] = {}
        self.problems: list[str] = []
        if plan is not None:
            self.expect(plan)

    def expect(self, plan: Plan) -> None:
        """Take ``plan`` as the run's, each of its tests not run until it reports."""
        self.plan = plan
        for nodeid, share in plan.shares.items():
            self.tests.setdefault(nodeid, TestRun(share))

    def add_report(
        self,
        nodeid: str,
        when: str,
        outcome: str,
        properties: Iterable[tuple[str, Any]],
        text: str = "",
        duration: float = 0.0,
    ) -> bool:
        """Take one phase's report of a test; return whether it was a graded test's last phase.

        Args:
            nodeid: the test.
            when: ``"setup"``, ``"call"`` or ``"teardown"``.
            outcome: ``"passed"``, ``"failed"`` or ``"skipped"``.
            properties: the report's ``user_properties``.
            text: the failure's text, or the reason of a skip.
            duration: the phase's seconds.
        """
        properties = list(properties)
        run = self.tests.get(nodeid)
        if run is None:
            share_data = next((v for k, v in properties if k == TEST_PROPERTY), None)
            if share_data is None:
                return False
            run = self.tests[nodeid] = TestRun(Share.from_dict(share_data))
        plan_data = next((v for k, v in properties if k == PLAN_PROPERTY), None)
        if plan_data is not None and not self.plan.exercises:
            summary = Plan.from_summary(plan_data)
            self.plan = Plan(self.plan.shares, summary.exercises, summary.titles)
        run.duration += duration
        if when == "call":
            rows = [row for key, row in properties if key == ROW_PROPERTY]
            run.rows = [{k: v for k, v in row.items() if k not in ("table", "order")} for row in rows]
            run.verdict = next((v for k, v in properties if k == VERDICT_PROPERTY), None)
        if outcome == FAILED:
            run.outcome = FAILED
            run.text = "\n\n".join(part for part in (run.text, text) if part)
        elif outcome == SKIPPED and run.outcome != FAILED:
            run.outcome = SKIPPED
            run.text = text
        elif outcome == PASSED and when == "call" and run.outcome == NOT_RUN:
            run.outcome = PASSED
        return when == "teardown"

    def add_problem(self, text: str) -> None:
        """Note something that went wrong outside any graded test (a collection error, say)."""
        self.problems.append(text)

    # -- figures -----------------------------------------------------------------

    def exercises(self) -> list[_Exercise]:
        keys = list(self.plan.exercises)
        keys += [t.share.exercise for t in self.tests.values() if t.share.exercise not in keys]
        out = []
        for key in dict.fromkeys(keys):
            tests = tuple(t for t in self.tests.values() if t.share.exercise == key)
            points = self.plan.exercises.get(key, sum(t.share.max_score for t in tests))
            out.append(_Exercise(key, self.plan.title(key), points, tests))
        return out

    @property
    def score(self) -> float:
        return _tidy(sum(t.score for t in self.tests.values()))

    @property
    def total(self) -> float:
        return _tidy(sum(e.points for e in self.exercises()))

    @property
    def complete(self) -> bool:
        """Whether every planned test reported."""
        return not any(e.missing for e in self.exercises()) and all(t.outcome != NOT_RUN for t in self.tests.values())

    def hidden_points(self) -> dict[str, float]:
        """Points of the tests students do not see at once, by visibility."""
        found: dict[str, float] = {}
        for run in self.tests.values():
            if run.share.visibility != "visible":
                found[run.share.visibility] = found.get(run.share.visibility, 0.0) + run.share.max_score
        return {v: _tidy(found[v]) for v in VISIBILITIES if v in found}

    def score_line(self) -> str:
        """``"Score: 73.5 / 100"``, saying how many of the points are in tests students see later or never."""
        line = f"Score: {format_points(self.score)} / {format_points(self.total)}"
        hidden = [f"{_points(p)} in tests {_WHEN[v]}" for v, p in self.hidden_points().items()]
        return line + (f" ({'; '.join(hidden)})" if hidden else "")

    def summary_lines(self) -> list[str]:
        """One line per exercise, one per failed test that has no table row to show it, then the score line."""
        exercises = self.exercises()
        width = max((len(e.title) for e in exercises), default=0)
        lines = []
        for e in exercises:
            ran = [t for t in e.tests if t.outcome != NOT_RUN]
            passed = sum(t.passed for t in e.tests)
            points = f"{format_points(e.score)} / {format_points(e.points)}"
            line = f"{e.title:<{width}}  {points:>11}   {passed} of {len(e.tests)} tests passed"
            skipped = [t for t in e.tests if t.outcome == SKIPPED]
            if skipped:
                line += f", {len(skipped)} skipped"
                reasons = {_headline(t.text) for t in skipped}
                if len(skipped) == len(e.tests) and len(reasons) == 1:
                    line += f": {reasons.pop()}"
            if len(ran) < len(e.tests) or e.missing:
                line += ", the others did not run"
            lines.append(line)
            for t in e.tests:
                if (t.outcome == FAILED or (t.outcome == SKIPPED and t.share.max_score)) and not t.rows:
                    lines.append(f"    {t.share.name}: {_outcome_line(t)}")
        lines.append(self.score_line())
        return lines

    # -- results.json --------------------------------------------------------------

    def to_gradescope(
        self,
        *,
        execution_time: float,
        complete: bool = True,
        reason: str = "",
        notes: Sequence[str] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The run as Gradescope's results.json.

        Args:
            execution_time: seconds the grading took.
            complete: False when the run stopped before its end.
            reason: why it stopped, or anything else wrong with the run as a whole.
            notes: lines for every student to read under the score (seeds, time limits).
            extra: more top-level ``extra_data``.
        """
        complete = complete and self.complete
        if not complete and not reason:
            reason = "the run stopped before every test had run"
        # Under pytest-xdist reports arrive in completion order: list the tests in the plan's.
        tests = [self._entry(t) for t in sorted(self.tests.values(), key=_order)]
        tests += [self._missing_entry(e, reason) for e in self.exercises() if e.missing]
        return {
            "score": self.score,
            "execution_time": round(max(execution_time, 0.0), 3),
            "output": self._overview(complete, reason, notes),
            "output_format": "md",
            "test_output_format": "md",
            "test_name_format": "text",
            "visibility": "visible",
            "stdout_visibility": "hidden",
            "extra_data": {
                "complete": complete,
                "reason": reason,
                "total": self.total,
                "hidden_points": self.hidden_points(),
                "problems": [_clean(p) for p in self.problems],
                **(extra or {}),
            },
            "tests": tests,
        }

    def _entry(self, run: TestRun) -> dict[str, Any]:
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
            "score": _tidy(run.score),
            "max_score": share.max_score,
            "status": "passed" if run.passed else "failed",
            "output": self._test_output(run),
            "output_format": "md",
            "tags": [share.exercise],
            "visibility": share.visibility,
            "extra_data": data,
        }

    def _test_output(self, run: TestRun) -> str:
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

    def _missing_entry(self, exercise: _Exercise, reason: str) -> dict[str, Any]:
        return {
            "name": f"{exercise.title}: tests that did not report",
            "score": 0.0,
            "max_score": _tidy(exercise.missing),
            "status": "failed",
            "output": f"These points were not graded: {_clean(reason) or 'their tests never reported'}.",
            "output_format": "md",
            "tags": [exercise.key],
            "visibility": "visible",
            "extra_data": {"outcome": NOT_RUN},
        }

    def _overview(self, complete: bool, reason: str, notes: Sequence[str]) -> str:
        """The top-level output every student sees: it leaves out what hidden tests found."""
        visible = [t for t in self.tests.values() if t.share.visibility == "visible"]
        score = sum(t.score for t in visible)
        parts = []
        if not complete:
            parts.append(f"**Grading did not finish:** {_md(_clean(reason))}. Tests that did not run earn no points.")
        hidden = self.hidden_points()
        if hidden:
            shown = sum(t.share.max_score for t in visible)
            later = "; ".join(f"{_points(p)} in tests {_WHEN[v]}" for v, p in hidden.items())
            parts.append(
                f"**Score on the tests shown now: {format_points(score)} / {format_points(shown)}.** "
                f"Of the {format_points(self.total)} points, {later}: they are graded, "
                "and their results appear when those tests are shown."
            )
        else:
            parts.append(f"**Score: {format_points(self.score)} / {format_points(self.total)}**")
        table = ["| exercise | points | tests passed |", "| --- | ---: | ---: |"]
        for e in self.exercises():
            shown_tests = [t for t in e.tests if t.share.visibility == "visible"]
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


def _order(run: TestRun) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in run.share.number.split("."))


def _table(run: TestRun) -> str:
    from gradcheck_kit.report import Report

    return Report.from_dict({"title": run.share.name, "rows": run.rows}).to_text(color=False)


def _outcome_line(run: TestRun) -> str:
    """``FAILED: why`` for a test's line under its exercise; a stub's says NOT STARTED, once."""
    headline = _headline(run.text)
    if run.verdict != NOT_STARTED:
        return f"{run.outcome.upper()}: {headline}"
    # "dlogits: NOT STARTED: not started (Exercise 2: ...)" -> "dlogits: Exercise 2: ..."
    headline = re.sub(r"^(\w+): NOT STARTED: ", r"\1: ", headline)
    headline = re.sub(r"not started \((.*)\)$", r"\1", headline)
    return f"NOT STARTED: {headline}"


def _headline(text: str) -> str:
    """The line of a failure's text that says the most: a diagnosis, else the last line (a skip's reason)."""
    lines = [line.strip() for line in _clean(text).splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("Falsifying example", "E ")):
            return line.removeprefix("E ").strip()
    for line in lines:
        if ": " in line and line.split(":", 1)[0].startswith("d"):
            return line
    return lines[-1].removeprefix("Skipped: ") if lines else ""


def _clean(text: str) -> str:
    return _ANSI.sub("", text)


def _fenced(text: str) -> str:
    """``text`` as a markdown code block that nothing in it can close early."""
    text = _clean(text)
    if len(text) > _OUTPUT_LIMIT:
        half = _OUTPUT_LIMIT // 2
        text = f"{text[:half]}\n[... {len(text) - 2 * half} characters left out ...]\n{text[-half:]}"
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _tidy(value: float) -> float:
    return round(value, 6)


def _points(value: float) -> str:
    return f"{format_points(value)} point{'' if value == 1 else 's'}"


def format_points(value: float) -> str:
    """``73.5``, ``100``, ``2.31``: at most two decimals, none when whole."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


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
