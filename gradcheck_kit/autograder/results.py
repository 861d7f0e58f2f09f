"""What each graded test of a run scored, and the score lines the run ends with.

:class:`Results` collects what pytest reports about each graded test (plain data:
node id, phase, outcome, the test's ``user_properties``, the failure text), so it
works the same on the pytest-xdist controller as in a single process. It says what
each test scored under the :class:`~gradcheck_kit.autograder.points.Plan`, and
sums it up per exercise and for the run. Points of tests that never reported (the
run was stopped, a process died) stay in the total as not graded.
:mod:`gradcheck_kit.autograder.gradescope` writes the same results as Gradescope's
results.json.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from gradcheck_kit.autograder.points import VISIBILITIES, Plan, Share
from gradcheck_kit.verdicts import NOT_STARTED, PLAN_PROPERTY, ROW_PROPERTY, TEST_PROPERTY, VERDICT_PROPERTY

__all__ = [
    "FAILED",
    "HIDDEN_UNTIL",
    "NOT_RUN",
    "PASSED",
    "SKIPPED",
    "ExerciseScore",
    "Results",
    "TestRun",
    "format_points",
    "headline",
    "points_phrase",
    "strip_ansi",
    "tidy",
]

#: How a graded test ended.
PASSED, FAILED, SKIPPED, NOT_RUN = "passed", "failed", "skipped", "not run"
#: What each of Gradescope's visibilities other than "visible" means for a student.
HIDDEN_UNTIL = {
    "after_due_date": "hidden from students until after the due date",
    "after_published": "hidden from students until grades are published",
    "hidden": "never shown to students",
}
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


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
class ExerciseScore:
    """One exercise's graded tests in a run, and the points they are worth together.

    Args:
        key: the exercise's key (``"ex1"``).
        title: its title.
        points: what its tests in this run are worth.
        tests: those tests, in the plan's order.
        course_points: what it is worth in a run of every test; None when this run has every test of it.
    """

    key: str
    title: str
    points: float
    tests: tuple[TestRun, ...]
    course_points: float | None = None

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
            self.plan = replace(Plan.from_summary(plan_data), shares=self.plan.shares)
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

    def ordered(self) -> list[TestRun]:
        """Every graded test in the plan's order, whatever order they reported in."""
        return sorted(self.tests.values(), key=_order)

    def exercises(self) -> list[ExerciseScore]:
        keys = list(self.plan.exercises)
        tests = self.ordered()
        keys += [t.share.exercise for t in tests if t.share.exercise not in keys]
        out = []
        for key in dict.fromkeys(keys):
            mine = tuple(t for t in tests if t.share.exercise == key)
            points = self.plan.exercises.get(key, sum(t.share.max_score for t in mine))
            partial = self.plan.left_out.get(key, 0) > 0
            course = self.plan.course.get(key, points) if partial else None
            out.append(ExerciseScore(key, self.plan.title(key), points, mine, course))
        return out

    @property
    def score(self) -> float:
        return tidy(sum(t.score for t in self.tests.values()))

    @property
    def total(self) -> float:
        return tidy(sum(e.points for e in self.exercises()))

    @property
    def selection(self) -> bool:
        """Whether the run grades only some of the course's tests (``-k``, a node id, ``--lf``, ...)."""
        return self.plan.selection

    @property
    def course_total(self) -> float:
        """The points of a run of every test of the course."""
        return tidy(self.plan.course_total) if self.plan.course else self.total

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
        return {v: tidy(found[v]) for v in VISIBILITIES if v in found}

    def score_line(self) -> str:
        """``"Score: 73.5 / 100"``, saying how many of the points are in tests students see later or never.

        A run of some of the tests says so, and gives the score of those against their
        own total: ``"Score of the 3 selected tests: 8 / 8 (the full run is out of 100)"``.
        """
        figures = f"{format_points(self.score)} / {format_points(self.total)}"
        notes = [f"{points_phrase(p)} in tests {HIDDEN_UNTIL[v]}" for v, p in self.hidden_points().items()]
        if not self.selection:
            return f"Score: {figures}" + (f" ({'; '.join(notes)})" if notes else "")
        notes.insert(0, f"the full run is out of {format_points(self.course_total)}")
        return f"Score of the {_tests_phrase(len(self.tests), 'selected')}: {figures} ({'; '.join(notes)})"

    def summary_lines(self) -> list[str]:
        """One line per exercise, one per failed test that has no table row to show it, then the score line."""
        exercises = self.exercises()
        width = max((len(e.title) for e in exercises), default=0)
        lines = []
        for e in exercises:
            ran = [t for t in e.tests if t.outcome != NOT_RUN]
            passed = sum(t.passed for t in e.tests)
            points = f"{format_points(e.score)} / {format_points(e.points)}"
            tests = "selected tests" if e.course_points is not None else "tests"
            line = f"{e.title:<{width}}  {points:>11}   {passed} of {len(e.tests)} {tests} passed"
            skipped = [t for t in e.tests if t.outcome == SKIPPED]
            if skipped:
                line += f", {len(skipped)} skipped"
                reasons = {headline(t.text) for t in skipped}
                if len(skipped) == len(e.tests) and len(reasons) == 1:
                    line += f": {reasons.pop()}"
            if len(ran) < len(e.tests) or e.missing:
                line += ", the others did not run"
            if e.course_points is not None:
                line += f" (the full exercise is out of {format_points(e.course_points)})"
            lines.append(line)
            for t in e.tests:
                if (t.outcome == FAILED or (t.outcome == SKIPPED and t.share.max_score)) and not t.rows:
                    lines.append(f"    {t.share.name}: {_outcome_line(t)}")
        lines.append(self.score_line())
        return lines


def _tests_phrase(count: int, kind: str) -> str:
    """``"3 selected tests"``, ``"1 selected test"``."""
    return f"{count} {kind} test{'' if count == 1 else 's'}"


def _order(run: TestRun) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in run.share.number.split("."))


def _outcome_line(run: TestRun) -> str:
    """``FAILED: why`` for a test's line under its exercise; a stub's says NOT STARTED, once."""
    text = headline(run.text)
    if run.verdict != NOT_STARTED:
        return f"{run.outcome.upper()}: {text}"
    # "dlogits: NOT STARTED: not started (Exercise 2: ...)" -> "dlogits: Exercise 2: ..."
    text = re.sub(r"^(\w+): NOT STARTED: ", r"\1: ", text)
    text = re.sub(r"not started \((.*)\)$", r"\1", text)
    return f"NOT STARTED: {text}"


def headline(text: str) -> str:
    """The line of a failure's text that says the most: a diagnosis, else the last line (a skip's reason)."""
    lines = [line.strip() for line in strip_ansi(text).splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("Falsifying example", "E ")):
            return line.removeprefix("E ").strip()
    for line in lines:
        if ": " in line and line.split(":", 1)[0].startswith("d"):
            return line
    return lines[-1].removeprefix("Skipped: ") if lines else ""


def strip_ansi(text: str) -> str:
    """``text`` without the terminal's colour codes."""
    return _ANSI.sub("", text)


def tidy(value: float) -> float:
    """``value`` rounded off the float noise of summing shares: 60 / 26 * 26 is 60."""
    return round(value, 6)


def points_phrase(value: float) -> str:
    """``"1 point"``, ``"13 points"``."""
    return f"{format_points(value)} point{'' if value == 1 else 's'}"


def format_points(value: float) -> str:
    """``73.5``, ``100``, ``2.31``: at most two decimals, none when whole."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text
