"""The shipped exercises graded end to end: every untouched stub is "not started", every reference solution passes,
and a run of some of the tests, or in another order, scores each test as a run of every test does."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Graded:
    """One run of ``pytest exercises/``: what it printed, and the results.json it wrote."""

    run: subprocess.CompletedProcess[str]
    results: dict[str, Any]

    @property
    def stdout(self) -> str:
        return self.run.stdout

    def test_lines(self) -> list[str]:
        """The node ids of the -v lines, in the order the tests ran."""
        return re.findall(r"^(\S+::\S+) (?:PASSED|FAILED|ERROR|SKIPPED|NOT STARTED)", self.stdout, re.M)

    def graded(self) -> list[tuple[str, str, float, float, str]]:
        """Each graded test of results.json as (number, name, score, max_score, status)."""
        return [(t["number"], t["name"], t["score"], t["max_score"], t["status"]) for t in self.results["tests"]]


def pytest_exercises(*args: str, tests: str = "exercises") -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pytest", tests, "-p", "no:cacheprovider", "-v", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def grade(folder: Path, *args: str, tests: str = "exercises") -> Graded:
    """Grade ``tests`` with pytest's ``args``, writing results.json into ``folder``."""
    results = folder / "results.json"
    run = pytest_exercises(*args, f"--gradcheck-gradescope={results}", tests=tests)
    assert results.is_file(), run.stdout[-3000:] + run.stderr[-3000:]
    return Graded(run, json.loads(results.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Graded:
    return grade(tmp_path_factory.mktemp("stubs"), "-p", "no:randomly")


@pytest.fixture(scope="module")
def solutions(tmp_path_factory: pytest.TempPathFactory) -> Graded:
    return grade(tmp_path_factory.mktemp("solutions"), "-p", "no:randomly", "--gradcheck-impl=solutions")


@pytest.mark.e2e
def test_untouched_stubs_are_not_started_and_fail_the_run(stubs):
    graded = [t for t in stubs.results["tests"] if t["tags"] != ["ex7"]]  # exercise 7 needs CUDA and Triton
    assert graded, stubs.stdout[-3000:]
    assert {(t["status"], t["score"], t["extra_data"]["verdict"]) for t in graded} == {("failed", 0.0, "not started")}
    assert (stubs.results["score"], stubs.results["extra_data"]["total"]) == (0.0, 100.0)
    assert stubs.run.returncode == 1
    assert "Score: 0 / 100 (13 points in tests hidden from students until after the due date)" in stubs.stdout
    assert "other shapes: NOT STARTED: dlogits: Exercise 2: write dlogits" in stubs.stdout
    assert "faster than your chunked one" not in stubs.stdout


@pytest.mark.e2e
def test_the_reference_solutions_earn_every_point_and_the_speed_line(solutions):
    tests = solutions.results["tests"]
    assert tests, solutions.stdout[-3000:]
    # Exercise 7 is worth nothing where it cannot run (no CUDA, no Triton), and everything where it can.
    assert [t["name"] for t in tests if t["score"] != t["max_score"]] == [], solutions.stdout[-3000:]
    assert sum(t["max_score"] for t in tests) == solutions.results["extra_data"]["total"] == 100
    assert solutions.results["score"] == 100 and solutions.results["extra_data"]["complete"] is True
    assert solutions.run.returncode == 0
    # The ratio, or an honest "too noisy" when the machine's load leaves it unknown; never slower.
    line = re.search(r"your fused backward \(exercises 2-4\): (.*)", solutions.stdout)
    assert line and re.match(r"[\d.]+x faster than your chunked one|timing too noisy on this machine", line[1])


@pytest.mark.e2e
def test_a_selection_by_keyword_is_scored_as_the_selected_tests_out_of_their_own_points(tmp_path):
    ex2 = grade(tmp_path, "-p", "no:randomly", "-k", "ex2")
    assert (
        "Score of the 2 selected tests: 0 / 8 (the full run is out of 100; "
        "2 points in tests hidden from students until after the due date)"
    ) in ex2.stdout.splitlines()
    assert ex2.results["extra_data"]["selection"] == {"tests": 2, "full_total": 100.0}


@pytest.mark.e2e
def test_one_gradient_run_by_its_node_id_is_worth_its_two_points(tmp_path):
    one = grade(
        tmp_path, "-p", "no:randomly", tests="exercises/test_ex1_chunked_backward.py::test_gradient[cpu-logprobs]"
    )
    lines = one.stdout.splitlines()
    assert "Score of the 1 selected test: 0 / 2 (the full run is out of 100)" in lines, one.stdout[-3000:]
    assert any(line.endswith("0 of 1 selected tests passed (the full exercise is out of 59)") for line in lines)


@pytest.mark.e2e
def test_a_shuffled_run_gives_the_same_results_as_one_in_the_files_order(stubs, tmp_path):
    pytest.importorskip("pytest_randomly", reason="pytest-randomly is not installed (pip install pytest-randomly)")
    shuffled = grade(tmp_path, "-p", "randomly", "--randomly-seed=20240229")
    assert shuffled.test_lines() != stubs.test_lines()  # it did run in another order
    assert sorted(shuffled.test_lines()) == sorted(stubs.test_lines())
    assert shuffled.graded() == stubs.graded()
    score = [line for line in stubs.stdout.splitlines() if line.startswith("Score")]
    assert score and score == [line for line in shuffled.stdout.splitlines() if line.startswith("Score")]


def test_every_exercise_file_has_its_solution_with_the_same_names():
    for stub in sorted((ROOT / "exercises").glob("ex*.py")):
        solution = ROOT / "solutions" / stub.name
        assert solution.is_file(), f"no solution for {stub.name}"
        names = set(re.findall(r"^(?:def|class) (\w+)", stub.read_text(), re.M))
        assert names <= set(re.findall(r"^(?:def|class) (\w+)", solution.read_text(), re.M)), stub.name


@pytest.fixture(scope="module")
def benchmarks_only() -> subprocess.CompletedProcess[str]:
    # Exercise 4's grading tests (skipped) and the embedding benchmarks at the notebook's size.
    return pytest_exercises(
        "--gradcheck-impl=solutions", "--benchmark-only", "--benchmark-max-time=0.001", "--benchmark-min-rounds=1",
        "-k", "test_ex4 or cpu-embedding-block3-d10-n32-v27",
    )  # fmt: skip


@pytest.mark.e2e
def test_benchmark_only_gives_no_score_instead_of_zero(benchmarks_only):
    assert benchmarks_only.returncode == 0, benchmarks_only.stdout[-3000:]
    assert "not graded: --benchmark-only skips the grading tests" in benchmarks_only.stdout
    assert "Score:" not in benchmarks_only.stdout


@pytest.mark.e2e
def test_benchmark_only_ends_with_the_bench_table_of_what_it_timed(benchmarks_only):
    table = benchmarks_only.stdout.split("gradcheck-kit: benchmarks", 1)[1]
    assert re.search(r"^copy bandwidth: [\d.]+ GB/s", table, re.M)
    assert re.search(r"^size +variant +median +± iqr +speed-up +GB/s +% of copy +peak memory$", table, re.M)
    by_label = {row["variant"]: row for row in table_rows(table)}
    assert set(by_label) == {"python loop (ex 1)", "index_add_ (ex 4)", "one-hot matmul",
                             "index_put_(accumulate=True)", "solutions/ ex 4"}, table  # fmt: skip
    assert by_label["python loop (ex 1)"]["speed-up"] == "1.00"  # the baseline of the speed-ups
    for row in by_label.values():
        assert float(row["GB/s"]) > 0 and row["% of copy"].endswith("%") and row["peak memory"].endswith("KiB")


def table_rows(text: str) -> list[dict[str, str]]:
    """The rows of the first table in ``text`` laid out by tabulate's "simple" format, by column."""
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("---"))
    spans = [m.span() for m in re.finditer(r"-+", lines[rule])]
    headers = [lines[rule - 1][a:b].strip() for a, b in spans]
    rows = []
    for line in lines[rule + 1 :]:
        if not line.strip() or line.startswith("="):  # the end of the table, or of the section
            break
        rows.append({h: line[a:b].strip() for h, (a, b) in zip(headers, spans, strict=True)})
    return rows


@pytest.mark.e2e
def test_benchmark_only_refuses_to_write_a_gradescope_file(tmp_path):
    run = pytest_exercises("--benchmark-only", f"--gradcheck-gradescope={tmp_path / 'results.json'}")
    assert run.returncode == 4
    assert "--gradcheck-gradescope with --benchmark-only" in run.stderr
    assert not (tmp_path / "results.json").exists()
