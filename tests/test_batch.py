"""Grading a class: finding the submissions, the gradebook, skipping what is unchanged, Ctrl-C, the summary.

Most tests grade with a stand-in for ``gradcheck-kit grade``: a small Python child that
writes a results.json from a file in the submission (or waits to be stopped), so that
the batch's own work (processes, rows, files, resuming) is tested in a second. One e2e
test grades real submissions with the real command.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from gradcheck_kit.autograder.archive import UnsafeArchive, unpack
from gradcheck_kit.autograder.batch import INTERRUPTED, ClassOptions, Job, grade_class
from gradcheck_kit.autograder.classroom import (
    NoSubmission,
    NotGradable,
    Submission,
    exercise_files,
    find_submissions,
    prepare,
)
from gradcheck_kit.autograder.gradebook import COLUMNS, Gradebook, error_row, graded_row
from gradcheck_kit.autograder.summary import histogram, mistakes_of, summary
from gradcheck_kit.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
EXERCISES = ROOT / "exercises"
NAMES = exercise_files(EXERCISES)
EX_FILES = ("ex1_chunked_backward.py", "ex2_cross_entropy.py", "ex3_batchnorm.py", "ex4_embedding.py")


def hand_in(folder: Path, *files: str, text: str = "# answer\n") -> Path:
    """A submission folder with ``files`` (paths relative to it) written."""
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


# -- finding submissions -------------------------------------------------------------------


def test_exercise_files_are_the_names_of_the_stubs_in_the_exercises_folder(tmp_path: Path):
    assert set(EX_FILES) <= NAMES and "conftest.py" not in NAMES
    assert exercise_files(tmp_path) == frozenset()


def test_files_in_nested_folders_are_one_submission_graded_where_they_lie(tmp_path: Path):
    student = hand_in(tmp_path / "sub", *(f"hw3/{f}" for f in EX_FILES))
    room = find_submissions([student], tmp_path / "scratch", NAMES)
    assert [(s.identifier, s.root) for s in room.submissions] == [("sub", student)]
    assert not room.class_given
    assert prepare(room.submissions[0], tmp_path / "scratch", NAMES) == (student / "hw3", "")


def test_files_spread_over_folders_are_gathered_into_one_folder(tmp_path: Path):
    student = hand_in(tmp_path / "sub", "part1/ex1_chunked_backward.py", "part2/ex2_cross_entropy.py")
    (room,) = find_submissions([student], tmp_path / "scratch", NAMES).submissions
    folder, note = prepare(room, tmp_path / "scratch", NAMES)
    assert sorted(p.name for p in folder.iterdir()) == ["ex1_chunked_backward.py", "ex2_cross_entropy.py"]
    assert folder.is_relative_to(tmp_path / "scratch")
    assert note == "exercise files gathered from part1, part2"


def test_the_file_nearest_the_top_counts_when_one_is_there_twice(tmp_path: Path):
    student = hand_in(tmp_path / "sub", "ex2_cross_entropy.py", "old/ex2_cross_entropy.py")
    (room,) = find_submissions([student], tmp_path / "scratch", NAMES).submissions
    assert prepare(room, tmp_path / "scratch", NAMES) == (student, "")


def test_a_folder_of_submission_folders_is_a_class(tmp_path: Path):
    hand_in(tmp_path / "class" / "alice", *EX_FILES)
    hand_in(tmp_path / "class" / "bob", *(f"sub/hw3/{f}" for f in EX_FILES[:2]))
    hand_in(tmp_path / "class", "notes/readme.txt")  # no work in it: not a submission
    room = find_submissions([tmp_path / "class"], tmp_path / "scratch", NAMES)
    assert room.class_given
    assert [s.identifier for s in room.submissions] == ["alice", "bob"]
    assert prepare(room.submissions[1], tmp_path / "scratch", NAMES)[0] == tmp_path / "class/bob/sub/hw3"


def test_a_path_with_no_exercise_files_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    hand_in(tmp_path / "empty", "notes/readme.txt")
    with pytest.raises(NoSubmission, match=r"no exercise files \(ex1_chunked_backward.py, .*\) nor notebooks"):
        find_submissions([tmp_path / "empty"], tmp_path / "scratch", NAMES)
    assert main(["grade", str(tmp_path / "empty")]) == 2
    assert "gradcheck-kit grade: error: " in capsys.readouterr().err


def test_a_class_member_with_no_work_is_a_row_that_says_why(tmp_path: Path):
    hand_in(tmp_path / "class" / "alice", *EX_FILES)
    hand_in(tmp_path / "class" / "bob", *EX_FILES)
    (tmp_path / "class" / "carol.zip").write_bytes(b"not a zip")
    room = find_submissions([tmp_path / "class"], tmp_path / "scratch", NAMES)
    carol = room.submissions[-1]
    assert carol.identifier == "carol" and "not a zip archive" in carol.problem
    with pytest.raises(NotGradable, match="not a zip archive"):
        prepare(carol, tmp_path / "scratch", NAMES)


def make_zip(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def test_a_zip_of_a_class_is_unpacked_and_read_like_a_folder(tmp_path: Path):
    members = {f"{who}/hw/{f}": b"# answer\n" for who in ("alice", "bob") for f in EX_FILES}
    archive = make_zip(tmp_path / "export.zip", members)
    room = find_submissions([archive], tmp_path / "scratch", NAMES)
    assert [s.identifier for s in room.submissions] == ["alice", "bob"]
    assert all(s.root.is_relative_to(tmp_path / "scratch") for s in room.submissions)


@pytest.mark.parametrize(
    ("members", "links", "said"),
    [
        ({"../evil.py": b"x"}, {}, "leads out of its folder"),
        ({"/etc/evil.py": b"x"}, {}, "is an absolute path"),
        ({"C:/evil.py": b"x"}, {}, "is an absolute path"),
        ({"a/ex2_cross_entropy.py": b"x"}, {"a/link.py": "/etc/passwd"}, "is a symbolic link"),
    ],
    ids=["dotdot", "absolute", "drive", "symlink"],
)
def test_a_zip_with_a_member_that_leaves_its_folder_is_refused_whole(
    tmp_path: Path, members: dict[str, bytes], links: dict[str, str], said: str
):
    archive = make_zip(tmp_path / "bad.zip", members, links)
    with pytest.raises(UnsafeArchive, match=said):
        unpack(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.py").exists()


def test_a_zip_that_unpacks_past_the_cap_is_refused_and_nothing_is_left(tmp_path: Path):
    archive = make_zip(tmp_path / "big.zip", {"a/ex2_cross_entropy.py": b"0" * 5000, "b/x.py": b"0" * 5000})
    with pytest.raises(UnsafeArchive, match="unpacks to more than"):
        unpack(archive, tmp_path / "out", max_bytes=8000)
    assert not (tmp_path / "out").exists()


def test_a_bad_zip_given_on_the_command_line_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    archive = make_zip(tmp_path / "bad.zip", {"../evil.py": b"x"})
    assert main(["grade", str(archive)]) == 2
    assert "member '../evil.py' leads out of its folder (..); refusing to unpack it" in capsys.readouterr().err


def gradescope_export(folder: Path) -> Path:
    hand_in(folder / "submission_101", *EX_FILES)
    hand_in(folder / "submission_102", *(f"hw3/{f}" for f in EX_FILES))
    (folder / "submission_metadata.yml").write_text(METADATA)
    return folder


# As Gradescope writes it (keys are Ruby symbols), in the flow style that JSON shares with YAML.
METADATA = json.dumps(
    {
        "submission_101": {":submitters": [{":name": "Ada Lovelace", ":sid": "1", ":email": "ada@uni.edu"}]},
        "submission_102": {
            ":submitters": [
                {":name": "Alan Turing", ":email": "alan@uni.edu"},
                {":name": "Grace Hopper", ":email": "grace@uni.edu"},
            ]
        },
    }
)


def test_a_gradescope_export_names_each_submission_by_its_students(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # PyYAML is not a dependency: the metadata is written here in YAML's flow style, which JSON reads alike.
    yaml = pytest.importorskip("yaml") if _has("yaml") else _JsonYaml()
    monkeypatch.setitem(sys.modules, "yaml", yaml)
    room = find_submissions([gradescope_export(tmp_path / "export")], tmp_path / "scratch", NAMES)
    assert room.class_given and room.notes == []
    assert [(s.identifier, s.student, s.email) for s in room.submissions] == [
        ("submission_101", "Ada Lovelace", "ada@uni.edu"),
        ("submission_102", "Alan Turing; Grace Hopper", "alan@uni.edu; grace@uni.edu"),
    ]


def test_without_pyyaml_an_export_is_named_by_folder_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml fails
    room = find_submissions([gradescope_export(tmp_path / "export")], tmp_path / "scratch", NAMES)
    assert [(s.identifier, s.student) for s in room.submissions] == [("submission_101", ""), ("submission_102", "")]
    assert "PyYAML is not installed, so rows are named by submission folder" in room.notes[0]


class _JsonYaml:
    class YAMLError(Exception):
        pass

    @staticmethod
    def safe_load(text: str) -> object:
        return json.loads(text)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_a_notebook_is_handed_to_the_notebook_intake(tmp_path: Path):
    notebook = tmp_path / "alice.ipynb"
    notebook.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []}))
    (room,) = find_submissions([notebook], tmp_path / "scratch", NAMES).submissions
    assert (room.identifier, room.root) == ("alice", notebook)
    # The intake reads it, and says why it holds no answer.
    with pytest.raises(NotGradable, match="alice.ipynb: no cell assigns the gradients"):
        prepare(room, tmp_path / "scratch", NAMES)


def test_a_notebook_without_the_intake_installed_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "gradcheck_kit.autograder.notebook", None)
    hand_in(tmp_path / "bob", "work/hw.ipynb")
    (room,) = find_submissions([tmp_path / "bob"], tmp_path / "scratch", NAMES).submissions
    with pytest.raises(NotGradable, match="notebook intake not available: hw.ipynb was not graded"):
        prepare(room, tmp_path / "scratch", NAMES)


# -- the gradebook ---------------------------------------------------------------------------


def results(score: float, total: float = 10, *, complete: bool = True, tests: list | None = None) -> dict:
    """A results.json as the grade command writes it, with one test per exercise given."""
    return {
        "score": score,
        "extra_data": {"complete": complete, "reason": "" if complete else "it was stopped", "total": total},
        "tests": tests
        if tests is not None
        else [{"score": score, "max_score": total, "tags": ["ex2"], "status": "passed", "extra_data": {}}],
    }


def test_a_graded_row_has_the_score_each_exercise_the_flags_and_where_the_results_are():
    data = results(7.5, tests=[
        {"score": 6, "max_score": 6, "tags": ["ex2"], "status": "passed"},
        {"score": 1.5, "max_score": 2, "tags": ["ex2"], "status": "failed"},
        {"score": 0, "max_score": 10, "tags": ["ex3"], "status": "failed"},
    ])  # fmt: skip
    data["extra_data"]["integrity"] = {"by_category": {"processes": 2, "network": 1}}
    who = Submission("s1", Path("/x"), "Ada", "ada@uni.edu")
    row = graded_row(who, data, seconds=9.04, results="s1.json", fingerprint="f", note="gathered")
    assert list(row) == list(COLUMNS)
    assert row["identifier"] == "s1" and row["student"] == "Ada" and row["email"] == "ada@uni.edu"
    assert (row["score"], row["total"], row["ex2"], row["ex3"], row["ex1"]) == ("7.5", "10", "7.5", "0", "")
    assert (row["status"], row["note"], row["integrity"]) == ("graded", "gathered", "processes (2); network (1)")
    assert (row["seconds"], row["results"], row["fingerprint"]) == ("9.0", "s1.json", "f")
    stopped = graded_row(who, results(3, complete=False), seconds=1, results="s1.json", fingerprint="f")
    assert (stopped["status"], stopped["note"]) == ("incomplete", "it was stopped")


def test_the_gradebook_is_a_csv_read_back_as_written_and_another_csv_is_not_overwritten(tmp_path: Path):
    book = Gradebook(tmp_path / "gradebook.csv")
    book.put(graded_row(Submission("a", tmp_path), results(10), seconds=1, results="a.json", fingerprint="1"))
    book.put(error_row(Submission("b, the second", tmp_path), "no exercise files", seconds=0, fingerprint="2"))
    rows = list(csv.DictReader(io.StringIO((tmp_path / "gradebook.csv").read_text())))
    assert [(r["identifier"], r["score"], r["status"], r["note"]) for r in rows] == [
        ("a", "10", "graded", ""),
        ("b, the second", "", "error", "no exercise files"),
    ]
    assert Gradebook.load(tmp_path / "gradebook.csv").rows == book.rows
    (tmp_path / "marks.csv").write_text("name,mark\nada,3\n")
    with pytest.raises(ValueError, match="is not a gradcheck-kit gradebook"):
        Gradebook.load(tmp_path / "marks.csv")


# -- grading a class, with a stand-in for the grade command --------------------------------

# argv: the folder, the results.json to write. The last word of the folder's ex2_cross_entropy.py is the
# score to write; a file "wait" makes it wait until it is stopped; it leaves its pid beside the results.
FAKE_GRADER = """
import json, os, pathlib, sys, time
folder, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
out.with_name(folder.name + ".pid").write_text(str(os.getpid()))
while (folder / "wait").exists():
    time.sleep(0.05)
score = float((folder / "ex2_cross_entropy.py").read_text().split()[-1])
test = {"score": score, "max_score": 10, "tags": ["ex2"], "status": "passed" if score == 10 else "failed",
        "output": "", "extra_data": {"outcome": "passed" if score == 10 else "failed", "rows": [
            {"name": "logits", "kind": "gradient", "verdict": "wrong", "diagnosis": {"detected": "off by 1/n"}}
        ] if score < 10 else []}}
out.write_text(json.dumps({"score": score, "extra_data": {"complete": True, "total": 10}, "tests": [test]}))
"""


def fake_command(job: Job) -> list[str]:
    return [sys.executable, "-c", FAKE_GRADER, str(job.folder), str(job.partial)]


def student(folder: Path, score: float, *, wait: bool = False) -> Path:
    hand_in(folder, "ex2_cross_entropy.py", text=f"# score {score:g}\n")
    if wait:
        (folder / "wait").write_text("")
    return folder


def options(tmp_path: Path, **changes) -> ClassOptions:
    base = ClassOptions(exercises=EXERCISES, gradebook=tmp_path / "gradebook.csv", out=tmp_path / "results", jobs=2)
    return ClassOptions(**{**base.__dict__, **changes})


def grade(tmp_path: Path, **changes) -> tuple[int, str, Gradebook]:
    room = find_submissions([tmp_path / "class"], tmp_path / "scratch", NAMES)
    out = io.StringIO()
    code = grade_class(room, options(tmp_path, **changes), tmp_path / "scratch", command=fake_command, stream=out)
    return code, out.getvalue(), Gradebook.load(tmp_path / "gradebook.csv")


def test_a_class_is_graded_into_a_gradebook_with_a_results_file_each(tmp_path: Path):
    for name, score in (("alice", 10), ("bob", 4), ("carol", 7)):
        student(tmp_path / "class" / name, score)
    hand_in(tmp_path / "class" / "dave", "hw.ipynb")  # the notebook intake finds no answer in it
    code, out, book = grade(tmp_path)
    assert code == 1  # dave could not be graded
    assert {i: (r["score"], r["status"]) for i, r in book.rows.items()} == {
        "alice": ("10", "graded"), "bob": ("4", "graded"), "carol": ("7", "graded"), "dave": ("", "error"),
    }  # fmt: skip
    assert "hw.ipynb" in book.rows["dave"]["note"]
    assert sorted(p.name for p in (tmp_path / "results").iterdir() if p.suffix == ".json") == [
        "alice.json", "bob.json", "carol.json",
    ]  # fmt: skip
    assert json.loads((tmp_path / "results" / "bob.json").read_text())["score"] == 4
    assert not list((tmp_path / "results").glob(".*"))  # no partial file is left
    assert "4 submissions: 4 to grade, 2 at a time" in out
    assert "dave: could not be graded:" in out


def test_unchanged_submissions_are_skipped_changed_ones_regraded_and_force_regrades_all(tmp_path: Path):
    for name, score in (("alice", 10), ("bob", 4)):
        student(tmp_path / "class" / name, score)
    assert grade(tmp_path)[0] == 0
    code, out, book = grade(tmp_path)
    assert code == 0 and "2 submissions: 0 to grade" in out and "2 unchanged since they were graded, skipped" in out
    assert book.rows["bob"]["score"] == "4"
    student(tmp_path / "class" / "bob", 6)
    code, out, book = grade(tmp_path)
    assert "2 submissions: 1 to grade" in out and "bob: 6 / 10" in out and "alice:" not in out.split("at a time")[1]
    assert book.rows["bob"]["score"] == "6"
    code, out, _ = grade(tmp_path, force=True)
    assert "2 submissions: 2 to grade" in out
    # A submission whose results.json is gone is graded again.
    (tmp_path / "results" / "alice.json").unlink()
    assert "1 to grade" in grade(tmp_path)[1]


def test_another_grader_version_or_option_grades_again(tmp_path: Path):
    student(tmp_path / "class" / "alice", 10)
    student(tmp_path / "class" / "bob", 10)
    grade(tmp_path)
    assert "2 to grade" in grade(tmp_path, pytest_args=("-k", "ex2"))[1]
    assert "0 to grade" in grade(tmp_path, pytest_args=("-k", "ex2"))[1]
    assert "2 to grade" in grade(tmp_path, grade_options=("--timeout", "5"))[1]


@pytest.mark.parametrize(
    ("sig", "sigint_ignored"), [(signal.SIGINT, False), (signal.SIGTERM, True)], ids=["ctrl-c", "sigterm-in-background"]
)
def test_ctrl_c_keeps_every_finished_row_and_a_rerun_grades_the_rest(
    tmp_path: Path, ends_within, sig: int, sigint_ignored: bool
):
    # A shell starts a background command with SIGINT ignored; SIGTERM stops it the same way, children included.
    for name in ("alice", "bob"):
        student(tmp_path / "class" / name, 10)
    for name in ("carol", "dave"):
        student(tmp_path / "class" / name, 5, wait=True)
    finished = threading.Event()

    def interrupt_when_two_rows_are_written() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not finished.is_set():
            book = tmp_path / "gradebook.csv"
            if book.exists() and book.read_text().count("\n") >= 3:  # the header and two rows
                os.kill(os.getpid(), sig)
                return
            time.sleep(0.05)

    presser = threading.Thread(target=interrupt_when_two_rows_are_written)
    before = signal.signal(signal.SIGINT, signal.SIG_IGN if sigint_ignored else signal.default_int_handler)
    presser.start()
    try:
        code, out, book = grade(tmp_path, jobs=3)
    finally:
        finished.set()
        presser.join()
        signal.signal(signal.SIGINT, before)
    assert code == INTERRUPTED
    assert sorted(book.rows) == ["alice", "bob"]
    assert "Interrupted: 2 submissions were not graded" in out
    for name in ("carol", "dave"):
        pid_file = tmp_path / "results" / f"{name}.pid"
        if pid_file.exists():  # dave may not have started: 3 at a time
            assert ends_within(int(pid_file.read_text()), 10)
    assert not list((tmp_path / "results").glob(".*partial"))
    for name in ("carol", "dave"):
        (tmp_path / "class" / name / "wait").unlink()
    code, out, book = grade(tmp_path)
    assert code == 0 and "4 submissions: 2 to grade" in out
    assert {i: r["score"] for i, r in book.rows.items()} == {"alice": "10", "bob": "10", "carol": "5", "dave": "5"}


# -- the summary ------------------------------------------------------------------------------


def row(identifier: str, score: float, total: float = 100, seconds: float = 1.0, status: str = "graded") -> dict:
    return {
        **dict.fromkeys(COLUMNS, ""),
        "identifier": identifier, "score": f"{score:g}", "total": f"{total:g}", "status": status,
        "seconds": f"{seconds:.1f}", "results": f"{identifier}.json",
    }  # fmt: skip


def test_the_histogram_bins_scores_by_tenths_of_the_total():
    lines = histogram([row("a", 5), row("b", 95), row("c", 100), row("d", 58)])
    assert lines[0].split() == ["[0,", "10)", "1", "#" * 20]
    assert lines[5].split() == ["[50,", "60)", "1", "#" * 20]
    assert lines[9].split() == ["[90,", "100]", "2", "#" * 40]
    assert [line.split()[2] for line in lines[:10]] == ["1", "0", "0", "0", "0", "1", "0", "0", "0", "2"]
    assert lines[10] == "  mean 64.5, median 76.5"
    # Totals that do not split into ten whole bins, or differ, are binned by percentage.
    assert histogram([row("a", 2, total=8), row("b", 8, total=8)])[2].split()[:3] == ["[20%,", "30%)", "1"]


def wrong_gradient(tag: str, name: str, detected: str | None, problem: str = "mismatch", message: str = "") -> dict:
    diagnosis = {"detected": detected, "evidence": "every element is 32 times the right value"} if detected else None
    gradient = {
        "name": name, "kind": "gradient", "verdict": "wrong", "problem": problem, "message": message,
        "diagnosis": diagnosis,
    }  # fmt: skip
    return {"tags": [tag], "status": "failed", "score": 0, "extra_data": {"outcome": "failed", "rows": [gradient]}}


AUTOGRAD = "```\nexercise 4: embedding backward [cpu]:\n  dC: ERROR: manual backward must not use autograd\n```"


def test_mistakes_are_what_the_diagnoses_detected_once_per_submission():
    shape = "Shape mismatch: got (32,) where (32, 64) is expected\n..."
    data = {
        "tests": [
            wrong_gradient("ex2", "logits", "off by a constant factor of n = 32"),
            wrong_gradient("ex2", "logits", "off by a constant factor of n = 32"),  # the other shapes
            wrong_gradient("ex1", "counts", None),
            wrong_gradient("ex3", "hprebn", None, "shape", shape),
            {"tags": ["ex4"], "status": "failed", "output": AUTOGRAD, "extra_data": {"outcome": "failed", "rows": []}},
            {"tags": ["ex5"], "status": "failed", "output": "x",
             "extra_data": {"outcome": "failed", "verdict": "not started", "rows": []}},
            {"tags": ["ex6"], "status": "failed", "output": "x", "extra_data": {"outcome": "skipped", "rows": []}},
        ]
    }  # fmt: skip
    assert mistakes_of(data) == {
        "ex1": {"dcounts: no specific mistake recognised"},
        "ex2": {"dlogits: off by a constant factor of n = 32"},
        "ex3": {"dhprebn: Shape mismatch: got (32,) where (32, 64) is expected"},
        "ex4": {"dC: ERROR: manual backward must not use autograd"},
        "ex5": set(),
    }


def test_the_summary_counts_statuses_and_lists_the_commonest_mistakes_and_the_slowest(tmp_path: Path):
    rows = [row("a", 100, seconds=3), row("b", 92, seconds=12.5), row("c", 92, seconds=7)]
    rows.append({**row("d", 0), "status": "error", "note": "no exercise files", "score": "", "total": ""})
    for identifier in ("b", "c"):
        data = {"tests": [wrong_gradient("ex2", "logits", "off by a constant factor of n = 32")]}
        if identifier == "c":
            data["tests"].append(wrong_gradient("ex3", "hprebn", "the biased variance"))
        (tmp_path / f"{identifier}.json").write_text(json.dumps(data))
    (tmp_path / "a.json").write_text(json.dumps({"tests": []}))
    text = "\n".join(summary(rows, tmp_path, slowest=2))
    assert "4 submissions: 3 graded, 1 could not be graded" in text
    assert "  exercise 2: cross-entropy backward:\n       2  dlogits: off by a constant factor of n = 32" in text
    assert "  exercise 3: batchnorm backward:\n       1  dhprebn: the biased variance" in text
    assert "slowest submissions:\n     12.5 s  b\n      7.0 s  c\n" in text
    assert "could not be graded:\n  d: no exercise files" in text


# -- the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["grade", "DIR", "--gradescope", "X", "--", "-k", "ex2"],
        ["grade", "--gradescope", "X", "DIR", "--", "-k", "ex2"],
        ["grade", "DIR", "--", "-k", "ex2", "--gradescope", "X"],
    ],
    ids=["options-after-the-folder", "options-before", "grade-option-after-dashes"],
)
def test_options_and_pytest_args_come_in_any_order_around_the_folder(argv: list[str]):
    args = build_parser().parse_args(argv)
    assert args.submissions == ["DIR"]
    if argv[-1] == "X":
        assert args.pytest_args == ["-k", "ex2", "--gradescope", "X"]  # after -- everything is pytest's
    else:
        assert (args.gradescope, args.pytest_args) == ("X", ["-k", "ex2"])


def test_a_command_with_every_word_after_dashes_asks_for_the_folder_before_them(capsys: pytest.CaptureFixture[str]):
    assert main(["grade", "--", "-k", "ex2", "DIR"]) == 2
    assert "before --: everything after -- goes to pytest" in capsys.readouterr().err


def test_gradescope_is_refused_for_a_class_and_points_to_the_gradebook(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    hand_in(tmp_path / "a", *EX_FILES)
    hand_in(tmp_path / "b", *EX_FILES)
    assert main(["grade", str(tmp_path / "a"), str(tmp_path / "b"), "--gradescope", str(tmp_path / "r.json")]) == 2
    assert "use --gradebook FILE.csv" in capsys.readouterr().err


def test_a_shared_sandbox_user_refuses_parallel_grading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    if os.geteuid() != 0:
        pytest.skip("only a grader that runs as root switches users")
    monkeypatch.setenv("GRADCHECK_SANDBOX_USER", "nobody")
    hand_in(tmp_path / "a", *EX_FILES)
    hand_in(tmp_path / "b", *EX_FILES)
    assert main(["grade", str(tmp_path / "a"), str(tmp_path / "b"), "-j", "2", "--out", str(tmp_path / "o")]) == 2
    assert "grade with -j 1, or unset GRADCHECK_SANDBOX_USER" in capsys.readouterr().err


# -- end to end ------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_three_submissions_are_graded_in_parallel_with_a_pytest_selection(tmp_path: Path):
    solutions = ROOT / "solutions"
    right = shutil.copytree(solutions, tmp_path / "class" / "right")
    nested = tmp_path / "class" / "nested" / "sub" / "hw3"
    shutil.copytree(solutions, nested)
    wrong = shutil.copytree(solutions, tmp_path / "class" / "wrong")
    shutil.copy(ROOT / "tests" / "catalogue" / "ex2_missing_1_over_n" / "ex2_cross_entropy.py", wrong)
    gradebook = tmp_path / "marks" / "gradebook.csv"
    command = [
        sys.executable, "-m", "gradcheck_kit", "grade", "-j", "3", str(tmp_path / "class"),
        "--gradebook", str(gradebook), "--device", "cpu", "--", "-k", "ex2 and notebook_shapes",
    ]  # fmt: skip
    process = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert process.returncode == 0, process.stdout + process.stderr
    rows = {r["identifier"]: r for r in csv.DictReader(gradebook.open())}
    assert {i: (r["score"], r["total"], r["ex2"], r["status"]) for i, r in rows.items()} == {
        "nested": ("6", "6", "6", "graded"), "right": ("6", "6", "6", "graded"), "wrong": ("0", "6", "0", "graded"),
    }  # fmt: skip
    graded_in = {
        name: json.loads((gradebook.parent / "results" / f"{name}.json").read_text())["extra_data"]["implementation"]
        for name in rows
    }
    assert graded_in == {"right": str(right), "nested": str(nested), "wrong": str(wrong)}
    assert "1  dlogits: off by a constant factor of n = 32" in process.stdout
