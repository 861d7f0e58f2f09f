"""The grading scheme of a course: what each graded test is worth, who sees it when, and how long code may run.

A course sets the scheme in ``exercises/points.toml``; the test files set defaults
with the ``gradcheck`` marker, on the module (``pytestmark``) for the exercise and
on a test function for that test::

    total = 100          # shared by the exercises given no points (default 100)
    timeout = 20         # seconds one call of a student's function may run

    [ex1]
    points = 60
    timeout = 30
    [ex1.tests]
    test_gradient = 52   # 2 points for each of the 26 gradients
    test_other_shapes = { points = 8, visibility = "after_due_date" }

The rules, applied by :meth:`Scheme.plan` to the tests a run collects:

- An exercise is worth its points in points.toml, else those of its module's
  marker, else the sum of its tests' points when each test has some, else an
  equal share of what ``total`` leaves.
- A test function is worth its entry in ``[exN.tests]``, else the points of its
  own marker, else an equal share of what the exercise's other tests leave.
- A test function's points are shared equally by its parametrisations other than
  the device (exercise 1: one per gradient), and each share equally by the
  devices it runs on. A device skipped before the test starts (no CUDA) takes no
  share, so the total is the same on a machine with or without a GPU; a mistake
  that shows only on CUDA costs points only where CUDA ran.
- A test left out of the run (``-k``, ``-m``, a node id, ``--lf``, a file not
  named) keeps its points out of the run's total and does not inflate the rest:
  shares are computed over every test collected, before any selection, and an
  exercise of points.toml whose file was not collected still takes its points.
- Visibility, one of Gradescope's ``hidden``, ``after_due_date``,
  ``after_published`` and ``visible``: the test's points.toml entry, else its
  marker, else the exercise's points.toml entry, else the module's marker, else
  ``visible``.
- Time limit per call: ``--gradcheck-timeout`` when given, else the exercise's
  ``timeout``, else the top-level ``timeout``, else 60 seconds.

A ``[leaderboard]`` table puts a run's figures on Gradescope's leaderboard, one
column each, named by the value::

    [leaderboard]
    speedup = "fused speed-up"   # the speed line's ratio: fused (ex 2-4) over chunked (ex 1)

``visibility = "hidden"`` on an exercise or test worth points is allowed, and loading
it warns (:class:`SchemeWarning`): while a test worth points is hidden, Gradescope
shows students no total score at all. ``after_due_date`` or ``after_published`` hide
the test's result for a while and show the total.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_TOTAL",
    "LEADERBOARD_METRICS",
    "VISIBILITIES",
    "CollectedTest",
    "ExerciseRule",
    "Plan",
    "Scheme",
    "SchemeError",
    "SchemeWarning",
    "Share",
    "TestRule",
]

#: Gradescope's visibility values, most hidden first.
VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")
DEFAULT_TOTAL = 100.0
#: The figures a run can put on Gradescope's leaderboard, and their order there: "desc" when more is better.
LEADERBOARD_METRICS = {"speedup": "desc"}
_MARK_KEYS = frozenset({"exercise", "points", "visibility"})
_EPS = 1e-9


class SchemeError(ValueError):
    """The points, visibility or time limits are set in a way that cannot be applied."""


class SchemeWarning(UserWarning):
    """The scheme can be applied, but probably not as meant (a hidden test worth points)."""


@dataclass(frozen=True)
class TestRule:
    """What points.toml says about one test function."""

    points: float | None = None
    visibility: str | None = None


@dataclass(frozen=True)
class ExerciseRule:
    """What points.toml says about one exercise."""

    points: float | None = None
    visibility: str | None = None
    timeout: float | None = None
    tests: Mapping[str, TestRule] = field(default_factory=dict)


@dataclass(frozen=True)
class CollectedTest:
    """One collected test as the scheme sees it.

    Args:
        nodeid: pytest's id of the test.
        function: the test function's name, the key of ``[exN.tests]``.
        params: its parametrisation other than the device.
        device: the ``device`` parameter, if any.
        module_marks: keyword arguments of the module's ``gradcheck`` markers, closest first.
        test_marks: keyword arguments of the test's own ``gradcheck`` markers, closest first.
        runs: False when it is skipped before it starts (a device that is absent).
        description: the first line of its docstring.
    """

    nodeid: str
    function: str
    params: Mapping[str, str] = field(default_factory=dict)
    device: str | None = None
    module_marks: Sequence[Mapping[str, Any]] = ()
    test_marks: Sequence[Mapping[str, Any]] = ()
    runs: bool = True
    description: str = ""


@dataclass(frozen=True)
class Share:
    """What one graded test is worth, and how Gradescope lists it."""

    nodeid: str
    exercise: str
    name: str
    number: str
    max_score: float
    visibility: str = "visible"
    description: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Share:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


@dataclass(frozen=True)
class Plan:
    """The shares of a run's graded tests, the points of each exercise, and those of a run of every test.

    A run that selects some of the tests (``-k``, ``-m``, node ids, ``--lf``, some of
    the test files) keeps each test's share as it is in a run of every test: only the
    total changes, to the points of the tests selected.

    Args:
        shares: the share of each graded test that runs, by node id, in the course's order.
        exercises: each exercise's points in this run: those of its tests that run.
        titles: each exercise's title.
        course: each exercise's points in a run of every test of the course.
        left_out: per exercise, how many of its collected graded tests this run leaves out.
        uncollected: the exercises of points.toml none of whose tests were collected.
    """

    shares: Mapping[str, Share] = field(default_factory=dict)
    exercises: Mapping[str, float] = field(default_factory=dict)
    titles: Mapping[str, str] = field(default_factory=dict)
    course: Mapping[str, float] = field(default_factory=dict)
    left_out: Mapping[str, int] = field(default_factory=dict)
    uncollected: tuple[str, ...] = ()

    @property
    def total(self) -> float:
        return sum(self.exercises.values())

    @property
    def course_total(self) -> float:
        """The points of a run of every test of the course."""
        return sum(self.course.values()) if self.course else self.total

    @property
    def selection(self) -> bool:
        """Whether this run grades only some of the course's tests."""
        return any(self.left_out.values()) or bool(self.uncollected)

    def title(self, exercise: str) -> str:
        return self.titles.get(exercise, exercise)

    def restricted(self, nodeids: Iterable[str]) -> Plan:
        """The plan of the selected tests only; the others' points leave the total, not the course's."""
        keep = set(nodeids)
        shares = {k: s for k, s in self.shares.items() if k in keep}
        points: dict[str, float] = {}
        for share in shares.values():
            points[share.exercise] = points.get(share.exercise, 0.0) + share.max_score
        left_out = dict(self.left_out)
        for nodeid, share in self.shares.items():
            if nodeid not in keep:
                left_out[share.exercise] = left_out.get(share.exercise, 0) + 1
        tidy = {k: _tidy(v) for k, v in points.items()}
        return Plan(shares, tidy, self.titles, self.course, left_out, self.uncollected)

    def summary(self) -> dict[str, Any]:
        """The plan without its shares: small enough to travel on every test report."""
        return {
            "total": _tidy(self.total),
            "exercises": {k: {"title": self.title(k), "points": v} for k, v in self.exercises.items()},
            "course": dict(self.course),
            "left_out": dict(self.left_out),
            "uncollected": list(self.uncollected),
        }

    @classmethod
    def from_summary(cls, data: Mapping[str, Any]) -> Plan:
        exercises = data.get("exercises", {})
        return cls(
            {},
            {k: float(v["points"]) for k, v in exercises.items()},
            {k: v["title"] for k, v in exercises.items()},
            {k: float(v) for k, v in data.get("course", {}).items()},
            {k: int(v) for k, v in data.get("left_out", {}).items()},
            tuple(data.get("uncollected", ())),
        )


@dataclass(frozen=True)
class Scheme:
    """The points, visibility and time limits of a course (see the module's docstring)."""

    exercises: Mapping[str, ExerciseRule] = field(default_factory=dict)
    total: float | None = None
    timeout: float | None = None
    source: str = "points.toml"
    leaderboard: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> Scheme:
        """Read a points.toml; a missing file is the default scheme.

        Raises:
            SchemeError: when the file is not valid TOML or sets something unknown or out of range.
        """
        path = Path(path)
        if not path.is_file():
            return cls(source=str(path))
        from gradcheck_kit import _toml

        try:
            data = _toml.loads(path.read_text(encoding="utf-8"))
        except _toml.TOMLDecodeError as exc:
            raise SchemeError(f"{path}: {exc}") from exc
        scheme = cls.from_dict(data, source=str(path))
        for message in scheme.warnings():
            warnings.warn(message, SchemeWarning, stacklevel=2)
        return scheme

    def warnings(self) -> list[str]:
        """What is set in a way that is allowed but probably not meant, one sentence each."""
        found = []
        for key, rule in self.exercises.items():
            where = [f"[{key}]"] if rule.visibility == "hidden" and rule.points != 0 else []
            if rule.points != 0:
                where += [
                    f"[{key}.tests] {name}"
                    for name, test in rule.tests.items()
                    if test.visibility == "hidden" and test.points != 0
                ]
            found += [
                f'{self.source} {place}: visibility = "hidden" on tests worth points: Gradescope then shows '
                'students no total score at all; use "after_due_date" or "after_published" to show the '
                "results later, or give those tests 0 points"
                for place in where
            ]
        return found

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "points.toml") -> Scheme:
        top = {k: v for k, v in data.items() if not isinstance(v, Mapping)}
        _check_keys(top, {"total", "timeout"}, source)
        leaderboard = _leaderboard(data.get("leaderboard", {}), f"{source} [leaderboard]")
        exercises = {}
        for key, value in data.items():
            if isinstance(value, Mapping) and key != "leaderboard":
                where = f"{source} [{key}]"
                _check_keys(value, {"points", "visibility", "timeout", "tests"}, where)
                tests = value.get("tests", {})
                if not isinstance(tests, Mapping):
                    raise SchemeError(f"{where}: tests must be a table of test names, got {tests!r}")
                exercises[key] = ExerciseRule(
                    points=_points(value.get("points"), where),
                    visibility=_visibility(value.get("visibility"), where),
                    timeout=_seconds(value.get("timeout"), where),
                    tests={name: _test_rule(rule, f"{source} [{key}.tests] {name}") for name, rule in tests.items()},
                )
        total, timeout = _points(top.get("total"), source, "total"), _seconds(top.get("timeout"), source)
        return cls(exercises, total, timeout, source, leaderboard)

    def leaderboard_entries(self, figures: Mapping[str, float]) -> list[dict[str, Any]]:
        """Gradescope's ``leaderboard``: a column per figure set in ``[leaderboard]`` that the run measured."""
        return [
            {"name": name, "value": round(figures[metric], 3), "order": LEADERBOARD_METRICS[metric]}
            for metric, name in self.leaderboard.items()
            if figures.get(metric) is not None
        ]

    def time_limits(self, fallback: float) -> tuple[float, dict[str, float]]:
        """Seconds one call may run: the default, and each exercise's that points.toml lists."""
        default = self.timeout if self.timeout is not None else fallback
        return default, {key: self.timeout_for(key, fallback) for key in self.exercises}

    def timeout_for(self, exercise: str, fallback: float) -> float:
        """Seconds one call of ``exercise``'s function may run."""
        rule = self.exercises.get(exercise)
        if rule is not None and rule.timeout is not None:
            return rule.timeout
        return self.timeout if self.timeout is not None else fallback

    def plan(self, tests: Sequence[CollectedTest], titles: Mapping[str, str] | None = None) -> Plan:
        """Share the points among ``tests``, every test collected, in the course's order.

        ``tests`` are all the tests the run collected, also those a selection leaves
        out (:meth:`Plan.restricted` takes them out after): a test's share must not
        depend on which others run. The exercises of points.toml none of whose tests
        were collected still count as they would in a run of every test. Tests with no
        ``gradcheck`` marker naming an exercise are not graded.

        Raises:
            SchemeError: when points cannot be shared as set (more given out than there is,
                or a fully listed exercise whose tests' points do not add up).
        """
        by_exercise: dict[str, list[CollectedTest]] = {}
        for test in tests:
            _check_marks(test)
            exercise = _first(test.test_marks, "exercise") or _first(test.module_marks, "exercise")
            if exercise is not None:
                by_exercise.setdefault(str(exercise), []).append(test)

        uncollected = tuple(ex for ex in self.exercises if ex not in by_exercise)
        functions = {ex: self._function_points(ex, ts) for ex, ts in by_exercise.items()}
        functions.update({ex: self._listed_points(ex) for ex in uncollected})
        points = self._exercise_points({**by_exercise, **{ex: [] for ex in uncollected}}, functions)
        shares: dict[str, Share] = {}
        titles = dict(titles or {})
        for index, (exercise, ts) in enumerate(by_exercise.items(), start=1):
            fixed = self._fill(exercise, functions[exercise], points[exercise])
            number = _exercise_number(exercise, index)
            running = [t for t in ts if t.runs]
            worth = _per_test(running, fixed)
            for k, test in enumerate(running, start=1):
                shares[test.nodeid] = Share(
                    nodeid=test.nodeid,
                    exercise=exercise,
                    name=_name(titles.get(exercise, exercise), test),
                    number=f"{number}.{k}",
                    max_score=_tidy(worth[test.nodeid]),
                    visibility=self._visibility(exercise, test),
                    description=test.description,
                )
        return Plan(shares, {}, titles, {k: _tidy(v) for k, v in points.items()}, {}, uncollected).restricted(shares)

    # -- points ----------------------------------------------------------------

    def _function_points(self, exercise: str, tests: Sequence[CollectedTest]) -> dict[str, float | None]:
        rule = self.exercises.get(exercise, ExerciseRule())
        found: dict[str, float | None] = {}
        for test in tests:
            if test.function in found:
                continue
            configured = rule.tests.get(test.function, TestRule()).points
            found[test.function] = configured if configured is not None else _first(test.test_marks, "points")
        return found

    def _listed_points(self, exercise: str) -> dict[str, float | None]:
        """The points of an exercise's tests as points.toml lists them: all there is of one not collected."""
        return {name: rule.points for name, rule in self.exercises[exercise].tests.items()}

    def _exercise_points(
        self, by_exercise: Mapping[str, Sequence[CollectedTest]], functions: Mapping[str, Mapping[str, float | None]]
    ) -> dict[str, float]:
        explicit: dict[str, float | None] = {}
        for exercise, tests in by_exercise.items():
            rule = self.exercises.get(exercise, ExerciseRule())
            marked = _first(tests[0].module_marks, "points") if tests else None
            value = rule.points if rule.points is not None else marked
            if value is None and functions[exercise] and all(v is not None for v in functions[exercise].values()):
                value = sum(v for v in functions[exercise].values() if v is not None)
            explicit[exercise] = None if value is None else float(value)
        total = DEFAULT_TOTAL if self.total is None else self.total
        given = sum(v for v in explicit.values() if v is not None)
        open_ = [ex for ex, v in explicit.items() if v is None]
        left = total - given
        if open_ and left < -_EPS:
            raise SchemeError(
                f"{self.source}: the exercises given points add up to {_fmt(given)}, more than the total "
                f"{_fmt(total)}, and nothing is left for {', '.join(open_)}"
            )
        every_listed = all(by_exercise.get(ex) for ex in self.exercises) and self.exercises
        if not open_ and self.total is not None and every_listed and abs(left) > _EPS:
            raise SchemeError(
                f"{self.source}: the exercises' points add up to {_fmt(given)}, not total = {_fmt(total)}"
            )
        share = left / len(open_) if open_ else 0.0
        return {ex: (v if v is not None else share) for ex, v in explicit.items()}

    def _fill(self, exercise: str, functions: Mapping[str, float | None], points: float) -> dict[str, float]:
        given = sum(v for v in functions.values() if v is not None)
        open_ = [name for name, v in functions.items() if v is None]
        left = points - given
        if left < -_EPS:
            raise SchemeError(
                f"{self.source}: the tests of {exercise} are given {_fmt(given)} points, "
                f"more than the exercise's {_fmt(points)}"
            )
        listed = self.exercises.get(exercise, ExerciseRule()).tests
        if not open_ and listed and all(name in functions for name in listed) and abs(left) > _EPS:
            raise SchemeError(
                f"{self.source}: the tests of {exercise} are given {_fmt(given)} of its {_fmt(points)} points "
                "and no other test shares the rest"
            )
        share = left / len(open_) if open_ else 0.0
        return {name: (v if v is not None else share) for name, v in functions.items()}

    def _visibility(self, exercise: str, test: CollectedTest) -> str:
        rule = self.exercises.get(exercise, ExerciseRule())
        for value in (
            rule.tests.get(test.function, TestRule()).visibility,
            _first(test.test_marks, "visibility"),
            rule.visibility,
            _first(test.module_marks, "visibility"),
        ):
            if value is not None:
                return str(value)
        return "visible"


def _per_test(running: Sequence[CollectedTest], function_points: Mapping[str, float]) -> dict[str, float]:
    """Split each function's points equally by variant, then each variant's equally by device."""
    variants: dict[str, dict[tuple[tuple[str, str], ...], list[str]]] = {}
    for test in running:
        key = tuple(sorted(test.params.items()))
        variants.setdefault(test.function, {}).setdefault(key, []).append(test.nodeid)
    worth: dict[str, float] = {}
    for function, groups in variants.items():
        per_variant = function_points.get(function, 0.0) / len(groups)
        for nodeids in groups.values():
            for nodeid in nodeids:
                worth[nodeid] = per_variant / len(nodeids)
    return worth


def _name(title: str, test: CollectedTest) -> str:
    """``"exercise 1: chunked backward [cpu]: dlogprobs"``: stable across submissions, for Gradescope's statistics."""
    params = dict(test.params)
    gradient = params.pop("name", None)
    label = f"d{gradient}" if gradient is not None else test.function.removeprefix("test_").replace("_", " ")
    if params:
        label += " (" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")"
    device = f" [{test.device}]" if test.device else ""
    return f"{title}{device}: {label}"


def _exercise_number(exercise: str, index: int) -> str:
    match = re.fullmatch(r"\D*(\d+)", exercise)
    return match.group(1) if match else str(index)


def _first(marks: Sequence[Mapping[str, Any]], key: str) -> Any:
    for mark in marks:
        if mark.get(key) is not None:
            return mark[key]
    return None


def _check_marks(test: CollectedTest) -> None:
    where = f"the gradcheck marker of {test.nodeid}"
    for mark in (*test.test_marks, *test.module_marks):
        unknown = set(mark) - _MARK_KEYS
        if unknown:
            raise SchemeError(f"{where}: unknown argument {sorted(unknown)[0]!r}; use exercise, points, visibility")
        _points(mark.get("points"), where)
        _visibility(mark.get("visibility"), where)


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise SchemeError(f"{where}: unknown key {unknown[0]!r}; expected one of {', '.join(sorted(allowed))}")


def _leaderboard(table: Any, where: str) -> dict[str, str]:
    if not isinstance(table, Mapping):
        raise SchemeError(f'{where}: must be a table of figure = "column name", got {table!r}')
    _check_keys(table, set(LEADERBOARD_METRICS), where)
    for metric, name in table.items():
        if not isinstance(name, str) or not name.strip():
            raise SchemeError(f"{where} {metric}: the value is the leaderboard column's name, got {name!r}")
    return dict(table)


def _test_rule(value: Any, where: str) -> TestRule:
    if isinstance(value, Mapping):
        _check_keys(value, {"points", "visibility"}, where)
        return TestRule(_points(value.get("points"), where), _visibility(value.get("visibility"), where))
    return TestRule(_points(value, where))


def _points(value: Any, where: str, what: str = "points") -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise SchemeError(f"{where}: {what} must be a number of at least 0, got {value!r}")
    return float(value)


def _seconds(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise SchemeError(f"{where}: timeout must be a number of seconds above 0, got {value!r}")
    return float(value)


def _visibility(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if value not in VISIBILITIES:
        raise SchemeError(f"{where}: visibility must be one of {', '.join(VISIBILITIES)}, got {value!r}")
    return str(value)


def _tidy(value: float) -> float:
    # 60 / 26 * 26 should read 60, not 59.99999999999999.
    return round(value, 9)


def _fmt(value: float) -> str:
    return f"{value:.6g}"
