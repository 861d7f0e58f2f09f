"""``gradcheck-kit gradescope-bundle``: what the zip holds, its modes and line endings, and its two scripts.

The wheel is a stand-in (``--wheel``): building a real one takes pip and seconds,
installing it a virtual environment and PyTorch; that is checked by hand (README,
"On Gradescope"). The last test runs the bundle's ``run_autograder`` with the
gradcheck-kit of this interpreter.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gradcheck_kit.autograder.bundle import Settings, run_autograder, setup_script
from gradcheck_kit.autograder.gradescope import validate
from gradcheck_kit.cli import main

ROOT = Path(__file__).resolve().parent.parent
WHEEL = "gradcheck_kit-0.1.0-py3-none-any.whl"


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    path = tmp_path / "wheels" / WHEEL
    path.parent.mkdir()
    path.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip: the bundle copies it as it is
    return path


def bundle(tmp_path: Path, wheel: Path, *options: str) -> zipfile.ZipFile:
    out = tmp_path / "autograder.zip"
    assert main(["gradescope-bundle", str(out), "--wheel", str(wheel), "--torch", "torch==2.13.0", *options]) == 0
    return zipfile.ZipFile(out)


def test_the_zip_holds_the_scripts_the_wheel_and_the_graded_tests_and_never_the_solutions(tmp_path, wheel):
    names = bundle(tmp_path, wheel).namelist()
    assert names[:3] == ["setup.sh", "run_autograder", WHEEL]
    course = {name.removeprefix("exercises/") for name in names[3:]}
    assert {"conftest.py", "points.toml", "hints.toml", "test_ex1_chunked_backward.py"} <= course
    assert all(name.startswith("exercises/") for name in names[3:])
    assert not [name for name in names if "solution" in name or name.startswith("exercises/ex")]
    assert not [name for name in names if "__pycache__" in name or ".hypothesis" in name]


def test_the_scripts_are_executable_and_everything_else_is_not(tmp_path, wheel):
    for info in bundle(tmp_path, wheel).infolist():
        mode = info.external_attr >> 16
        assert stat.S_ISREG(mode) and info.create_system == 3, info.filename
        executable = info.filename in ("setup.sh", "run_autograder")
        assert stat.S_IMODE(mode) == (0o755 if executable else 0o644), info.filename


def test_unzipped_the_scripts_run_as_programs_with_lf_line_endings(tmp_path, wheel):
    archive = bundle(tmp_path, wheel)
    archive.extractall(tmp_path / "source")
    for name in ("setup.sh", "run_autograder"):
        data = archive.read(name)
        assert data.startswith(b"#!/usr/bin/env bash\n") and b"\r" not in data
        # zipfile does not apply modes: unzip does, from external_attr, as Gradescope's does.
        subprocess.run(["bash", "-n", str(tmp_path / "source" / name)], check=True)


def test_the_course_files_are_copied_with_lf_line_endings(tmp_path, wheel):
    course = tmp_path / "course"
    course.mkdir()
    for path in (ROOT / "exercises").glob("*"):
        if path.name in ("conftest.py", "points.toml", "test_ex2_cross_entropy.py"):
            (course / path.name).write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    archive = bundle(tmp_path, wheel, "--exercises", str(course))
    assert archive.read("exercises/points.toml") == (ROOT / "exercises" / "points.toml").read_bytes()


def test_setup_installs_the_cpu_build_of_torch_alone_then_the_bundled_wheel_with_its_grading_extra():
    script = setup_script(Settings(WHEEL, "torch==2.13.0"))
    torch_line = next(line for line in script.splitlines() if '"torch==2.13.0"' in line)
    assert '--index-url "$TORCH_INDEX"' in torch_line
    assert 'TORCH_INDEX="${GRADCHECK_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"' in script
    assert f'"$SOURCE/{WHEEL}[grade]"' in script
    assert script.index('"torch==2.13.0"') < script.index(WHEEL)
    assert "set -euo pipefail" in script


@pytest.mark.parametrize(("minutes", "deadline"), [(10, 540), (40, 2340), (2.5, 90)])
def test_grading_stops_a_minute_under_the_assignments_limit(minutes, deadline):
    assert f"--deadline {deadline}\n" in run_autograder(Settings(WHEEL, "torch==2.13.0", minutes))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--limit", "45"], "--limit 45: Gradescope's timeout is 2 to 40 minutes"),
        (["--limit", "1"], "--limit 1: Gradescope's timeout is 2 to 40 minutes"),
        (["--exercises", "."], "not an exercises folder (it has no conftest.py)"),
    ],
)
def test_a_bundle_asked_wrongly_is_a_usage_error(tmp_path, wheel, capsys, options, message):
    out = tmp_path / "autograder.zip"
    assert main(["gradescope-bundle", str(out), "--wheel", str(wheel), *options]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_wheel_that_is_not_gradcheck_kits_is_refused(tmp_path, capsys):
    other = tmp_path / "numpy-2.0-py3-none-any.whl"
    other.write_bytes(b"")
    assert main(["gradescope-bundle", str(tmp_path / "a.zip"), "--wheel", str(other)]) == 2
    assert "not a gradcheck-kit wheel" in capsys.readouterr().err


def test_the_command_says_what_it_wrote_and_the_settings_to_choose(tmp_path, wheel, capsys):
    bundle(tmp_path, wheel, "--limit", "20")
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'autograder.zip'} (" in out and "  run_autograder\n" in out
    assert "memory:      2 GB" in out
    assert "timeout:     20 minutes (grading stops at 1140 s" in out


@pytest.mark.e2e
def test_run_autograder_grades_the_submission_into_a_valid_results_json(tmp_path, wheel):
    """The layout of /autograder, under AUTOGRADER_ROOT, with this interpreter's gradcheck-kit as the venv's."""
    bundle(tmp_path, wheel).extractall(tmp_path / "source")
    (tmp_path / "submission").mkdir()
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "gradcheck-kit").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m gradcheck_kit "$@"\n')
    (bin_dir / "gradcheck-kit").chmod(0o755)
    # An empty submission: every exercise not started, graded in seconds.
    done = subprocess.run(
        ["bash", str(tmp_path / "source" / "run_autograder")],
        env={**os.environ, "AUTOGRADER_ROOT": str(tmp_path)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert validate(results) == []
    assert results["score"] == 0 and results["extra_data"]["complete"] is True
    assert results["extra_data"]["total"] == 100


def test_a_points_file_that_cannot_be_applied_stops_the_bundle(tmp_path, wheel, capsys):
    course = tmp_path / "course"
    course.mkdir()
    for name in ("conftest.py", "test_ex2_cross_entropy.py"):
        (course / name).write_bytes((ROOT / "exercises" / name).read_bytes())
    (course / "points.toml").write_text("[ex2]\npoints = -3\n")
    assert main(["gradescope-bundle", str(tmp_path / "a.zip"), "--wheel", str(wheel), "--exercises", str(course)]) == 2
    assert "[ex2]: points must be a number of at least 0, got -3" in capsys.readouterr().err
