"""Grading configuration of the exercises: which implementation is graded, how it is run, and what it scores.

Points, visibility and time limits come from ``points.toml`` next to this file and
from the ``gradcheck`` markers of the test files (see :mod:`gradcheck_kit.autograder.points`).
Each test's share travels on its reports' ``user_properties``, so the process that
prints the score and writes Gradescope's results.json (the pytest-xdist
controller, or the only process) sees every test without collecting any.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

EXERCISES_DIR = Path(__file__).parent
POINTS_FILE = EXERCISES_DIR / "points.toml"

_scheme_key = pytest.StashKey[Any]()
_results_key = pytest.StashKey[Any]()
_plan_key = pytest.StashKey[Any]()
_started_key = pytest.StashKey[float]()
_benchmarks_key = pytest.StashKey[Any]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gradcheck")
    group.addoption(
        "--impl",
        metavar="DIR",
        default=None,
        help="folder of the implementation to grade, with the file names of exercises/ (default: exercises/)",
    )
    group.addoption(
        "--gradescope",
        metavar="PATH",
        default=None,
        help="write Gradescope's results.json to PATH, also when the run stops early",
    )


def _impl_dir(config: pytest.Config) -> Path:
    value = config.getoption("impl")
    if value is None:
        return EXERCISES_DIR
    for base in (Path.cwd(), config.rootpath):
        candidate = (base / value).resolve()
        if candidate.is_dir():
            return candidate
    raise pytest.UsageError(f"--impl {value}: no such folder (looked in {Path.cwd()} and {config.rootpath})")


def _benchmark_only(config: pytest.Config) -> bool:
    """pytest-benchmark's --benchmark-only: every grading test is skipped, so there is no score to give."""
    return bool(config.getoption("benchmark_only", False))


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _refuse_imported_conftests(config: pytest.Config, impl_dir: Path) -> None:
    """Stop when pytest imported a conftest.py of the graded folder: student code inside the grader.

    pytest reads the command line once before this file defines --impl, and takes the
    DIR of ``--impl DIR`` for a test path, whose conftest.py files it imports.
    """
    if impl_dir == EXERCISES_DIR:
        return
    here = Path(__file__).resolve()
    for plugin in config.pluginmanager.get_plugins():
        file = getattr(plugin, "__file__", None)
        if file and Path(file).resolve() != here and Path(file).resolve().is_relative_to(impl_dir):
            raise pytest.UsageError(
                f"{file} was imported by pytest as a conftest, running the graded code inside the grader; "
                f"write --impl={config.getoption('impl')} (one word) so that pytest does not take the folder for tests"
            )


def pytest_configure(config: pytest.Config) -> None:
    from gradcheck_kit.autograder.gradescope import Results
    from gradcheck_kit.autograder.points import Scheme, SchemeError

    _refuse_imported_conftests(config, _impl_dir(config))
    if _benchmark_only(config) and config.getoption("gradescope"):
        raise pytest.UsageError(
            "--gradescope with --benchmark-only would write a results.json with every grading test skipped; "
            "grade without --benchmark-only"
        )
    try:
        config.stash[_scheme_key] = Scheme.load(POINTS_FILE)
    except SchemeError as exc:
        raise pytest.UsageError(str(exc)) from exc
    config.stash[_results_key] = Results()
    config.stash[_started_key] = time.monotonic()
    if not _is_xdist_worker(config):
        config.pluginmanager.register(_Recorder(config), "gradcheck-results")


def pytest_report_header(config: pytest.Config) -> list[str]:
    from gradcheck_kit.plugin import DEFAULT_SEED

    return [
        f"grading: {_impl_dir(config)}",
        f"time limit per call: {_describe_limits(config)}",
        f"reproducible: forward pass seed {DEFAULT_SEED} (the notebook's); "
        "other shapes: hypothesis, derandomized (the same configurations every run)",
    ]


def _time_limits(config: pytest.Config) -> tuple[float, dict[str, float]]:
    """Seconds per call: the default and each exercise's; --gradcheck-timeout, when given, is every exercise's."""
    from gradcheck_kit.autograder.points import given_on_command_line

    option = float(config.getoption("gradcheck_timeout"))
    args = [str(a) for a in config.invocation_params.args]
    if given_on_command_line("--gradcheck-timeout", args, os.environ.get("PYTEST_ADDOPTS", "")):
        return option, {}
    scheme = config.stash[_scheme_key]
    default = scheme.timeout if scheme.timeout is not None else option
    return default, {key: scheme.timeout_for(key, option) for key in scheme.exercises}


def _describe_limits(config: pytest.Config) -> str:
    default, limits = _time_limits(config)
    others = [f"{key} {seconds:g} s" for key, seconds in limits.items() if seconds != default]
    return f"{default:g} s" + (f" ({', '.join(others)})" if others else "")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # Before deselection (-k, -m): the shares are those of every collected test.
    from gradcheck_kit.autograder.points import SchemeError

    try:
        plan = config.stash[_scheme_key].plan([_collected(item) for item in items], _titles())
    except SchemeError as exc:
        raise pytest.UsageError(str(exc)) from exc
    config.stash[_plan_key] = plan


def pytest_collection_finish(session: pytest.Session) -> None:
    from gradcheck_kit.autograder.gradescope import PLAN_PROPERTY, TEST_PROPERTY

    config = session.config
    plan = config.stash.get(_plan_key, None)
    if plan is None:
        return
    plan = plan.restricted(item.nodeid for item in session.items)
    summary = plan.summary()
    for item in session.items:
        share = plan.shares.get(item.nodeid)
        if share is not None:
            item.user_properties.append((TEST_PROPERTY, share.as_dict()))
            item.user_properties.append((PLAN_PROPERTY, summary))
    if not _is_xdist_worker(config):
        config.stash[_results_key].expect(plan)


def _collected(item: pytest.Item) -> Any:
    from gradcheck_kit.autograder.points import CollectedTest

    module_marks, test_marks = [], []
    for node, mark in item.iter_markers_with_node("gradcheck"):
        kwargs = dict(mark.kwargs)
        if mark.args:
            kwargs.setdefault("exercise", mark.args[0])
        (test_marks if isinstance(node, (pytest.Function, pytest.Class)) else module_marks).append(kwargs)
    callspec = getattr(item, "callspec", None)
    params = {k: str(v) for k, v in callspec.params.items()} if callspec else {}
    device = params.pop("device", None)
    skipped = any(
        m.name == "skip" or (m.name == "skipif" and m.args and m.args[0] is True) for m in item.iter_markers()
    )
    doc = (getattr(getattr(item, "obj", None), "__doc__", None) or "").strip()
    return CollectedTest(
        nodeid=item.nodeid,
        function=getattr(item, "originalname", item.name),
        params=params,
        device=device,
        module_marks=tuple(module_marks),
        test_marks=tuple(test_marks),
        runs=not skipped,
        description=doc.splitlines()[0] if doc else "",
    )


def _titles() -> dict[str, str]:
    from gradcheck_kit.course.catalogue import EXERCISES

    return {key: exercise.title for key, exercise in EXERCISES.items()}


# pytest-xdist starts a worker's failure text with "[gw0] linux -- Python 3.11.7 /usr/bin/python".
_XDIST_HEADER = re.compile(r"\A\[gw\d+\] [^\n]*\n")


class _Recorder:
    """Hands every report to the run's Results and keeps results.json up to date; on the controller only."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.results = config.stash[_results_key]
        self.written = False

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.results.add_problem(f"collecting {report.nodeid or 'the tests'} failed:\n{report.longreprtext}")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        from gradcheck_kit.autograder.gradescope import RUNNING

        # Under pytest-xdist this runs on the controller for every worker's report.
        text = _XDIST_HEADER.sub("", report.longreprtext, count=1).lstrip("\n") if report.failed else ""
        if report.skipped and isinstance(report.longrepr, tuple):
            text = str(report.longrepr[2])
        finished = self.results.add_report(
            report.nodeid, report.when, report.outcome, report.user_properties, text, report.duration
        )
        if finished:
            self.write(complete=False, reason=RUNNING)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        complete = exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
        self.write(complete=complete, reason=_reason(session, exitstatus))
        self.written = True

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if not self.written:
            self.write(complete=False, reason="pytest stopped before the grading session finished")

    def write(self, *, complete: bool, reason: str) -> None:
        path = self.config.getoption("gradescope")
        if path is not None:
            _write(self.config, Path(self.config.invocation_params.dir, path), complete=complete, reason=reason)


def _reason(session: pytest.Session, exitstatus: int) -> str:
    results = session.config.stash[_results_key]
    why = {
        pytest.ExitCode.INTERRUPTED: "the run was interrupted",
        pytest.ExitCode.INTERNAL_ERROR: "pytest hit an internal error",
        pytest.ExitCode.USAGE_ERROR: "pytest was called wrongly",
        pytest.ExitCode.NO_TESTS_COLLECTED: "no tests were collected",
    }.get(exitstatus, "")
    stop = session.shouldstop or session.shouldfail
    if stop:
        why = f"{why}: {stop}" if why else str(stop)
    if results.problems:
        why = f"{why}; {len(results.problems)} problem(s) outside the graded tests" if why else results.problems[0]
    return why


def _write(config: pytest.Config, path: Path, *, complete: bool, reason: str) -> None:
    from gradcheck_kit._version import __version__
    from gradcheck_kit.autograder.gradescope import write_json
    from gradcheck_kit.plugin import DEFAULT_SEED

    default, limits = _time_limits(config)
    data = config.stash[_results_key].to_gradescope(
        execution_time=time.monotonic() - config.stash[_started_key],
        complete=complete,
        reason=reason,
        notes=[
            f"Graded with gradcheck-kit {__version__}. Forward pass seed {DEFAULT_SEED} (the notebook's); the other "
            "shapes are a fixed sequence of configurations, the same for every submission. "
            f"Each call of your function may run for {_describe_limits(config)}."
        ],
        extra={
            "gradcheck_kit": __version__,
            "seed": DEFAULT_SEED,
            "hypothesis": "derandomized",
            "time_limits": {"default": default, **limits},
            "implementation": str(_impl_dir(config)),
        },
    )
    write_json(path, data)


#: The exercises whose passing earns the speed line: the chunked and the fused backward.
_TIMED = ("test_ex1_", "test_ex2_", "test_ex3_", "test_ex4_")


def _speed_line(terminalreporter: Any, config: pytest.Config) -> str | None:
    """Time the student's fused against chunked backward, when every test of both passed on the cpu."""
    passed = [r.nodeid for r in terminalreporter.stats.get("passed", []) if "[cpu" in r.nodeid]
    failed = [r.nodeid for key in ("failed", "error", "not started") for r in terminalreporter.stats.get(key, [])]
    if any(any(t in nodeid for t in _TIMED) for nodeid in failed):
        return None
    if not all(any(t in nodeid for nodeid in passed) for t in _TIMED):
        return None
    from gradcheck_kit.bench import speed
    from gradcheck_kit.sandbox.box import Sandbox

    # The student's code runs once more: in a worker, like every other call of it.
    with Sandbox(timeout=60) as box:
        outcome = box.call(Path(speed.__file__), "speed_line", _impl_dir(config), guarded=False)
    return outcome.value if outcome.ok else None


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    _benchmark_tables(terminalreporter, config)
    results = config.stash[_results_key]
    if not results.tests and not results.plan.exercises:
        return
    if _benchmark_only(config):
        terminalreporter.write_sep("=", "gradcheck-kit: score")
        terminalreporter.write_line("not graded: --benchmark-only skips the grading tests; run without it for a score")
        return
    line = _speed_line(terminalreporter, config)
    if line:
        terminalreporter.write_sep("=", "gradcheck-kit: speed")
        terminalreporter.write_line(line)
    terminalreporter.write_sep("=", "gradcheck-kit: score")
    for line in results.summary_lines():
        terminalreporter.write_line(line)


def _benchmark_tables(terminalreporter: Any, config: pytest.Config) -> None:
    """What the benchmarks timed, as ``gradcheck-kit bench`` shows it: speed-up, GB/s, % of copy, memory."""
    collected = config.stash.get(_benchmarks_key, None)
    if collected is None or not collected.results:
        return
    from gradcheck_kit.bench.report import to_table

    terminalreporter.write_sep("=", "gradcheck-kit: benchmarks")
    for run in collected.runs():
        terminalreporter.write(to_table(run))


@pytest.fixture(scope="session")
def benchmark_results(request: pytest.FixtureRequest) -> Any:
    """Collects the benchmarks' results for the tables at the end of the run."""
    from gradcheck_kit.bench.cases import Collected

    return request.config.stash.setdefault(_benchmarks_key, Collected(_impl_dir(request.config)))


@pytest.fixture(scope="session")
def impl_dir(request: pytest.FixtureRequest) -> Path:
    """The folder whose ex*.py files are graded."""
    return _impl_dir(request.config)


@pytest.fixture(scope="session")
def sandbox(request: pytest.FixtureRequest) -> Iterator[object]:
    """Runs each exercise's code in its own worker process under the exercise's time limit."""
    from gradcheck_kit.sandbox.box import Sandbox
    from gradcheck_kit.sandbox.policy import ExerciseSandbox

    default, limits = _time_limits(request.config)
    with Sandbox(timeout=default) as box:
        yield ExerciseSandbox(box, limits, default)


@pytest.fixture(scope="session")
def grader(impl_dir: Path, sandbox: object, _grading_backends: None) -> object:
    from gradcheck_kit.course.catalogue import Hints
    from gradcheck_kit.course.grader import Grader

    return Grader(impl_dir, sandbox, Hints.load(EXERCISES_DIR / "hints.toml"))  # type: ignore[arg-type]
