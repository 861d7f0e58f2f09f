"""The hooks and fixtures of a grading run: which implementation is graded, how it is run, and what it scores.

A course's ``conftest.py`` loads them (pytest reads ``pytest_plugins`` only in the
root conftest, so the hooks and fixtures are imported into it) and starts the run
with its own folder, where ``points.toml`` and ``hints.toml`` lie::

    from gradcheck_kit.autograder.session import *  # noqa: F403
    from gradcheck_kit.autograder.session import add_options, start

    COURSE = Path(__file__).parent

    def pytest_addoption(parser):
        add_options(parser, COURSE)

    def pytest_configure(config):
        start(config, COURSE)

Each hook hands off to the run's :class:`~gradcheck_kit.autograder.run.GradingRun`,
kept in ``config.stash``. Each test's share travels on its reports'
``user_properties``, so the process that prints the score and writes Gradescope's
results.json (the pytest-xdist controller, or the only process) sees every test
without collecting any.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gradcheck_kit.autograder.collection import collected_test
from gradcheck_kit.autograder.points import CollectedTest
from gradcheck_kit.autograder.recorder import ResultsRecorder
from gradcheck_kit.autograder.run import DEFAULT_TIMEOUT, POINTS_FILE, GradingRun

#: What a course's conftest imports: the hooks and fixtures pytest finds there by name.
__all__ = [
    "benchmark_results",
    "course_dir",
    "grader",
    "impl_dir",
    "pytest_collection_finish",
    "pytest_make_collect_report",
    "pytest_report_header",
    "pytest_terminal_summary",
    "sandbox",
]

_run_key = pytest.StashKey[GradingRun]()
_collected_key = pytest.StashKey[dict[str, tuple[list[Any], CollectedTest]]]()
_benchmarks_key = pytest.StashKey[Any]()


def add_options(parser: pytest.Parser, course: Path) -> None:
    """Add the grading run's options; from the course conftest's ``pytest_addoption``, with its folder."""
    group = parser.getgroup("gradcheck")
    group.addoption(
        "--gradcheck-impl",
        "--impl",
        dest="impl",
        metavar="DIR",
        default=None,
        help="folder of the implementation to grade, with the file names of exercises/ (default: exercises/); "
        "write it as one word, --gradcheck-impl=DIR",
    )
    group.addoption(
        "--gradcheck-gradescope",
        "--gradescope",
        dest="gradescope",
        metavar="PATH",
        default=None,
        help="write Gradescope's results.json to PATH, also when the run stops early",
    )
    group.addoption(
        "--gradcheck-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds one call of a student's function may run before it fails as a hang; given, it is every "
        f"exercise's limit (default: {_default_limits(course)})",
    )


def _default_limits(course: Path) -> str:
    """What limits apply without the option, as the course's points.toml sets them."""
    from gradcheck_kit.autograder.points import Scheme, SchemeError

    try:
        scheme = Scheme.load(course / POINTS_FILE)
    except SchemeError:
        return "points.toml's timeout"
    default, limits = scheme.time_limits(DEFAULT_TIMEOUT)
    others = "".join(f", {key} {seconds:g} s" for key, seconds in limits.items() if seconds != default)
    return f"{default:g} s{others}, from points.toml" if scheme.timeout is not None or others else f"{default:g} s"


def start(config: pytest.Config, course: Path) -> None:
    """Start the grading run of the course in the folder ``course``; from its conftest's ``pytest_configure``."""
    from gradcheck_kit.autograder.points import SchemeError
    from gradcheck_kit.plugin import DEFAULT_SEED

    course = course.resolve()
    implementation = _impl_dir(config, course)
    _refuse_imported_conftests(config, course, implementation)
    if _benchmark_only(config) and config.getoption("gradescope"):
        raise pytest.UsageError(
            "--gradcheck-gradescope with --benchmark-only would write a results.json with every grading test "
            "skipped; grade without --benchmark-only"
        )
    try:
        run = GradingRun.load(course, implementation, timeout=config.getoption("gradcheck_timeout"), seed=DEFAULT_SEED)
    except SchemeError as exc:
        raise pytest.UsageError(str(exc)) from exc
    config.stash[_run_key] = run
    if not _is_xdist_worker(config):
        config.pluginmanager.register(ResultsRecorder(config, run), "gradcheck-results")


def _run(config: pytest.Config) -> GradingRun:
    return config.stash[_run_key]


def _impl_dir(config: pytest.Config, course: Path) -> Path:
    value = config.getoption("impl")
    if value is None:
        return course
    for base in (Path.cwd(), config.rootpath):
        candidate = (base / value).resolve()
        if candidate.is_dir():
            return candidate
    raise pytest.UsageError(f"--gradcheck-impl {value}: no such folder (looked in {Path.cwd()} and {config.rootpath})")


def _benchmark_only(config: pytest.Config) -> bool:
    """pytest-benchmark's --benchmark-only: every grading test is skipped, so there is no score to give."""
    return bool(config.getoption("benchmark_only", False))


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _refuse_imported_conftests(config: pytest.Config, course: Path, impl_dir: Path) -> None:
    """Stop when pytest imported a conftest.py of the graded folder: student code inside the grader.

    pytest reads the command line once before the course's conftest defines
    --gradcheck-impl, and takes the DIR of ``--gradcheck-impl DIR`` for a test path,
    whose conftest.py files it imports.
    """
    if impl_dir == course:
        return
    ours = course / "conftest.py"
    for plugin in config.pluginmanager.get_plugins():
        file = getattr(plugin, "__file__", None)
        if file and Path(file).resolve() != ours and Path(file).resolve().is_relative_to(impl_dir):
            raise pytest.UsageError(
                f"{file} was imported by pytest as a conftest, running the graded code inside the grader; "
                f"write --gradcheck-impl={config.getoption('impl')} (one word) so that pytest does not take the "
                "folder for tests"
            )


def pytest_report_header(config: pytest.Config) -> list[str]:
    from gradcheck_kit.sandbox.isolation import describe

    return [*_run(config).header(), describe()]


def _time_limits(config: pytest.Config) -> tuple[float, dict[str, float]]:
    """Seconds per call: the default and each exercise's; --gradcheck-timeout, when given, is every exercise's."""
    return _run(config).time_limits()


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[pytest.CollectReport]:
    report = yield
    # Inside --lf's wrapper, which filters this list afterwards, and before a node id picks
    # its test out of it: here are all the tests of the file, selected or not, with the marks
    # they were written with (a plugin may add skips later: --benchmark-only does).
    found = _collected_tests(collector.config)
    for node in report.result or ():
        if isinstance(node, pytest.Item) and node.nodeid not in found:
            found[node.nodeid] = collected_test(node)
    return report


def _collected_tests(config: pytest.Config) -> dict[str, tuple[list[Any], CollectedTest]]:
    """Every test the run collected, before any selection, by node id: its place in the course, and its marks."""
    return config.stash.setdefault(_collected_key, {})


def pytest_collection_finish(session: pytest.Session) -> None:
    from gradcheck_kit.autograder.points import SchemeError
    from gradcheck_kit.verdicts import PLAN_PROPERTY, TEST_PROPERTY

    config = session.config
    found = _collected_tests(config)
    for item in session.items:
        found.setdefault(item.nodeid, collected_test(item))
    # The course's order, whatever order the run takes (pytest-randomly, --lf, --ff): each test's
    # number in results.json and the order of the summary must not depend on it.
    every = [test for _, test in sorted(found.values(), key=lambda entry: entry[0])]
    try:
        plan = _run(config).scheme.plan(every, _titles())
    except SchemeError as exc:
        raise pytest.UsageError(str(exc)) from exc
    plan = plan.restricted(item.nodeid for item in session.items)
    summary = plan.summary()
    for item in session.items:
        share = plan.shares.get(item.nodeid)
        if share is not None:
            item.user_properties.append((TEST_PROPERTY, share.as_dict()))
            item.user_properties.append((PLAN_PROPERTY, summary))
    if not _is_xdist_worker(config):
        _run(config).results.expect(plan)


def _titles() -> dict[str, str]:
    from gradcheck_kit.course.catalogue import EXERCISES

    return {key: exercise.title for key, exercise in EXERCISES.items()}


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
        return speed.speed_line(_run(config).implementation, box, figures=_run(config).figures)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    _benchmark_tables(terminalreporter, config)
    results = _run(config).results
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
    if _run(config).figures and _run(config).scheme.leaderboard:
        _run(config).rewrite()  # written at the session's end, before the speed was timed
    integrity = _run(config).integrity
    if integrity.findings:
        terminalreporter.write_sep("=", "gradcheck-kit: integrity")
        terminalreporter.write_line(integrity.to_text())
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

    return request.config.stash.setdefault(_benchmarks_key, Collected(_run(request.config).implementation))


@pytest.fixture(scope="session")
def impl_dir(request: pytest.FixtureRequest) -> Path:
    """The folder whose ex*.py files are graded."""
    return _run(request.config).implementation


@pytest.fixture(scope="session")
def course_dir(request: pytest.FixtureRequest) -> Path:
    """The course's folder: its tests, points.toml and hints.toml."""
    return _run(request.config).course


@pytest.fixture(scope="session")
def sandbox(request: pytest.FixtureRequest) -> Iterator[object]:
    """Runs each exercise's code in its own worker process under the exercise's time limit."""
    from gradcheck_kit.sandbox.box import Sandbox
    from gradcheck_kit.sandbox.policy import ExerciseSandbox

    default, limits = _time_limits(request.config)
    with Sandbox(timeout=default) as box:
        yield ExerciseSandbox(box, limits, default)


@pytest.fixture(scope="session")
def grader(impl_dir: Path, course_dir: Path, sandbox: object, _grading_backends: None) -> object:
    from gradcheck_kit.course.catalogue import Hints
    from gradcheck_kit.course.grader import Grader

    return Grader(impl_dir, sandbox, Hints.load(course_dir / "hints.toml"))  # type: ignore[arg-type]
