"""What a run's graded tests scored: the figures and the score lines, from reports fed by hand."""

from __future__ import annotations

from graded_runs import graded_run

from gradcheck_kit.autograder.results import format_points


def test_the_score_line_counts_hidden_points_and_says_so():
    assert (
        graded_run().score_line() == "Score: 8 / 10 (6 points in tests hidden from students until after the due date)"
    )


def test_points_read_like_a_grade():
    assert [format_points(v) for v in (73.5, 100.0, 60 / 26, 0.0, 2 / 3 * 3)] == ["73.5", "100", "2.31", "0", "2"]
