"""Gradescope's results.json: the specification, and a run's results in its format."""

from __future__ import annotations

import pytest
from graded_runs import graded_run, report, share

from gradcheck_kit.autograder.gradescope import to_gradescope, validate
from gradcheck_kit.autograder.points import Plan
from gradcheck_kit.autograder.results import Results
from gradcheck_kit.verdicts import TEST_PROPERTY

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
# A run's results, fed by hand, as results.json.


def test_a_passing_test_earns_its_points_and_a_failing_one_none():
    data = to_gradescope(graded_run(), execution_time=1.5)
    assert [(t["score"], t["max_score"], t["status"]) for t in data["tests"]] == [
        (2.0, 2.0, "passed"), (0.0, 2.0, "failed"), (6.0, 6.0, "passed"),
    ]  # fmt: skip
    assert data["score"] == 8.0
    assert validate(data) == []


def test_each_test_carries_its_figures_for_the_course_to_study():
    wrong = to_gradescope(graded_run(), execution_time=1.5)["tests"][1]
    assert wrong["extra_data"]["verdict"] == "wrong"
    assert wrong["extra_data"]["maxdiff"] == 0.25
    assert wrong["extra_data"]["rows"][0]["mismatched"] == 3
    assert wrong["tags"] == ["ex1"]
    assert "dprobs: WRONG: 3/6 elements off" in wrong["output"]


def test_what_every_student_sees_leaves_out_the_hidden_results():
    overview = to_gradescope(graded_run(), execution_time=1.5)["output"]
    assert overview.startswith("**Score on the tests shown now: 2 / 4.** Of the 10 points, 6 points in tests hidden")
    assert "| ex1 | 2 / 4 | 1 / 2 |" in overview


def test_points_of_tests_that_never_reported_stay_in_the_total_as_not_graded():
    first, later = share("a", 4.0), share("b", 12.0, exercise="ex2", number="2.1")
    results = Results()  # as on the pytest-xdist controller: the plan comes with the reports
    report(results, first, "passed", plan=Plan({}, {"ex1": 4.0, "ex2": 12.0}, {"ex2": "exercise 2"}))
    data = to_gradescope(results, execution_time=3.0, reason="the run was interrupted")
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
    output = to_gradescope(results, execution_time=0)["tests"][0]["output"]
    assert output.startswith("`````\n") and output.endswith("\n`````")


def _skipped(results: Results, s, reason: str) -> None:
    """A test skipped before it starts, as a skipif mark skips it: setup skipped, then teardown."""
    properties = [(TEST_PROPERTY, s.as_dict())]
    results.add_report(s.nodeid, "setup", "skipped", properties, f"Skipped: {reason}")
    results.add_report(s.nodeid, "teardown", "passed", properties)


def test_a_skipped_test_worth_no_points_is_left_out_and_named_with_its_reason():
    graded, optional = share("a", 4.0), share("k", 0.0, exercise="ex7", number="7.1")
    results = Results(Plan({"a": graded, "k": optional}, {"ex1": 4.0, "ex7": 0.0}, {"ex7": "exercise 7"}))
    report(results, graded, "passed")
    _skipped(results, optional, "exercise 7 needs Triton")
    data = to_gradescope(results, execution_time=1.0)
    assert [t["name"] for t in data["tests"]] == [graded.name]
    assert data["extra_data"]["skipped"] == [{"name": optional.name, "reason": "exercise 7 needs Triton"}]
    assert f"Not run here, worth no points: {optional.name} (exercise 7 needs Triton)." in data["output"]
    assert "| exercise 7 |" not in data["output"]
    assert (data["score"], data["extra_data"]["complete"]) == (4.0, True)
    assert validate(data) == []


def test_a_skipped_test_worth_points_earns_none_and_is_listed_as_failed_with_its_reason():
    worth = share("a", 4.0)
    results = Results(Plan({"a": worth}, {"ex1": 4.0}))
    _skipped(results, worth, "CUDA is not available")
    entry = to_gradescope(results, execution_time=1.0)["tests"][0]
    assert (entry["score"], entry["status"]) == (0.0, "failed")
    assert "skipped, so it earns no points" in entry["output"] and "CUDA is not available" in entry["output"]


def test_a_leaderboard_is_written_only_when_there_are_entries():
    entries = [{"name": "fused speed-up", "value": 6.2, "order": "desc"}]
    data = to_gradescope(graded_run(), execution_time=1.0, leaderboard=entries)
    assert data["leaderboard"] == entries and validate(data) == []
    assert "leaderboard" not in to_gradescope(graded_run(), execution_time=1.0)
