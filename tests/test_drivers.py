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


# ----------------------------------------------------------------------------
# The drivers of exercises 5 and 6 send back the evidence the detectors need.

ROOT = Path(__file__).resolve().parents[1]


def load(folder: Path, name: str):
    from gradcheck_kit.sandbox.loading import load_module

    return load_module(folder / name)


def linear_inputs() -> dict:
    g = torch.Generator().manual_seed(0)
    state = {"weight": torch.randn(6, 4, generator=g), "bias": torch.randn(4, generator=g)}
    return {
        "fan_in": 6,
        "fan_out": 4,
        "state": state,
        "x": torch.randn(5, 6, generator=g),
        "dout": torch.randn(5, 4, generator=g),
    }


def test_a_layer_driver_sends_the_gradients_of_a_second_call_and_keeps_the_first_calls_as_they_were(tmp_path):
    from gradcheck_kit.course import drivers

    right = drivers.linear(load(ROOT / "solutions", "ex5_layers.py"), **linear_inputs())
    assert torch.equal(right["grads_again"]["weight"], right["grads"]["weight"])
    text = (ROOT / "solutions" / "ex5_layers.py").read_text(encoding="utf-8")
    text = text.replace("self.dweight: torch.Tensor | None = None", "self.dweight = torch.zeros(fan_in, fan_out)")
    text = text.replace("self.dweight = self.x.T @ dout", "self.dweight += self.x.T @ dout")
    (tmp_path / "ex5_layers.py").write_text(text, encoding="utf-8")
    accumulated = drivers.linear(load(tmp_path, "ex5_layers.py"), **linear_inputs())
    # The += of the second call writes into the tensor the first call returned: that one was copied first.
    assert torch.equal(accumulated["grads"]["weight"], right["grads"]["weight"])
    assert torch.equal(accumulated["grads_again"]["weight"], 2 * right["grads"]["weight"])


#: The update of ex6_training.py written as a new tensor bound to each layer's attribute: right, and rebound.
REBINDS = (
    "        for p, grad in zip(layer.parameters(), layer.grads(), strict=True):\n            p -= lr * grad\n",
    '        names = ("weight", "bias") if hasattr(layer, "weight") else ("gamma", "beta")\n'
    "        for name, grad in zip(names, layer.grads()):\n"
    "            setattr(layer, name, getattr(layer, name) - lr * grad)\n",
)


def test_the_training_driver_says_whether_each_parameter_is_still_the_tensor_it_was_given(tmp_path):
    from gradcheck_kit.course import drivers, layers

    prepared = layers.prepare(layers.LAYER_CHECKS["training_steps"])
    ex5 = load(ROOT / "solutions", "ex5_layers.py")
    kept = drivers.training_run(load(ROOT / "solutions", "ex6_training.py"), ex5, **prepared.kwargs)["kept"]
    assert kept and all(kept.values())
    text = (ROOT / "solutions" / "ex6_training.py").read_text(encoding="utf-8")
    assert text.count(REBINDS[0]) == 1
    (tmp_path / "ex6_training.py").write_text(text.replace(*REBINDS), encoding="utf-8")
    ran = drivers.training_run(load(tmp_path, "ex6_training.py"), ex5, **prepared.kwargs)
    assert ran["kept"].keys() == kept.keys() and not any(ran["kept"].values())
    # Rebinding the attributes is a right update: the grading process finds every value right.
    assert prepared.grade(ran).passed
