"""Submissions that attack the grader, graded through the real sandbox: none gains a point or leaves a trace.

Each folder of tests/hostile/ (see its README) attacks one way. Each is graded by the
course's Grader in a worker, as ``pytest exercises/`` grades it, or, for the forged
results.json, by ``gradcheck-kit grade`` itself. For each the test checks that it
earns nothing, that no process of the sandbox's user is left behind, that no file
outside its folder changed (exercises/, solutions/, gradcheck_kit/, the repository's
top, site-packages, a neighbouring submission, the results file), and that the next,
honest submission is graded as it should be.

The ways around the worker's audit hook (from C, or through a descriptor) are stopped
by the worker's own user, which it switches to only when the grader runs as root, as
CI's and Gradescope's do; and, for reads, by Landlock where the kernel has it. Without
them those checks are skipped, with the reason.
"""

from __future__ import annotations

import json
import re
import shutil
import site
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gradcheck_kit.course.catalogue import Hints
from gradcheck_kit.course.grader import Grader, Result
from gradcheck_kit.sandbox import landlock
from gradcheck_kit.sandbox.box import Sandbox
from gradcheck_kit.sandbox.isolation import processes_of, sandbox_user
from gradcheck_kit.sandbox.policy import ExerciseSandbox

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = Path(__file__).resolve().parent / "hostile"
SOLUTIONS = ROOT / "solutions"
EXERCISES = ROOT / "exercises"

# Each test grades a folder through the real sandbox, one of them with `gradcheck-kit grade`.
pytestmark = pytest.mark.e2e

SWITCHES_USER = sandbox_user() is not None
needs_own_user = pytest.mark.skipif(
    not SWITCHES_USER,
    reason="the worker switches to a user of its own only when the grader runs as root (as CI does); without "
    "it, this attack's ways around the audit hook (a pidfd, C code) are open: grades are for self-checking",
)
writes_confined = pytest.mark.skipif(
    not SWITCHES_USER and landlock.abi() == 0,
    reason="C code (a shared mapping) writes any file its user may: stopped by a user of the worker's own (the "
    "grader runs as root, as CI does) or by Landlock, neither of which is here",
)
signals_confined = pytest.mark.skipif(
    not SWITCHES_USER and landlock.abi() < 6,
    reason="a signal through a pidfd reaches any process of the same user: stopped by a user of the worker's own "
    "(the grader runs as root, as CI does) or by Landlock's signal scoping (ABI 6), neither of which is here",
)
needs_landlock = pytest.mark.skipif(
    landlock.abi() == 0, reason="reads from C (torch.from_file) are stopped by Landlock, which this kernel lacks"
)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[ExerciseSandbox]:
    with Sandbox(timeout=20) as box:
        yield ExerciseSandbox(box, {}, 20.0)


@pytest.fixture
def submission(tmp_path: Path) -> Iterator[callable]:
    """A copy of a hostile folder beside another student's submission, and a check that nothing outside changed."""
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(SOLUTIONS / "ex2_cross_entropy.py", other)
    results = tmp_path / "results.json"
    results.write_text('{"score": 0}')
    before = snapshot(other, results)

    def make(name: str) -> Path:
        folder = tmp_path / name
        shutil.copytree(HOSTILE / name, folder)
        return folder

    try:
        yield make
        assert snapshot(other, results) == before, "a file outside the submission's folder changed"
    finally:
        remove_planted()


def snapshot(*also: Path) -> dict[str, tuple[int, int]]:
    """What the attacks could change: each file's modification time and size, and each folder's entries.

    Every file of exercises/, solutions/ and ``also``; of gradcheck_kit/, every folder's entries and
    the files the attacks write to, not every file's time: in a checkout others edit, the package's
    files change under a test that runs for a minute.
    """
    found: dict[str, tuple[int, int]] = {}
    for tree in (EXERCISES, SOLUTIONS, *also):
        paths = [tree] if tree.is_file() else [p for p in tree.rglob("*") if "__pycache__" not in p.parts]
        for path in paths:
            if path.is_file():
                stat = path.stat()
                found[str(path)] = (stat.st_mtime_ns, stat.st_size)
    package = ROOT / "gradcheck_kit"
    folders = [ROOT, package, *(p for p in package.rglob("*") if p.is_dir() and p.name != "__pycache__")]
    for folder in (*folders, *map(Path, site.getsitepackages())):
        found[f"{folder}/"] = (hash(tuple(sorted(p.name for p in folder.iterdir() if p.name != "__pycache__"))), 0)
    for path in (package / "__init__.py", package / "sandbox" / "audit.py"):
        found[str(path)] = (path.stat().st_mtime_ns, path.stat().st_size)
    return found


def remove_planted() -> None:
    """Undo what a successful attack of plants_files would leave, so that one failure does not spread."""
    for path in (ROOT / "conftest.py", ROOT / "gradcheck_kit" / "_planted.py"):
        if path.exists() and "planted by a submission" in path.read_text(errors="replace"):
            path.unlink()
    for folder in site.getsitepackages():
        Path(folder, "gradcheck_hostile_planted.pth").unlink(missing_ok=True)


def grade(sandbox: ExerciseSandbox, folder: Path, exercise: str) -> Result:
    result = Grader(folder, sandbox, Hints.load(EXERCISES / "hints.toml")).grade(exercise)
    sandbox.close()  # ends the worker, and every process of its user
    return result


def earns_nothing(result: Result) -> bool:
    return not result.report.passed and not any(row.passed for row in result.report.rows)


def nothing_left_running() -> list[int]:
    user = sandbox_user()
    return [] if user is None else processes_of(user.uid)


def the_next_honest_submission_passes(sandbox: ExerciseSandbox) -> None:
    for exercise in ("ex2", "ex3"):
        result = grade(sandbox, SOLUTIONS, exercise)
        assert result.status == "ok" and result.report.passed, result.outcome.message


@needs_own_user
def test_a_forged_results_json_is_never_written_and_the_grader_cannot_be_killed(submission, sandbox, tmp_path):
    folder = submission("forges_results")
    for name in ("ex1_chunked_backward.py", "ex3_batchnorm.py", "ex4_embedding.py"):
        shutil.copy(SOLUTIONS / name, folder)
    results = tmp_path / "graded.json"
    command = [sys.executable, "-m", "gradcheck_kit", "grade", "--gradescope", str(results), str(folder)]
    run = subprocess.run([*command, "--", "-k", "test_ex2"], capture_output=True, text=True, timeout=300)
    data = json.loads(results.read_text(encoding="utf-8"))
    assert "forged" not in data["extra_data"]
    assert data["extra_data"]["complete"] is True, data["extra_data"]
    ex2 = [t for t in data["tests"] if t["tags"] == ["ex2"]]
    assert ex2 and all(t["score"] == 0 for t in ex2)
    assert "gradcheck-kit: your code may not send a signal to process" in ex2[0]["output"]
    uid = int(re.search(r"^isolation: worker runs as uid (\d+)", run.stdout, re.M)[1])
    assert processes_of(uid) == []
    the_next_honest_submission_passes(sandbox)


@needs_own_user
def test_a_process_left_behind_is_ended_with_its_check(submission, sandbox, capfd):
    result = grade(sandbox, submission("outlives_its_check"), "ex2")
    assert earns_nothing(result)
    left = int(re.search(r"left process (\d+) behind", result.outcome.message)[1])
    # The grandchild, and its parent too when it had not finished exiting.
    assert re.search(r"\(the call left [12] process\(es\) running; the grader ended them\)", result.outcome.message)
    assert nothing_left_running() == []  # the grandchild is gone (or dead, waiting to be reaped)
    time.sleep(3)  # past the moment it meant to act
    assert not Path(f"/tmp/gradcheck-hostile-outlived-{left}").exists()
    assert "outlived its check" not in capfd.readouterr().out
    the_next_honest_submission_passes(sandbox)


@writes_confined
def test_files_of_the_grader_the_course_and_other_students_cannot_be_written(submission, sandbox):
    result = grade(sandbox, submission("plants_files"), "ex2")
    assert earns_nothing(result)
    assert not (ROOT / "conftest.py").exists() and not (ROOT / "gradcheck_kit" / "_planted.py").exists()
    assert nothing_left_running() == []
    the_next_honest_submission_passes(sandbox)


def test_the_solutions_and_the_graders_modules_cannot_be_imported_or_read(submission, sandbox):
    result = grade(sandbox, submission("reads_references"), "ex2")
    assert earns_nothing(result)
    assert result.status == "forbidden"
    assert result.outcome.message.startswith("gradcheck-kit: your code may not import solutions")
    the_next_honest_submission_passes(sandbox)


@needs_landlock
def test_the_solutions_cannot_be_read_from_c_either(submission, sandbox):
    result = grade(sandbox, submission("reads_references"), "ex3")
    assert earns_nothing(result)
    assert "Permission denied" in result.outcome.message


@pytest.mark.parametrize(
    ("exercise", "message"),
    [
        ("ex2", r"could not be copied back: .*can't allocate memory.*\n\(a call may use at most 8 GiB of memory\)"),
        ("ex3", r"can't allocate memory.*\n\(a call may use at most 8 GiB of memory\)"),
        ("ex4", r"^returned a set, which cannot be sent back to the grader"),
    ],
    ids=["copied back", "limit raised", "colliding set"],
)
def test_resources_are_bounded_also_after_the_call_and_by_the_reply(submission, sandbox, exercise, message):
    started = time.monotonic()
    result = grade(sandbox, submission("exhausts_resources"), exercise)
    assert earns_nothing(result)
    assert result.status == "error" and re.search(message, result.outcome.message, re.S), result.outcome.message
    assert time.monotonic() - started < 20
    assert nothing_left_running() == []


@signals_confined
def test_the_fork_server_cannot_be_stopped(submission, sandbox):
    result = grade(sandbox, submission("stops_fork_server"), "ex2")
    assert earns_nothing(result)
    assert result.status == "forbidden"
    assert result.outcome.message.startswith("gradcheck-kit: your code may not send a signal to process")
    the_next_honest_submission_passes(sandbox)  # a worker starts: the fork server runs
