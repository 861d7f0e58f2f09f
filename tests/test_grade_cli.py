"""``gradcheck-kit grade``, run as instructors run it: on hostile submissions, in a child process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gradcheck_kit.autograder.gradescope import validate

# Each test grades a folder with `gradcheck-kit grade`, in a child process that runs pytest.
pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = Path(__file__).resolve().parent / "hostile"
SOLUTIONS = ROOT / "solutions"
EXERCISE_FILES = ("ex1_chunked_backward.py", "ex2_cross_entropy.py", "ex3_batchnorm.py", "ex4_embedding.py")


class Graded:
    """One run of ``gradcheck-kit grade`` on a submission folder."""

    def __init__(self, submission: Path, results: Path, *options: str, env: dict[str, str] | None = None) -> None:
        self.submission = submission
        self.before = sorted(p.name for p in submission.iterdir())
        command = [
            sys.executable,
            "-m",
            "gradcheck_kit",
            "grade",
            str(submission),
            "--gradescope",
            str(results),
            *options,
        ]
        self.process = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        self.stdout = self.process.stdout
        self.results = json.loads(results.read_text(encoding="utf-8"))

    def test(self, name: str) -> dict:
        return next(t for t in self.results["tests"] if t["name"] == name)

    def exercise(self, key: str) -> list[dict]:
        return [t for t in self.results["tests"] if t["tags"] == [key]]


def submission(folder: Path, into: Path) -> Path:
    """A copy of a hostile folder, outside the repository, with the reference solution of each missing exercise."""
    shutil.copytree(folder, into)
    for name in EXERCISE_FILES:
        if not (into / name).exists():
            shutil.copy(SOLUTIONS / name, into / name)
    return into


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Graded:
    base = tmp_path_factory.mktemp("mixed")
    return Graded(submission(HOSTILE / "mixed", base / "submission"), base / "results.json", "--timeout", "1")


def test_a_correct_exercise_keeps_all_its_points_beside_hostile_ones(mixed: Graded):
    ex1 = mixed.exercise("ex1")
    assert len(ex1) == 27 and all(t["status"] == "passed" for t in ex1)
    assert sum(t["score"] for t in ex1) == 59


@pytest.mark.parametrize(
    ("exercise", "reason"),
    [
        ("ex2", "did not finish within 1 s and was stopped"),
        ("ex3", "exited with code 0 during the call"),
        ("ex4", "SyntaxError: expected ':'"),
    ],
    ids=["hang", "os-exit", "syntax-error"],
)
def test_a_hostile_exercise_fails_on_its_own_with_the_reason(mixed: Graded, exercise: str, reason: str):
    tests = mixed.exercise(exercise)
    assert [t["status"] for t in tests] == ["failed", "failed"]
    assert all(t["score"] == 0 for t in tests)
    assert reason in tests[0]["output"]


def test_grading_prints_the_seed_the_tables_and_the_score_line(mixed: Graded):
    lines = mixed.stdout.splitlines()
    assert any(line.startswith("reproducible: forward pass seed 2147483647") for line in lines)
    assert "exercise 1: chunked backward [cpu]" in lines
    assert "26/26 gradients match" in lines
    score = f"{mixed.results['score']:g}"
    assert f"Score: {score} / 100 (13 points in tests hidden from students until after the due date)" in lines


def test_anything_short_of_full_marks_exits_non_zero(mixed: Graded):
    assert mixed.process.returncode == 1


def test_results_json_follows_gradescopes_specification(mixed: Graded):
    assert validate(mixed.results) == []
    # Exercise 1, and what exercises 5 and 6 (copied from the solutions) earn within the 1 s limit.
    assert mixed.results["score"] == sum(t["score"] for t in mixed.results["tests"])
    assert 59 <= mixed.results["score"] <= 74
    assert mixed.results["extra_data"]["complete"] is True


def test_the_submission_is_graded_where_it_lies_and_left_as_it_was(mixed: Graded):
    assert f"grading: {mixed.submission}" in mixed.stdout.splitlines()
    assert sorted(p.name for p in mixed.submission.iterdir()) == mixed.before


def test_a_submission_that_tries_to_kill_its_grader_is_refused_and_grading_completes(tmp_path: Path):
    graded = Graded(submission(HOSTILE / "kills_grader", tmp_path / "submission"), tmp_path / "results.json")
    data = graded.results
    assert graded.process.returncode == 1
    assert validate(data) == []
    assert data["extra_data"]["complete"] is True
    assert "No module named 'torch_backprop_answers'" in graded.exercise("ex2")[0]["output"]
    assert "sys.exit(0)" in graded.exercise("ex3")[0]["output"]
    ex4 = graded.exercise("ex4")
    assert [(t["score"], t["status"]) for t in ex4] == [(0.0, "failed")] * len(ex4)
    assert "gradcheck-kit: your code may not send a signal to process" in ex4[0]["output"]
    # Exercise 1 and what the reference solutions copied in for exercises 5 and 6 earn.
    assert data["score"] == sum(t["score"] for t in data["tests"]) and data["score"] >= 59


KILLED_EXERCISES = """
import os
import signal
import pytest

pytestmark = pytest.mark.gradcheck(exercise="ex1")

def test_graded_first():
    pass

def test_killed():
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_results_json_is_written_even_when_the_grading_process_dies(tmp_path: Path):
    exercises = course(tmp_path, KILLED_EXERCISES)
    results = tmp_path / "results.json"
    # A short TMPDIR: the grader's own goes inside it, and a socket's path is at most 104 bytes.
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        command = [sys.executable, "-m", "gradcheck_kit", "grade", str(tmp_path), "--exercises", str(exercises)]
        process = subprocess.run(
            [*command, "--gradescope", str(results)], capture_output=True, text=True, timeout=300,
            env={**os.environ, "TMPDIR": tmp},
        )  # fmt: skip
        # The killed grader's temporary files went with the run's.
        assert list(Path(tmp).iterdir()) == []
    data = json.loads(results.read_text(encoding="utf-8"))
    assert process.returncode == 1
    assert validate(data) == []
    assert data["extra_data"]["complete"] is False
    assert data["extra_data"]["reason"].startswith("the grading process was killed by SIGKILL")
    assert data["output"].startswith("**Grading did not finish:** the grading process was killed by SIGKILL")
    assert "Grading did not finish: the grading process was killed by SIGKILL" in process.stdout


SLOW_EXERCISES = """
import time
import pytest

pytestmark = pytest.mark.gradcheck(exercise="ex1")

def test_quick():
    pass

def test_slow():
    time.sleep(120)
"""

PASSING_EXERCISES = """
import pytest

pytestmark = pytest.mark.gradcheck(exercise="ex1")

def test_notebook_shapes(impl_dir):
    assert (impl_dir / "answer.txt").read_text() == "42"
"""

# Imported by pytest, this would run inside the grading process and could award itself anything.
HOSTILE_CONFTEST = """
import pathlib
pathlib.Path(__file__).with_name("conftest-was-imported").write_text("it was")
"""


def course(tmp_path: Path, tests: str) -> Path:
    """An exercises folder with the real conftest and ``tests``, worth the default 100 points."""
    exercises = tmp_path / "course" / "exercises"
    exercises.mkdir(parents=True)
    shutil.copy(ROOT / "exercises" / "conftest.py", exercises / "conftest.py")
    (exercises / "test_ex1.py").write_text(tests)
    return exercises


def test_the_deadline_stops_grading_and_results_json_says_so(tmp_path: Path):
    exercises = course(tmp_path, SLOW_EXERCISES)
    results = tmp_path / "results.json"
    command = [sys.executable, "-m", "gradcheck_kit", "grade", str(tmp_path), "--exercises", str(exercises)]
    process = subprocess.run(
        [*command, "--gradescope", str(results), "--deadline", "6"], capture_output=True, text=True
    )
    data = json.loads(results.read_text(encoding="utf-8"))
    assert process.returncode == 1
    assert data["extra_data"]["reason"] == "grading was stopped at the deadline of 6 s"
    assert data["extra_data"]["complete"] is False
    assert validate(data) == []
    assert data["execution_time"] < 60


def test_full_marks_exit_zero_and_a_conftest_in_the_submission_is_never_imported(tmp_path: Path):
    exercises = course(tmp_path, PASSING_EXERCISES)
    student = tmp_path / "student"
    student.mkdir()
    (student / "answer.txt").write_text("42")
    (student / "conftest.py").write_text(HOSTILE_CONFTEST)
    command = [sys.executable, "-m", "gradcheck_kit", "grade", str(student), "--exercises", str(exercises)]
    process = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert "Score: 100 / 100" in process.stdout.splitlines()
    assert process.returncode == 0
    assert not (student / "conftest-was-imported").exists()
