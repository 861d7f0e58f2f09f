"""The shipped exercises: every untouched stub is "not started", every reference solution passes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def grade(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pytest", "exercises", "-p", "no:cacheprovider", "-v", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def stubs() -> subprocess.CompletedProcess[str]:
    return grade()


@pytest.fixture(scope="module")
def solutions() -> subprocess.CompletedProcess[str]:
    return grade("--impl=solutions")


def outcomes(run: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Test id -> outcome word, from the -v lines."""
    found = re.findall(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|NOT STARTED)", run.stdout, re.M)
    return dict(found)


def test_untouched_stubs_are_not_started_and_fail_the_run(stubs):
    results = outcomes(stubs)
    graded = {nodeid: word for nodeid, word in results.items() if "test_ex" in nodeid and "[cuda" not in nodeid}
    graded = {nodeid: word for nodeid, word in graded.items() if "ex7" not in nodeid}
    assert graded, stubs.stdout[-3000:]
    assert set(graded.values()) == {"NOT STARTED"}, graded
    assert stubs.returncode == 1
    assert "Score: 0 / 100" in stubs.stdout
    assert "faster than your chunked one" not in stubs.stdout


def test_the_reference_solutions_pass_every_test_and_earn_the_speed_line(solutions):
    results = outcomes(solutions)
    assert results, solutions.stdout[-3000:]
    assert "FAILED" not in results.values() and "NOT STARTED" not in results.values(), solutions.stdout[-3000:]
    assert solutions.returncode == 0
    assert "Score: 100 / 100" in solutions.stdout
    assert re.search(r"your fused backward \(exercises 2-4\): [\d.]+x faster than your chunked one", solutions.stdout)


def test_every_exercise_file_has_its_solution_with_the_same_names():
    for stub in sorted((ROOT / "exercises").glob("ex*.py")):
        solution = ROOT / "solutions" / stub.name
        assert solution.is_file(), f"no solution for {stub.name}"
        names = set(re.findall(r"^(?:def|class) (\w+)", stub.read_text(), re.M))
        assert names <= set(re.findall(r"^(?:def|class) (\w+)", solution.read_text(), re.M)), stub.name


def test_benchmark_only_gives_no_score_instead_of_zero():
    run = grade("--impl=solutions", "--benchmark-only", "--benchmark-max-time=0.001", "--benchmark-min-rounds=1",
                "-k", "test_ex4 or cpu-embedding-block3-d10-n32-v27-index_add")  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:]
    assert "not graded: --benchmark-only skips the grading tests" in run.stdout
    assert "Score:" not in run.stdout


def test_benchmark_only_refuses_to_write_a_gradescope_file(tmp_path):
    run = grade("--benchmark-only", f"--gradescope={tmp_path / 'results.json'}")
    assert run.returncode == 4
    assert "--gradescope with --benchmark-only" in run.stderr
    assert not (tmp_path / "results.json").exists()
