"""A course's run: each exercise in a fresh worker under its own limit, and a hang or crash kept to its check."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradcheck_kit.sandbox.box import Outcome
from gradcheck_kit.sandbox.policy import ExerciseSandbox


class FakeSandbox:
    """Records calls instead of running them; answers with the outcomes it is given, in turn."""

    def __init__(self, *outcomes: Outcome) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[str, float]] = []
        self.closed = 0

    def call(self, path, func_name, *args, timeout=None, **kwargs):
        self.calls.append((Path(path).name, timeout))
        return self.outcomes.pop(0) if self.outcomes else Outcome("ok", 1)

    def close(self):
        self.closed += 1


def test_each_exercise_runs_in_a_fresh_worker_with_its_own_time_limit(tmp_path):
    fake = FakeSandbox()
    box = ExerciseSandbox(fake, {"ex1": 30}, default=20)  # type: ignore[arg-type]
    ex1, ex2 = tmp_path / "ex1_chunked_backward.py", tmp_path / "ex2_cross_entropy.py"
    box.call(ex1, "chunked_backward", exercise="ex1", check="ex1")
    box.call(ex1, "chunked_backward", exercise="ex1", check="ex1")
    closed_within_ex1 = fake.closed
    box.call(ex2, "cross_entropy_backward", exercise="ex2", check="ex2")
    assert fake.calls == [
        ("ex1_chunked_backward.py", 30),
        ("ex1_chunked_backward.py", 30),
        ("ex2_cross_entropy.py", 20),
    ]
    assert fake.closed == closed_within_ex1 + 1


def test_a_limit_given_for_the_call_replaces_the_exercises(tmp_path):
    fake = FakeSandbox()
    box = ExerciseSandbox(fake, {"ex6": 120}, default=20)  # type: ignore[arg-type]
    box.call(tmp_path / "drivers.py", "training_run", exercise="ex6", check="loss_target", timeout=300)
    assert fake.calls == [("drivers.py", 300)]


@pytest.mark.parametrize("status", ["timeout", "crashed", "import_error", "missing_function"])
def test_a_check_that_hung_crashed_or_cannot_be_imported_is_not_run_again(tmp_path, status):
    fake = FakeSandbox(Outcome(status, message="the call did not finish within 20 s"))
    box = ExerciseSandbox(fake, {}, default=20)  # type: ignore[arg-type]
    path = tmp_path / "ex2_cross_entropy.py"
    first = box.call(path, "cross_entropy_backward", exercise="ex2", check="ex2")
    again = box.call(path, "cross_entropy_backward", exercise="ex2", check="ex2")
    other = box.call(tmp_path / "ex3_batchnorm.py", "batchnorm_backward", exercise="ex3", check="ex3")
    assert len(fake.calls) == 2
    assert again.status == first.status == status
    assert again.message.startswith(f"not run again: this check's first call ended with {status}")
    assert other.ok


def test_a_hang_in_one_check_leaves_the_other_checks_of_its_exercise_to_run(tmp_path):
    fake = FakeSandbox(Outcome("timeout", message="the call did not finish within 20 s"))
    box = ExerciseSandbox(fake, {}, default=20)  # type: ignore[arg-type]
    drivers = tmp_path / "drivers.py"
    assert box.call(drivers, "batchnorm", exercise="ex5", check="batchnorm_eval").status == "timeout"
    assert box.call(drivers, "tanh", exercise="ex5", check="tanh").ok
    assert box.call(drivers, "mlp", exercise="ex5", check="deep_mlp").ok
    assert box.call(drivers, "batchnorm", exercise="ex5", check="batchnorm_eval").status == "timeout"
    assert len(fake.calls) == 3


def test_a_wrong_answer_is_run_again_at_every_configuration(tmp_path):
    fake = FakeSandbox(Outcome("error", message="RuntimeError"), Outcome("ok", 1))
    box = ExerciseSandbox(fake, {}, default=20)  # type: ignore[arg-type]
    path = tmp_path / "ex2_cross_entropy.py"
    assert box.call(path, "f", exercise="ex2", check="ex2").status == "error"
    assert box.call(path, "f", exercise="ex2", check="ex2").ok


def test_only_exercise_7_on_cuda_may_start_processes_for_tritons_compiler(tmp_path):
    seen = []

    class Recording(FakeSandbox):
        def call(self, path, func_name, *args, timeout=None, **kwargs):
            seen.append((kwargs.get("device"), kwargs.get("processes", False)))
            return super().call(path, func_name, *args, timeout=timeout, **kwargs)

    box = ExerciseSandbox(Recording(), {}, default=20)  # type: ignore[arg-type]
    for exercise, device in (("ex7", "cuda"), ("ex7", "cpu"), ("ex2", "cuda")):
        box.call(tmp_path / "ex.py", "f", exercise=exercise, check=f"{exercise}-{device}", device=device)
    assert seen == [("cuda", True), ("cpu", False), ("cuda", False)]
