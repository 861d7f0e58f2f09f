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
    assert "other shapes: NOT STARTED: dlogits: Exercise 2: write dlogits" in stubs.stdout
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


@pytest.fixture(scope="module")
def benchmarks_only() -> subprocess.CompletedProcess[str]:
    # Exercise 4's grading tests (skipped) and the embedding benchmarks at the notebook's size.
    return grade("--impl=solutions", "--benchmark-only", "--benchmark-max-time=0.001", "--benchmark-min-rounds=1",
                 "-k", "test_ex4 or cpu-embedding-block3-d10-n32-v27")  # fmt: skip


def test_benchmark_only_gives_no_score_instead_of_zero(benchmarks_only):
    assert benchmarks_only.returncode == 0, benchmarks_only.stdout[-3000:]
    assert "not graded: --benchmark-only skips the grading tests" in benchmarks_only.stdout
    assert "Score:" not in benchmarks_only.stdout


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


def test_benchmark_only_refuses_to_write_a_gradescope_file(tmp_path):
    run = grade("--benchmark-only", f"--gradescope={tmp_path / 'results.json'}")
    assert run.returncode == 4
    assert "--gradescope with --benchmark-only" in run.stderr
    assert not (tmp_path / "results.json").exists()
