"""A function that raises: what it had computed comes back, and exercise 1 grades it, telling the error once."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from gradcheck_kit.course.backprop import chunked
from gradcheck_kit.course.catalogue import Hints
from gradcheck_kit.makemore.model import GRADED, build
from gradcheck_kit.report import ERROR
from gradcheck_kit.sandbox.box import Sandbox, unwrap
from gradcheck_kit.sandbox.loading import load_module

RAISES_HALFWAY = """
    import torch

    def chunked_backward(f):
        g = {"probs": torch.ones(2, 3)}
        dlogprobs = torch.full((2, 3), 2.0)
        n = 2
        missing = None
        return {"logprobs": dlogprobs @ dlogprobs}   # (2, 3) @ (2, 3) raises
"""


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(memory_limit=3 * 1024**3) as box:
        yield box


@pytest.fixture(params=["worker", "in-process"])
def either(request: pytest.FixtureRequest, sandbox: Sandbox) -> Sandbox:
    return sandbox if request.param == "worker" else Sandbox(isolate=False)


def test_a_function_that_raises_sends_back_its_tensors_by_variable_name(either, tmp_path):
    path = tmp_path / "ex1_chunked_backward.py"
    path.write_text(textwrap.dedent(RAISES_HALFWAY), encoding="utf-8")
    outcome = either.call(path, "chunked_backward", None)
    assert outcome.status == "error" and "mat1 and mat2 shapes cannot be multiplied" in outcome.message
    held = unwrap(outcome.value)
    assert set(held) == {"g", "dlogprobs"}  # tensors and dicts of tensors only: not n, not None
    assert torch.equal(held["dlogprobs"], torch.full((2, 3), 2.0))
    assert torch.equal(held["g"]["probs"], torch.ones(2, 3))


def test_a_function_that_returns_sends_back_no_locals(either, tmp_path):
    path = tmp_path / "ex1_chunked_backward.py"
    path.write_text("import torch\n\ndef chunked_backward(f):\n    d = torch.ones(2)\n    return {'a': d}\n")
    outcome = either.call(path, "chunked_backward", None)
    assert outcome.ok and set(unwrap(outcome.value)) == {"a"}


def test_exercise_1_raising_is_told_once_and_what_it_computed_is_graded():
    fwd = build()
    prepared = chunked(fwd, Hints(), 0.0)
    solution = load_module(Path("solutions/ex1_chunked_backward.py")).chunked_backward(fwd.student_view())
    held = {"g": {k: v for k, v in solution.items() if k in GRADED[:9]}, "dW2": solution["W2"]}
    report = prepared.partial(held, "IndexError: boom\nat ex1_chunked_backward.py:60: x")
    assert all(row.passed for row in report.rows[:10])  # dW2 found as a variable, the rest in the dict g
    assert [row.verdict for row in report.rows[10:]] == [ERROR] * 16
    assert report.rows[10].note.startswith("IndexError: boom")
    assert all(row.note == "not computed: chunked_backward raised before it (see db2)" for row in report.rows[11:])


def test_exercise_1_raising_after_every_gradient_is_charged_to_the_last():
    fwd = build()
    prepared = chunked(fwd, Hints(), 0.0)
    solution = load_module(Path("solutions/ex1_chunked_backward.py")).chunked_backward(fwd.student_view())
    report = prepared.partial({"g": solution}, "NameError: name 'dCC' is not defined")
    assert [row.name for row in report.rows if not row.passed] == ["C"]
    assert report["C"].note == "NameError: name 'dCC' is not defined"


def test_a_gradient_the_raising_line_was_updating_counts_as_not_computed():
    fwd = build()
    prepared = chunked(fwd, Hints(), 0.0)
    solution = load_module(Path("solutions/ex1_chunked_backward.py")).chunked_backward(fwd.student_view())
    held = {f"d{k}": v for k, v in solution.items() if k in GRADED[:5]}  # dlogprobs ... dcounts
    report = prepared.partial(held, "RuntimeError: boom", "dcounts += torch.ones_like(f.counts) * dcounts_sum")
    assert [row.passed for row in report.rows[:4]] == [True] * 4
    assert report["counts"].verdict == ERROR and report["counts"].note == "RuntimeError: boom"
    report = prepared.partial({"g": solution}, "RuntimeError: boom", 'g["W1"] = dhprebn @ f.embcat')
    assert [row.name for row in report.rows if not row.passed] == ["W1"]
