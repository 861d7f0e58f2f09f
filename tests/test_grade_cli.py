"""``gradcheck-kit grade``, run as instructors run it: on hostile submissions, in a child process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

# Loaded before pytester's in-process run, whose module snapshot must not unload torch.
import torch  # noqa: F401

from gradcheck_kit.autograder.command import _run_isolated, find_exercises, pytest_command
from gradcheck_kit.autograder.gradescope import validate, write_json
from gradcheck_kit.cli import main

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


def test_plain_pytest_refuses_to_grade_when_it_imported_the_submissions_conftest(pytester: pytest.Pytester):
    pytester.makeconftest((ROOT / "exercises" / "conftest.py").read_text(encoding="utf-8"))
    student = pytester.mkdir("student")
    (student / "conftest.py").write_text("")
    result = pytester.runpytest("-p", "no:cacheprovider", "--impl", str(student))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*conftest.py was imported by pytest as a conftest*write --gradcheck-impl={student} (one word)*"]
    )
    for spelling in ("--gradcheck-impl", "--impl"):
        ran = pytester.runpytest("-p", "no:cacheprovider", f"{spelling}={student}")
        assert ran.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_a_missing_submission_folder_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["grade", str(tmp_path / "nowhere")]) == 2
    assert f"gradcheck-kit grade: error: {tmp_path / 'nowhere'}: no such folder" in capsys.readouterr().err


def test_an_exercises_folder_without_a_conftest_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["grade", str(tmp_path), "--exercises", str(tmp_path)]) == 2
    assert "not an exercises folder (it has no conftest.py)" in capsys.readouterr().err


def test_the_exercises_folder_in_the_current_directory_comes_first(tmp_path: Path):
    (tmp_path / "exercises").mkdir()
    (tmp_path / "exercises" / "conftest.py").write_text("")
    assert find_exercises(None, cwd=tmp_path) == (tmp_path / "exercises").resolve()
    assert find_exercises(None, cwd=tmp_path / "exercises") == ROOT / "exercises"


def test_workers_use_xdists_default_scheduling_and_options_reach_pytest_as_single_words(tmp_path: Path):
    command = pytest_command(
        tmp_path / "exercises", tmp_path / "student", tmp_path / "r.json", timeout=5, workers="2", device="cpu"
    )
    # --dist loadfile can wait forever once a submission kills a worker (pytest-dev/pytest-xdist#784).
    assert command[command.index("-n") :][:2] == ["-n", "2"] and "--dist" not in command
    assert f"--gradcheck-impl={tmp_path / 'student'}" in command
    assert f"--gradcheck-gradescope={tmp_path / 'r.json'}" in command
    assert "--gradcheck-timeout=5" in command and "--gradcheck-device=cpu" in command
    assert command[command.index("gradcheck") - 1] == "-m"


def test_a_second_ctrl_c_while_waiting_for_the_grader_still_stops_it(tmp_path: Path, ends_within):
    # A grader that ignores the first Ctrl-C (SIGINT), and the user presses it again.
    pid_file = tmp_path / "pid"
    child = (
        f"import os, pathlib, signal, time; pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid())); "
        "signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(120)"
    )
    command = [sys.executable, "-c", child]
    timer = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            _run_isolated(command, cwd=tmp_path, deadline=1.0)
    finally:
        timer.cancel()
    assert ends_within(int(pid_file.read_text()), 10), "the grader went on after the second Ctrl-C"


def test_results_json_can_be_read_by_others_as_the_umask_allows(tmp_path: Path):
    mask = os.umask(0o022)
    try:
        write_json(tmp_path / "results.json", {"score": 1})
    finally:
        os.umask(mask)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
