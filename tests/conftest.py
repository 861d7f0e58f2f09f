"""Fixtures shared by the test modules: pytester, and the exercises graded in a pytester folder."""

from __future__ import annotations

import importlib
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
EXERCISES = ROOT / "exercises"
SOLUTIONS = ROOT / "solutions"
CATALOGUE = Path(__file__).resolve().parent / "catalogue"

# `-v` prints one line per test: "test_ex2_cross_entropy.py::test_notebook_shapes[cpu] PASSED   [ 50%]".
_TEST_LINE = re.compile(
    r"^test_(?P<exercise>ex\d+)_\w+\.py::(?P<test>\S+) "
    r"(?P<outcome>PASSED|FAILED|NOT STARTED|SKIPPED|ERROR|XFAIL|XPASS)\b"
)
_FAILURE_HEADER = re.compile(r"^_{3,} (?P<test>\S.*?) _{3,}$")
_TABLE_ROW = re.compile(
    r"^(?P<name>\w+)\s+\([\d, ]*\)\s+(?:True|False)\s+(?:True|False)\s+\S+\s+\S+\s+"
    r"(?P<verdict>exact|ok|wrong|inherited|not started|error|skipped)\b"
)


def implementation(folder: Path, *cases: str) -> Path:
    """Write the reference solutions into ``folder``, then the files of each catalogue case over them.

    Args:
        folder: where the implementation goes.
        cases: folders of ``tests/catalogue/``, each holding only the exercise files it changes.

    Raises:
        ValueError: for an unknown case, or for two cases that change the same file.
    """
    for source in SOLUTIONS.glob("ex*.py"):
        shutil.copy(source, folder)
    changed_by: dict[str, str] = {}
    for case in cases:
        files = sorted((CATALOGUE / case).glob("ex*.py"))
        if not files:
            raise ValueError(f"{case!r} is not a folder of exercise files in {CATALOGUE}")
        for file in files:
            if file.name in changed_by:
                raise ValueError(f"{changed_by[file.name]!r} and {case!r} both change {file.name}")
            changed_by[file.name] = case
            shutil.copy(file, folder)
    return folder


@dataclass(frozen=True)
class Grading:
    """One verbose pytest run of the exercises' tests, read test by test."""

    result: pytest.RunResult

    def outcomes(self, exercise: str) -> dict[str, str]:
        """Every test of ``exercise`` ("ex2") that ran, with its outcome: "passed", "failed", "not started" ..."""
        found = {}
        for line in self.result.outlines:
            match = _TEST_LINE.match(line)
            if match and match["exercise"] == exercise:
                found[match["test"]] = match["outcome"].lower()
        return found

    def failing(self, exercise: str) -> dict[str, str]:
        """The tests of ``exercise`` that did not pass, with their outcome."""
        ran = self.outcomes(exercise)
        assert ran, f"no test of {exercise} ran:\n{self.result.stdout.str()}"
        return {test: outcome for test, outcome in ran.items() if outcome != "passed"}

    def failure(self, exercise: str, test: str) -> pytest.LineMatcher:
        """The report of a failed test in the FAILURES section: ``failure("ex2", "test_notebook_shapes[cpu]")``."""
        failed = [
            (m["exercise"], m["test"])
            for m in map(_TEST_LINE.match, self.result.outlines)
            if m and m["outcome"] == "FAILED"
        ]
        sections = self._failure_sections()
        assert [name for _, name in failed] == [name for name, _ in sections], self.result.stdout.str()
        for (ex, name), (_, lines) in zip(failed, sections, strict=True):
            if (ex, name) == (exercise, test):
                return pytest.LineMatcher(lines)
        raise AssertionError(f"{exercise} {test} did not fail:\n{self.result.stdout.str()}")

    def verdicts(self, title: str) -> dict[str, str]:
        """The verdict of each row of the per-tensor table ``title`` in the terminal summary."""
        rows: dict[str, str] = {}
        summary = inside = False
        for line in self.result.outlines:
            # The failures' own report sections repeat a table's title: read the run's summary only.
            summary = summary or "gradcheck-kit: per-tensor tables" in line
            if summary and line == title:
                inside = True
            elif inside and not line.strip():
                break
            elif inside and (match := _TABLE_ROW.match(line)):
                rows[match["name"]] = match["verdict"]
        assert rows, f"no table {title!r} in the summary:\n{self.result.stdout.str()}"
        return rows

    def _failure_sections(self) -> list[tuple[str, list[str]]]:
        sections: list[tuple[str, list[str]]] = []
        inside = False
        for line in self.result.outlines:
            if "= FAILURES =" in line:
                inside = True
            elif inside and (header := _FAILURE_HEADER.match(line)):
                sections.append((header["test"], []))
            elif inside and line.startswith("="):
                break
            elif sections:
                sections[-1][1].append(line)
        return sections


GradeExercises = Callable[..., Grading]


@pytest.fixture(scope="session")
def _exercise_imports() -> None:
    """Import what the exercises' tests import, before any pytester takes its snapshot of sys.modules.

    pytester's in-process runs put sys.modules back as they found it; a module first imported
    by a run would be imported anew by the next, and torch, a C extension, cannot be.
    """
    for name in (
        "torch",
        "hypothesis",
        "tabulate",
        "gradcheck_kit.course.grader",
        "gradcheck_kit.autograder.session",
        "gradcheck_kit.plugin",
        "gradcheck_kit.course.shapes",
    ):
        importlib.import_module(name)


@pytest.fixture
def grade_exercises(_exercise_imports: None, pytester: pytest.Pytester) -> GradeExercises:
    """Grade catalogue cases with the exercises' own tests, as a student's run of ``pytest exercises/`` does.

    The pytester folder becomes a copy of exercises/ whose implementation files are the
    solutions with the cases' files laid over them. Returns ``grade(*cases, tests=..., options=...)``.
    """

    def grade(*cases: str, tests: Iterable[str], options: Iterable[str] = ()) -> Grading:
        # Everything but the stubs: tests, conftest.py, hints and the points scheme.
        for path in EXERCISES.iterdir():
            if path.is_file() and not path.name.startswith("ex"):
                shutil.copy(path, pytester.path)
        implementation(pytester.path, *cases)
        # In process, so that torch is imported once rather than once per run (seconds each). The
        # student's code still runs in the sandbox's worker processes: a hang or a crash ends a worker.
        result = pytester.runpytest_inprocess(
            *tests, "-v", "-p", "no:cacheprovider", "--gradcheck-device", "cpu", *options
        )
        return Grading(result)

    return grade


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run the test on one torch thread: small matmuls are faster unthreaded, and sum in the same order each run."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def ends_within() -> Callable[[int, float], bool]:
    """``ends_within(pid, seconds)``: whether the process ends (a zombie has ended) in time; Linux only."""
    return _ends_within


def _ends_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False
