"""Results fed the reports of a run by hand, as the grading session feeds them, for the tests of the autograder."""

from __future__ import annotations

from gradcheck_kit.autograder.points import Plan, Share
from gradcheck_kit.autograder.results import Results
from gradcheck_kit.verdicts import PLAN_PROPERTY, ROW_PROPERTY, TEST_PROPERTY


def share(nodeid: str, points: float, exercise: str = "ex1", visibility: str = "visible", number: str = "1.1") -> Share:
    return Share(nodeid, exercise, f"{exercise} [cpu]: {nodeid}", number, points, visibility)


def report(results: Results, s: Share, outcome: str, *, rows=(), text: str = "", plan: Plan | None = None) -> None:
    properties = [
        (TEST_PROPERTY, s.as_dict()),
        *((ROW_PROPERTY, {"table": "t", "order": [0, 0], **r}) for r in rows),
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
