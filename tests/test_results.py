"""What a run's graded tests scored: the figures and the score lines, from reports fed by hand."""

from __future__ import annotations

from graded_runs import graded_run, report, share

from gradcheck_kit.autograder.points import Plan
from gradcheck_kit.autograder.results import Results, format_points


def test_the_score_line_counts_hidden_points_and_says_so():
    assert (
        graded_run().score_line() == "Score: 8 / 10 (6 points in tests hidden from students until after the due date)"
    )


def test_points_read_like_a_grade():
    assert [format_points(v) for v in (73.5, 100.0, 60 / 26, 0.0, 2 / 3 * 3)] == ["73.5", "100", "2.31", "0", "2"]


def test_a_selection_is_scored_against_its_own_total_and_says_so():
    first, second = share("a", 2.0), share("b", 2.0, number="1.2")
    # Two of exercise 1's five tests selected; exercise 2 not collected at all.
    plan = Plan({"a": first, "b": second}, {"ex1": 4.0}, {"ex1": "exercise 1"}, {"ex1": 10.0, "ex2": 5.0}, {"ex1": 3})
    results = Results(plan)
    report(results, first, "passed")
    report(results, second, "failed", text="dprobs: WRONG: 3/6 elements off")
    assert results.summary_lines()[0].endswith("1 of 2 selected tests passed (the full exercise is out of 10)")
    assert results.score_line() == "Score of the 2 selected tests: 2 / 4 (the full run is out of 15)"


def test_a_run_of_every_test_says_score_plainly():
    results = graded_run()
    assert not results.selection
    assert results.summary_lines()[0].endswith("2 of 3 tests passed")
