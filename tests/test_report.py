from __future__ import annotations

import io
import json
import re
import sys

import pytest
import torch

import gradcheck_kit
from gradcheck_kit.comparison import compare
from gradcheck_kit.report import (
    ERROR,
    EXACT,
    INHERITED,
    NOT_STARTED,
    OK,
    SKIPPED,
    VERDICTS,
    WRONG,
    Report,
    Row,
    compare_grads,
    verdict_for,
)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def small_report() -> Report:
    reference = {"logprobs": torch.ones(2, 3), "W2": torch.ones(3, 2), "b2": torch.ones(2)}
    manual = {"logprobs": torch.ones(2, 3), "W2": torch.ones(3, 2) + 1.5e-3, "b2": None}
    return compare_grads(manual, reference, title="exercise 1")


def test_text_is_a_tabulate_table_under_the_title_with_the_summary_below(small_report):
    assert str(small_report).splitlines() == [
        "exercise 1",
        "name      shape    exact    approximate      maxdiff    max rel diff  verdict      note",
        "--------  -------  -------  -------------  ---------  --------------  -----------  ---------------------------------",
        "logprobs  (2, 3)   True     True                   0               0  exact",
        "W2        (3, 2)   False    False            1.5e-03         1.5e-03  wrong        6/6 elements off, worst at (0, 0)",
        "b2        (2,)     False    False                  -               -  not started",
        "1/3 gradients match, 1 wrong, 1 not started",
    ]


def test_numbers_are_short_scientific_with_zero_as_zero():
    expected = torch.ones(3, dtype=torch.float64)
    report = compare_grads({"x": expected + 1.2e-8, "y": expected}, {"x": expected, "y": expected})

    rows = str(report).splitlines()[3:5]

    assert rows[0].split()[4:6] == ["1.2e-08", "1.2e-08"]
    assert rows[1].split()[4:6] == ["0", "0"]


def test_summary_counts_matches_and_lists_what_else_happened():
    names = [f"g{i}" for i in range(26)]
    reference = {name: torch.zeros(2) for name in names}
    manual = {name: torch.zeros(2) for name in names[:24]}

    report = compare_grads(manual, reference)

    assert report.summary() == "24/26 gradients match, 2 not started"
    assert report.counts() == {EXACT: 24, NOT_STARTED: 2}
    assert not report.passed


def test_summary_of_a_single_gradient_is_singular():
    report = compare_grads({"x": torch.zeros(1)}, {"x": torch.zeros(1)})

    assert report.summary() == "1/1 gradient matches"


def test_passed_needs_every_row_exact_ok_or_inherited():
    exact = compare("a", torch.zeros(2), torch.zeros(2))
    close = compare("b", torch.tensor([1e-9, 0.0]), torch.zeros(2))
    assert Report("t", [Row(exact, EXACT), Row(close, OK)]).passed

    for verdict in (WRONG, NOT_STARTED, ERROR, SKIPPED):
        assert not Report("t", [Row(exact, EXACT), Row(close, verdict)]).passed
    assert Report("t", [Row(exact, EXACT), Row(close, INHERITED)]).passed
    assert not Report("t", []).passed


def test_inherited_rows_are_counted_apart_from_wrong_ones():
    c = compare("h", torch.ones(2), torch.zeros(2))
    report = Report("t", [Row(c, WRONG), Row(c, INHERITED, "right given your dlogits")])

    assert report.summary() == "0/2 gradients match, 1 wrong, 1 inherited"
    assert "right given your dlogits" in str(report)


def test_from_comparisons_derives_verdicts_from_each_comparison():
    expected = torch.ones(4)
    comparisons = [
        compare("exact", expected.clone(), expected),
        compare("close", expected + 1e-7, expected),
        compare("off", expected + 1, expected),
        compare("shape", torch.ones(1, 4), expected),
        compare("missing", None, expected),
    ]

    report = Report.from_comparisons("t", comparisons)

    assert [row.verdict for row in report.rows] == [EXACT, OK, WRONG, WRONG, NOT_STARTED]
    assert [verdict_for(c) for c in comparisons] == [EXACT, OK, WRONG, WRONG, NOT_STARTED]
    assert report["shape"].note == "shape (1, 4), expected (4,)"


def test_row_rejects_an_unknown_verdict():
    with pytest.raises(ValueError, match="unknown verdict 'fine'"):
        Row(compare("x", None, torch.zeros(1)), "fine")


def test_report_rows_are_looked_up_by_name(small_report):
    assert small_report["W2"].verdict == WRONG
    with pytest.raises(KeyError):
        small_report["W3"]


def test_colour_only_when_asked(small_report):
    assert "\x1b[" not in small_report.to_text(color=False)
    assert "\x1b[" not in str(small_report)
    coloured = small_report.to_text(color=True)
    assert "\x1b[32mexact\x1b[0m" in coloured
    assert "\x1b[31mwrong\x1b[0m" in coloured
    assert "\x1b[33mnot started\x1b[0m" in coloured


def test_coloured_table_keeps_the_columns_aligned(small_report):
    plain = small_report.to_text(color=False).splitlines()
    coloured = small_report.to_text(color=True).splitlines()

    assert [re.sub(r"\x1b\[\d+m", "", line) for line in coloured] == plain


def test_colour_by_default_only_on_a_terminal_without_no_color(small_report, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(sys, "stdout", _Terminal())
    assert "\x1b[" in small_report.to_text()

    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in small_report.to_text()

    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert "\x1b[" not in small_report.to_text()


def test_html_is_a_table_with_everything_escaped():
    c = compare("<b>logits</b>", torch.ones(2), torch.zeros(2))
    report = Report("<script>alert(1)</script>", [Row(c, WRONG, "dprobs & dcounts disagree")])

    page = report._repr_html_()

    assert page.startswith('<table class="gradcheck-report">')
    assert "<script>" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;logits&lt;/b&gt;" in page
    assert "dprobs &amp; dcounts disagree" in page
    assert page.count("<tr>") == 2
    assert "<p>0/1 gradient matches, 1 wrong</p>" in page


class _Printer:
    """What IPython hands to ``_repr_pretty_``: it collects text."""

    def __init__(self):
        self.written = ""

    def text(self, value):
        self.written += value


def test_a_report_is_one_line_as_a_repr_and_the_whole_table_in_ipython(small_report):
    assert repr(small_report) == "<Report 'exercise 1': 1/3 gradients match, 1 wrong, 1 not started>"

    printer = _Printer()
    small_report._repr_pretty_(printer, cycle=False)
    assert printer.written == small_report.to_text(color=False)

    printer = _Printer()
    small_report._repr_pretty_(printer, cycle=True)
    assert printer.written == repr(small_report)


def test_json_round_trips_and_carries_every_comparison_field(small_report):
    data = json.loads(small_report.to_json())

    assert data == small_report.as_dict()
    assert data["title"] == "exercise 1" and data["summary"] == small_report.summary()
    row = data["rows"][2]
    assert (row["name"], row["verdict"], row["problem"], row["maxdiff"]) == ("b2", NOT_STARTED, "missing", "nan")
    comparison_fields = set(small_report["b2"].comparison.as_dict())
    assert comparison_fields | {"verdict", "note", "kind", "diagnosis", "hint", "explanation"} == set(row)
    assert Report.from_dict(data).as_dict() == data


def test_missing_and_none_gradients_are_not_started_never_wrong():
    reference = {"a": torch.zeros(2), "b": torch.zeros(2)}

    report = compare_grads({"a": None}, reference)

    assert [row.verdict for row in report.rows] == [NOT_STARTED, NOT_STARTED]


def test_rows_follow_the_given_order_then_the_rest_of_the_reference():
    reference = {"C": torch.zeros(1), "W1": torch.zeros(1), "logprobs": torch.zeros(1)}

    assert [r.name for r in compare_grads({}, reference).rows] == ["C", "W1", "logprobs"]
    assert [r.name for r in compare_grads({}, reference, order=["logprobs", "W1"]).rows] == ["logprobs", "W1", "C"]


def test_order_naming_an_unknown_gradient_raises():
    with pytest.raises(ValueError, match="'probz'"):
        compare_grads({}, {"probs": torch.zeros(1)}, order=["probz"])


def test_unknown_manual_names_are_reported_with_a_suggestion():
    reference = {"logprobs": torch.zeros(2), "probs": torch.zeros(2)}
    manual = {"dlogprobs": torch.zeros(2), "probs": torch.zeros(2), "zzz": torch.zeros(2)}

    report = compare_grads(manual, reference)

    assert report.unknown == ("dlogprobs", "zzz")
    assert report.summary() == (
        "1/2 gradients match, 1 not started; 2 unknown names: 'dlogprobs' (did you mean 'logprobs'?), 'zzz'"
    )


def test_tolerances_reach_every_comparison():
    reference = {"x": torch.zeros(2)}
    manual = {"x": torch.full((2,), 0.05)}

    assert compare_grads(manual, reference)["x"].verdict == WRONG
    row = compare_grads(manual, reference, rtol=0.0, atol=0.1)["x"]
    assert (row.verdict, row.comparison.atol) == (OK, 0.1)


def test_one_sided_tolerance_raises_even_for_an_empty_reference():
    with pytest.raises(ValueError, match="rtol and atol must be given together"):
        compare_grads({}, {}, rtol=0.1)


def test_verdict_names_are_the_projects():
    assert VERDICTS == ("exact", "ok", "wrong", "inherited", "unchecked", "not started", "error", "skipped")


def test_package_exports_the_report_api():
    assert gradcheck_kit.Report is Report
    assert gradcheck_kit.compare_grads is compare_grads


def test_a_report_with_values_besides_gradients_counts_values():
    value = Row(compare("out", torch.ones(2), torch.ones(2)), "exact", kind="value")
    gradient = Row(compare("x", torch.ones(2), torch.zeros(2)), "wrong")
    assert Report("layer", (value, gradient)).summary() == "1/2 values match, 1 wrong"
    assert value.label == "out" and gradient.label == "dx"
