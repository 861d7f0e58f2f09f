"""A grading run's results.json carries the integrity report of the folder it grades, for the instructor."""

from __future__ import annotations

import shutil
from pathlib import Path

from gradcheck_kit.autograder.run import GradingRun

ROOT = Path(__file__).resolve().parents[1]
COURSE = ROOT / "exercises"


def test_results_json_carries_what_the_integrity_scan_flagged(tmp_path):
    shutil.copytree(ROOT / "tests" / "hostile" / "mixed", tmp_path, dirs_exist_ok=True)
    run = GradingRun.load(COURSE, tmp_path)
    integrity = run.gradescope(complete=True, reason="")["extra_data"]["integrity"]
    assert integrity["summary"].startswith("integrity: 3 findings in 3 files")
    assert {f["file"] for f in integrity["files"] if f["findings"]} == {
        "ex2_cross_entropy.py",
        "ex3_batchnorm.py",
        "ex4_embedding.py",
    }


def test_a_conftest_planted_in_a_submission_is_flagged(tmp_path):
    (tmp_path / "conftest.py").write_text("def pytest_runtest_makereport(item, call):\n    pass\n")
    assert "planted-file" in GradingRun.load(COURSE, tmp_path).integrity.by_category


def test_grading_the_course_folder_in_place_does_not_flag_its_own_conftest():
    assert GradingRun.load(COURSE, COURSE).integrity.findings == ()
