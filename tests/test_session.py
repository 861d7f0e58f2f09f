"""The grading session of a course, run by pytester on small graded test files with the exercises' conftest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# Loaded before pytester's in-process runs, whose module snapshot must not unload torch.
import torch  # noqa: F401

import gradcheck_kit.autograder.session  # noqa: F401  (what the course's conftest imports, loaded once)
import gradcheck_kit.report  # noqa: F401
from gradcheck_kit.autograder.gradescope import validate

EXERCISES_CONFTEST = Path(__file__).resolve().parent.parent / "exercises" / "conftest.py"

POINTS = """
[ex1]
points = 10
[ex1.tests]
test_gradient = 8
[ex2]
points = 5
"""

EX1_TESTS = """
import pytest
import torch
from gradcheck_kit.comparison import compare
from gradcheck_kit.report import Row, verdict_for

pytestmark = pytest.mark.gradcheck(exercise="ex1")
EXPECTED = torch.ones(2, 3)
ANSWERS = {"logprobs": EXPECTED, "probs": EXPECTED * 2, "counts": None, "h": EXPECTED * 3}

@pytest.mark.parametrize("name", list(ANSWERS))
def test_gradient(name, device, gradcheck):
    c = compare(name, ANSWERS[name], EXPECTED)
    # dh is off only because an earlier step is: its own step is right, so it passes.
    verdict = "inherited" if name == "h" else verdict_for(c)
    gradcheck.check(Row(c, verdict, ""), table=f"exercise 1: chunked backward [{device}]")

@pytest.mark.gradcheck(visibility="after_due_date")
def test_other_shapes(device):
    '''Every gradient also matches at other shapes.'''
    assert False, "Falsifying example: n=2"
"""

UNGRADED_TESTS = """
def test_helper_that_is_not_graded():
    pass
"""

EX2_TESTS = """
import pytest
pytestmark = pytest.mark.gradcheck(exercise="ex2")

def test_notebook_shapes(device):
    pass
"""


@pytest.fixture
def course(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(EXERCISES_CONFTEST.read_text(encoding="utf-8"))
    pytester.makefile(".toml", points=POINTS)
    pytester.makepyfile(test_ex1=EX1_TESTS, test_ex2=EX2_TESTS, test_helpers=UNGRADED_TESTS)
    return pytester


def results_of(pytester: pytest.Pytester, name: str = "results.json") -> dict:
    return json.loads((pytester.path / name).read_text(encoding="utf-8"))


def test_the_score_line_follows_the_tables(course: pytest.Pytester):
    result = course.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(
        [
            "*gradcheck-kit: per-tensor tables*",
            "exercise 1: chunked backward ?cpu?",
            "*gradcheck-kit: score*",
            "exercise 1: chunked backward * 4 / 10   2 of 5 tests passed",
            "    exercise 1: chunked backward ?cpu?: other shapes: FAILED: *n=2*",
            "exercise 2: cross-entropy backward * 5 / 5   1 of 1 tests passed",
            "Score: 9 / 15 (2 points in tests hidden from students until after the due date)",
        ]
    )
    assert result.ret == 1


def test_a_selection_by_keyword_is_scored_against_its_own_total_and_says_so(course: pytest.Pytester):
    result = course.runpytest("-p", "no:cacheprovider", "-k", "logprobs or probs", "--gradcheck-gradescope=r.json")
    result.stdout.fnmatch_lines(
        [
            "exercise 1: chunked backward * 2 / 4   1 of 2 selected tests passed (the full exercise is out of 10)",
            "Score of the 2 selected tests: 2 / 4 (the full run is out of 15)",
        ]
    )
    data = results_of(course, "r.json")
    assert (data["score"], data["extra_data"]["total"]) == (2.0, 4.0)
    assert data["extra_data"]["selection"] == {"tests": 2, "full_total": 15.0}
    assert "**Only some tests were graded:**" in data["output"]
    # Each test keeps its number and its share of a run of every test.
    assert [(t["number"], t["max_score"]) for t in data["tests"]] == [("1.1", 2.0), ("1.2", 2.0)]


def test_a_test_run_by_its_node_id_is_worth_its_share_not_its_functions_points(course: pytest.Pytester):
    result = course.runpytest("-p", "no:cacheprovider", "test_ex1.py::test_gradient[cpu-probs]")
    result.stdout.fnmatch_lines(
        [
            "exercise 1: chunked backward * 0 / 2   0 of 1 selected tests passed (the full exercise is out of 10)",
            "Score of the 1 selected test: 0 / 2 (the full run is out of 15)",
        ]
    )


def test_a_file_run_alone_is_scored_against_its_exercises_points(course: pytest.Pytester):
    result = course.runpytest("-p", "no:cacheprovider", "test_ex2.py")
    result.stdout.fnmatch_lines(
        [
            "exercise 2: cross-entropy backward * 5 / 5   1 of 1 tests passed",
            "Score of the 1 selected test: 5 / 5 (*15)",
        ]
    )


def test_rerunning_the_last_failures_scores_each_at_its_share(course: pytest.Pytester):
    course.runpytest()  # with the cache, which remembers what failed
    result = course.runpytest("--lf")
    result.stdout.fnmatch_lines(
        [
            "exercise 1: chunked backward * 0 / 6   0 of 3 selected tests passed (the full exercise is out of 10)",
            "Score of the 3 selected tests: 0 / 6 (the full run is out of 15; 2 points in tests hidden from *)",
        ]
    )
    result.stdout.no_fnmatch_line("exercise 2*")


# Run with -p, it runs the tests last to first, reordering them where pytest-randomly does.
REVERSED = """
import pytest

@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_collection_modifyitems(items):
    items.reverse()
    return (yield)
"""


def test_the_score_and_results_json_do_not_depend_on_the_order_tests_run_in(course: pytest.Pytester):
    course.makepyfile(reverse_order=REVERSED)
    course.syspathinsert()
    ran = course.runpytest("-p", "no:cacheprovider", "-p", "no:randomly", "-v", "--gradcheck-gradescope=file.json")
    backwards = course.runpytest(
        "-p", "no:cacheprovider", "-p", "no:randomly", "-p", "reverse_order", "-v", "--gradcheck-gradescope=back.json"
    )
    assert _test_lines(backwards.outlines) == _test_lines(ran.outlines)[::-1]  # the order did change
    assert _summary(backwards.outlines) == _summary(ran.outlines)
    assert _comparable(results_of(course, "back.json")) == _comparable(results_of(course, "file.json"))


def _test_lines(lines: list[str]) -> list[str]:
    return [line.split(" ")[0] for line in lines if "::test_" in line and line.startswith("test_")]


def _summary(lines: list[str]) -> list[str]:
    """gradcheck-kit's part of the terminal summary: the tables and the score, up to pytest's own."""
    start = next(i for i, line in enumerate(lines) if "gradcheck-kit: per-tensor tables" in line)
    end = next(i for i, line in enumerate(lines) if "short test summary info" in line)
    return lines[start:end]


def _comparable(data: dict) -> list[dict]:
    return [{**t, "extra_data": {**t["extra_data"], "duration": None}} for t in data["tests"]]


def test_an_exercise_skipped_whole_says_why_once(course: pytest.Pytester):
    course.makefile(".toml", points=POINTS + "[ex3]\npoints = 0\n")
    course.makepyfile(
        test_ex3="import pytest\n"
        "pytestmark = pytest.mark.gradcheck(exercise='ex3')\n"
        "def test_kernel(device):\n    pytest.skip('needs a CUDA GPU')\n"
    )
    result = course.runpytest("-p", "no:cacheprovider", "--gradcheck-device=cpu", "-k", "ex2 or ex3")
    result.stdout.fnmatch_lines(
        [
            "exercise 2: cross-entropy backward * 5 / 5   1 of 1 tests passed",
            "exercise 3: batchnorm backward * 0 / 0   0 of 1 tests passed, 1 skipped: needs a CUDA GPU",
        ]
    )


def test_the_gradescope_option_writes_one_valid_entry_per_graded_test(course: pytest.Pytester):
    course.runpytest("-p", "no:cacheprovider", "--gradcheck-gradescope=out/results.json")
    data = results_of(course, "out/results.json")
    assert validate(data) == []
    tests = {t["name"]: t for t in data["tests"]}
    assert list(tests) == [
        "exercise 1: chunked backward [cpu]: dlogprobs",
        "exercise 1: chunked backward [cpu]: dprobs",
        "exercise 1: chunked backward [cpu]: dcounts",
        "exercise 1: chunked backward [cpu]: dh",
        "exercise 1: chunked backward [cpu]: other shapes",
        "exercise 2: cross-entropy backward [cpu]: notebook shapes",
    ]
    assert [t["number"] for t in tests.values()] == ["1.1", "1.2", "1.3", "1.4", "1.5", "2.1"]
    assert (data["score"], data["extra_data"]["total"], data["extra_data"]["complete"]) == (9.0, 15.0, True)
    probs = tests["exercise 1: chunked backward [cpu]: dprobs"]
    assert (probs["status"], probs["score"], probs["extra_data"]["verdict"], probs["extra_data"]["maxdiff"]) == (
        "failed", 0.0, "wrong", 1.0,
    )  # fmt: skip
    assert tests["exercise 1: chunked backward [cpu]: dcounts"]["extra_data"]["verdict"] == "not started"
    inherited = tests["exercise 1: chunked backward [cpu]: dh"]
    assert (inherited["status"], inherited["score"], inherited["extra_data"]["verdict"]) == ("passed", 2.0, "inherited")
    assert tests["exercise 1: chunked backward [cpu]: other shapes"]["visibility"] == "after_due_date"
    assert data["extra_data"]["seed"] == 2147483647


def test_results_json_is_written_with_the_reason_when_the_run_is_interrupted(course: pytest.Pytester):
    course.makepyfile(
        test_ex1=EX1_TESTS.replace(
            "def test_other_shapes(device):", "def test_other_shapes(device):\n    raise KeyboardInterrupt"
        )
    )
    # In the file's order (pytest-randomly, where installed, would choose which tests run before the stop).
    course.inline_run("-p", "no:cacheprovider", "-p", "no:randomly", "--gradescope=results.json", no_reraise_ctrlc=True)
    data = results_of(course)
    assert validate(data) == []
    assert data["extra_data"]["complete"] is False
    assert data["extra_data"]["reason"] == "the run was interrupted"
    not_run = [t for t in data["tests"] if t["extra_data"]["outcome"] == "not run"]
    assert [t["name"] for t in not_run] == [
        "exercise 1: chunked backward [cpu]: other shapes",
        "exercise 2: cross-entropy backward [cpu]: notebook shapes",
    ]
    assert data["score"] == 4.0 and data["extra_data"]["total"] == 15.0


def test_results_json_is_written_when_a_test_file_cannot_be_collected(course: pytest.Pytester):
    course.makepyfile(
        test_ex3="import pytest\npytestmark = pytest.mark.gradcheck(exercise='ex3')\nimport no_such_module\n"
    )
    result = course.runpytest("-p", "no:cacheprovider", "--gradescope=results.json")
    data = results_of(course)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert data["extra_data"]["complete"] is False
    assert "collecting test_ex3.py failed" in data["extra_data"]["problems"][0]
    assert "No module named 'no_such_module'" in data["extra_data"]["problems"][0]
    assert validate(data) == []


def test_each_exercise_has_its_time_limit_unless_the_option_sets_every_ones(course: pytest.Pytester):
    # A top-level timeout, and one of ex2's own (the last table of POINTS).
    course.makefile(".toml", points="timeout = 20\n" + POINTS + "timeout = 30\n")
    help_text = " ".join(line.strip() for line in course.runpytest("--help").outlines)
    assert "given, it is every exercise's limit (default: 20 s, ex2 30 s, from points.toml)" in help_text
    course.runpytest("-p", "no:cacheprovider", "--co").stdout.fnmatch_lines(["time limit per call: 20 s (ex2 30 s)"])
    given = course.runpytest("-p", "no:cacheprovider", "--co", "--gradcheck-timeout=5")
    given.stdout.fnmatch_lines(["time limit per call: 5 s"])


def test_the_old_spellings_of_the_options_still_work(course: pytest.Pytester):
    course.runpytest("-p", "no:cacheprovider", "--impl=.", "--gradescope=old.json")
    course.runpytest("-p", "no:cacheprovider", "--gradcheck-impl=.", "--gradcheck-gradescope=new.json")
    old, new = results_of(course, "old.json"), results_of(course, "new.json")
    assert old["extra_data"]["implementation"] == new["extra_data"]["implementation"] == str(course.path)
    assert old["score"] == new["score"] == 9.0


def test_a_mistake_in_points_toml_stops_the_run_before_grading(course: pytest.Pytester):
    course.makefile(".toml", points="[ex1]\npoints = 'ten'\n")
    result = course.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*points.toml [[]ex1[]]: points must be a number of at least 0, got 'ten'"])


@pytest.mark.e2e  # pytest-xdist's workers are child processes that import torch
def test_grading_under_xdist_gives_the_same_results_and_tables(course: pytest.Pytester):
    pytest.importorskip("xdist")
    serial = course.runpytest("-p", "no:cacheprovider", "--gradescope=serial.json")
    parallel = course.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--gradescope=parallel.json")

    assert _comparable(results_of(course, "parallel.json")) == _comparable(results_of(course, "serial.json"))

    def summary(lines: list[str]) -> list[str]:
        start = next(i for i, line in enumerate(lines) if "gradcheck-kit: per-tensor tables" in line)
        return [line for line in lines[start:] if line.startswith(("exercise", "Score:", "name", "logprobs", "probs"))]

    assert summary(parallel.outlines) == summary(serial.outlines)
    assert any(line.startswith("Score: 9 / 15") for line in parallel.outlines)


def test_plain_pytest_refuses_to_grade_when_it_imported_the_submissions_conftest(pytester: pytest.Pytester):
    pytester.makeconftest(EXERCISES_CONFTEST.read_text(encoding="utf-8"))
    student = pytester.mkdir("student")
    (student / "conftest.py").write_text("")
    result = pytester.runpytest("-p", "no:cacheprovider", "--impl", str(student))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*conftest.py was imported by pytest as a conftest*write --gradcheck-impl={student} (one word)*"]
    )
    for spelling in ("--gradcheck-impl", "--impl"):
        ran = pytester.runpytest("-p", "no:cacheprovider", f"{spelling}={student}")
        assert ran.ret == pytest.ExitCode.NO_TESTS_COLLECTED
