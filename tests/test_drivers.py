"""A course's driver runs on the student's loaded files: guarded, and every failure told as the student's."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from gradcheck_kit.sandbox.box import Sandbox

DRIVER = """
from gradcheck_kit.sandbox.call import MissingName


def run(layers, x):
    cls = getattr(layers, "Layer", None)
    if cls is None:
        raise MissingName("layers.py has no class 'Layer'")
    return cls().backward(x)
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def driver(tmp_path: Path) -> Path:
    return write(tmp_path, "driver.py", DRIVER)


@pytest.fixture(params=[False, True], ids=["in-process", "worker"])
def box(request: pytest.FixtureRequest):
    with Sandbox(isolate=request.param, timeout=30) as sandbox:
        yield sandbox


def layers(tmp_path: Path, body: str) -> Path:
    return write(tmp_path, "layers.py", "import torch\n\nclass Layer:\n    def backward(self, x):\n" + body)


def test_the_driver_gets_the_student_modules_first_and_returns_their_values(tmp_path, driver, box):
    student = layers(tmp_path, "        return 2 * x\n")
    outcome = box.call(driver, "run", torch.ones(3), student_files=[student])
    assert outcome.ok, outcome.message
    value = outcome.value.tensor if hasattr(outcome.value, "tensor") else outcome.value
    assert torch.equal(value, torch.full((3,), 2.0))


def test_an_exception_is_told_at_the_students_line_not_the_drivers(tmp_path, driver, box):
    student = layers(tmp_path, "        return x @ torch.ones(5)\n")
    outcome = box.call(driver, "run", torch.ones(3), student_files=[student])
    assert outcome.status == "error"
    assert outcome.message.splitlines()[-1] == "at layers.py:5: return x @ torch.ones(5)"


def test_an_untouched_stub_in_the_students_file_is_not_started(tmp_path, driver, box):
    student = layers(tmp_path, '        raise NotImplementedError("Exercise 5: write backward")\n')
    outcome = box.call(driver, "run", torch.ones(3), student_files=[student])
    assert (outcome.status, outcome.message) == ("not_started", "Exercise 5: write backward")


def test_autograd_in_the_students_code_is_forbidden_under_the_driver(tmp_path, driver, box):
    body = "        y = x.clone().requires_grad_()\n        return torch.autograd.grad((y * y).sum(), y)[0]\n"
    outcome = box.call(driver, "run", torch.ones(3), student_files=[layers(tmp_path, body)])
    assert outcome.status == "forbidden"
    assert "must not use autograd" in outcome.message


def test_a_student_file_that_cannot_be_imported_is_named(tmp_path, driver, box):
    student = write(tmp_path, "layers.py", "import torch\nraise ValueError('top-level')\n")
    outcome = box.call(driver, "run", torch.ones(3), student_files=[student])
    assert outcome.status == "import_error"
    assert outcome.message.startswith("layers.py could not be imported: ValueError: top-level")


def test_what_the_driver_cannot_find_is_a_missing_name(tmp_path, driver, box):
    student = write(tmp_path, "layers.py", "class Other:\n    pass\n")
    outcome = box.call(driver, "run", torch.ones(3), student_files=[student])
    assert (outcome.status, outcome.message) == ("missing_function", "layers.py has no class 'Layer'")
