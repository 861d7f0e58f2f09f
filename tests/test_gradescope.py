"""Gradescope's results.json and the score line: from the library, and from the exercises' conftest under pytester."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# Loaded before pytester's in-process runs, whose module snapshot must not unload torch.
import torch  # noqa: F401

import gradcheck_kit.report  # noqa: F401
from gradcheck_kit.autograder.gradescope import PLAN_PROPERTY, TEST_PROPERTY, Results, format_points, validate
from gradcheck_kit.autograder.points import Plan, Share

EXERCISES_CONFTEST = Path(__file__).resolve().parent.parent / "exercises" / "conftest.py"

# ----------------------------------------------------------------------------
# The specification's own example, and ways to depart from it.

SPEC_EXAMPLE = {
    "score": 44.0,
    "execution_time": 136,
    "output": "Text relevant to the entire submission",
    "output_format": "simple_format",
    "test_output_format": "text",
    "test_name_format": "text",
    "visibility": "after_due_date",
    "stdout_visibility": "visible",
    "extra_data": {},
    "tests": [
        {
            "score": 2.0,
            "max_score": 2.0,
            "status": "passed",
            "name": "Your name here",
            "name_format": "text",
            "number": "1.1",
            "output": "Giant multiline string that will be placed in a <pre> tag and collapsed by default",
            "output_format": "text",
            "tags": ["tag1", "tag2", "tag3"],
            "visibility": "visible",
            "extra_data": {},
        }
    ],
    "leaderboard": [
        {"name": "Accuracy", "value": 0.926},
        {"name": "Time", "value": 15.1, "order": "asc"},
        {"name": "Stars", "value": "*****"},
    ],
}


def test_the_specifications_own_example_is_valid():
    assert validate(SPEC_EXAMPLE) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"score": "44"}, "score must be a number"),
        ({"execution_time": float("nan")}, "execution_time must be a number"),
        ({"visibility": "students"}, "visibility must be one of"),
        ({"stdout_visibility": "shown"}, "stdout_visibility must be one of"),
        ({"output_format": "markdown"}, "output_format must be one of"),
        ({"grade": 1}, "unknown top-level key 'grade'"),
        ({"tests": [{"score": 1, "status": "ok"}]}, "status must be 'passed' or 'failed'"),
        ({"tests": [{"score": 1, "number": 1.1}]}, "number must be a string"),
        ({"tests": [{"score": 1, "tags": "ex1"}]}, "tags must be a list of strings"),
        ({"tests": [{"score": 1, "visibility": "after_deadline"}]}, "visibility must be one of"),
        ({"tests": [{"score": 1, "weight": 2}]}, "unknown key 'weight'"),
        ({"tests": [{"score": 1, "extra_data": []}]}, "extra_data must be an object"),
        ({"leaderboard": [{"name": "Time", "value": 1, "order": "up"}]}, "order must be 'asc' or 'desc'"),
    ],
)
def test_validation_names_each_departure_from_the_specification(change, problem):
    problems = validate({**SPEC_EXAMPLE, **change})
    assert any(problem in p for p in problems), problems


def test_a_score_is_required_at_the_top_or_on_every_test():
    no_score = {k: v for k, v in SPEC_EXAMPLE.items() if k != "score"}
    assert validate(no_score) == []
    assert validate({**no_score, "tests": [{"name": "a", "status": "passed"}]}) == [
        "a top-level score is required unless every test has a score"
    ]


# ----------------------------------------------------------------------------
# Results, fed the reports of a run by hand.


def share(nodeid: str, points: float, exercise: str = "ex1", visibility: str = "visible", number: str = "1.1") -> Share:
    return Share(nodeid, exercise, f"{exercise} [cpu]: {nodeid}", number, points, visibility)


def report(results: Results, s: Share, outcome: str, *, rows=(), text: str = "", plan: Plan | None = None) -> None:
    properties = [
        (TEST_PROPERTY, s.as_dict()),
        *(("gradcheck_row", {"table": "t", "order": [0, 0], **r}) for r in rows),
    ]
    if plan is not None:
        properties.append((PLAN_PROPERTY, plan.summary()))
    results.add_report(s.nodeid, "setup", "passed", properties)
    results.add_report(s.nodeid, "call", outcome, properties, text)
    results.add_report(s.nodeid, "teardown", "passed", properties)


def row(name: str, verdict: str, maxdiff: float) -> dict:
    return {
        "name": name, "exact": False, "approximate": verdict != "wrong", "maxdiff": maxdiff, "max_rel_diff": 0.5,
        "mismatched": 3 if verdict == "wrong" else 0, "numel": 6, "worst_index": [0, 1], "actual_at_worst": 1.0,
        "expected_at_worst": 2.0, "worst_rel_index": [0, 1], "nonfinite": 0, "rtol": 1e-4, "atol": 1e-5,
        "actual_type": "torch.Tensor", "actual_shape": [2, 3], "expected_shape": [2, 3], "actual_dtype": "float32",
        "expected_dtype": "float32", "actual_device": "cpu", "expected_device": "cpu",
        "problem": "mismatch" if verdict == "wrong" else None, "ok": verdict != "wrong", "message": "",
        "verdict": verdict, "note": "",
    }  # fmt: skip


def graded_run() -> Results:
    right, wrong = share("a", 2.0), share("b", 2.0, number="1.2")
    hidden = share("c", 6.0, visibility="after_due_date", number="1.3")
    results = Results(Plan({s.nodeid: s for s in (right, wrong, hidden)}, {"ex1": 10.0}))
    report(results, right, "passed", rows=[row("logits", "ok", 1e-9)])
    report(results, wrong, "failed", rows=[row("probs", "wrong", 0.25)], text="dprobs: WRONG: 3/6 elements off")
    report(results, hidden, "passed")
    return results


def test_a_passing_test_earns_its_points_and_a_failing_one_none():
    data = graded_run().to_gradescope(execution_time=1.5)
    assert [(t["score"], t["max_score"], t["status"]) for t in data["tests"]] == [
        (2.0, 2.0, "passed"), (0.0, 2.0, "failed"), (6.0, 6.0, "passed"),
    ]  # fmt: skip
    assert data["score"] == 8.0
    assert validate(data) == []


def test_each_test_carries_its_figures_for_the_course_to_study():
    wrong = graded_run().to_gradescope(execution_time=1.5)["tests"][1]
    assert wrong["extra_data"]["verdict"] == "wrong"
    assert wrong["extra_data"]["maxdiff"] == 0.25
    assert wrong["extra_data"]["rows"][0]["mismatched"] == 3
    assert wrong["tags"] == ["ex1"]
    assert "dprobs: WRONG: 3/6 elements off" in wrong["output"]


def test_the_score_line_counts_hidden_points_and_says_so():
    assert (
        graded_run().score_line() == "Score: 8 / 10 (6 points in tests hidden from students until after the due date)"
    )


def test_what_every_student_sees_leaves_out_the_hidden_results():
    overview = graded_run().to_gradescope(execution_time=1.5)["output"]
    assert overview.startswith("**Score on the tests shown now: 2 / 4.** Of the 10 points, 6 points in tests hidden")
    assert "| ex1 | 2 / 4 | 1 / 2 |" in overview


def test_points_of_tests_that_never_reported_stay_in_the_total_as_not_graded():
    first, later = share("a", 4.0), share("b", 12.0, exercise="ex2", number="2.1")
    results = Results()  # as on the pytest-xdist controller: the plan comes with the reports
    report(results, first, "passed", plan=Plan({}, {"ex1": 4.0, "ex2": 12.0}, {"ex2": "exercise 2"}))
    data = results.to_gradescope(execution_time=3.0, reason="the run was interrupted")
    assert results.score_line() == "Score: 4 / 16"
    assert data["extra_data"]["complete"] is False
    missing = data["tests"][-1]
    assert (missing["name"], missing["score"], missing["max_score"]) == (
        "exercise 2: tests that did not report",
        0.0,
        12.0,
    )
    assert "the run was interrupted" in missing["output"]
    assert data["output"].startswith("**Grading did not finish:** the run was interrupted.")
    assert validate(data) == []
    assert later.nodeid not in results.tests


def test_nothing_a_student_prints_can_close_the_code_block_of_its_output():
    s = share("a", 1.0)
    results = Results(Plan({"a": s}, {"ex1": 1.0}))
    report(results, s, "failed", text="your code printed: ```\n# Full marks\n````")
    output = results.to_gradescope(execution_time=0)["tests"][0]["output"]
    assert output.startswith("`````\n") and output.endswith("\n`````")


def test_points_read_like_a_grade():
    assert [format_points(v) for v in (73.5, 100.0, 60 / 26, 0.0, 2 / 3 * 3)] == ["73.5", "100", "2.31", "0", "2"]


# ----------------------------------------------------------------------------
# The exercises' conftest, run by pytester on small graded test files.

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
    course.inline_run("-p", "no:cacheprovider", "--gradescope=results.json", no_reraise_ctrlc=True)
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


def test_grading_under_xdist_gives_the_same_results_and_tables(course: pytest.Pytester):
    pytest.importorskip("xdist")
    serial = course.runpytest("-p", "no:cacheprovider", "--gradescope=serial.json")
    parallel = course.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--gradescope=parallel.json")

    def comparable(data: dict) -> list[dict]:
        return [{**t, "extra_data": {**t["extra_data"], "duration": None}} for t in data["tests"]]

    assert comparable(results_of(course, "parallel.json")) == comparable(results_of(course, "serial.json"))

    def summary(lines: list[str]) -> list[str]:
        start = next(i for i, line in enumerate(lines) if "gradcheck-kit: per-tensor tables" in line)
        return [line for line in lines[start:] if line.startswith(("exercise", "Score:", "name", "logprobs", "probs"))]

    assert summary(parallel.outlines) == summary(serial.outlines)
    assert any(line.startswith("Score: 9 / 15") for line in parallel.outlines)
