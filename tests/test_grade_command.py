"""``gradcheck-kit grade`` without grading: its arguments, the pytest command it builds, its child, its files."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from gradcheck_kit.autograder.command import _full_marks, _run_isolated, find_exercises, pytest_command
from gradcheck_kit.autograder.gradescope import write_json
from gradcheck_kit.cli import main

ROOT = Path(__file__).resolve().parent.parent


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


@pytest.mark.skipif(
    Path(find_exercises.__code__.co_filename).resolve().parents[2] != ROOT,
    reason="gradcheck-kit is installed (not editable): no exercises/ lies beside the installed package",
)
def test_the_exercises_beside_the_package_serve_when_the_current_directory_has_none(tmp_path: Path):
    assert find_exercises(None, cwd=tmp_path) == ROOT / "exercises"


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
    # Ctrl-C reaches this process as a KeyboardInterrupt even where the tests were started with
    # SIGINT ignored (in the background of a shell without job control, as a CI job may be).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            _run_isolated(command, cwd=tmp_path, deadline=1.0)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert ends_within(int(pid_file.read_text()), 10), "the grader went on after the second Ctrl-C"


def test_results_json_can_be_read_by_others_as_the_umask_allows(tmp_path: Path):
    mask = os.umask(0o022)
    try:
        write_json(tmp_path / "results.json", {"score": 1})
    finally:
        os.umask(mask)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_full_marks_on_some_of_the_tests_are_not_full_marks():
    whole = {"score": 100.0, "extra_data": {"complete": True, "total": 100.0, "selection": None}}
    assert _full_marks(whole)
    selected = {
        "score": 8.0,
        "extra_data": {"complete": True, "total": 8.0, "selection": {"tests": 2, "full_total": 100}},
    }
    assert not _full_marks(selected)


def test_pytest_starts_with_sigint_s_default_where_the_grade_command_ignores_it(tmp_path: Path):
    # A shell starts a background command with SIGINT ignored; pytest must still take the
    # SIGINT that asks it to write what it graded.
    child = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        out = tmp_path / "out"
        code, _ = _run_isolated(["sh", "-c", f"{sys.executable} -c '{child}' > {out}"], cwd=tmp_path)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # as it was, once the child started
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 0 and out.read_text().strip() == "True"
