"""The class's gradebook: one CSV row per submission, rewritten whole after each one is graded.

A row holds the score, the points of each exercise, how grading ended (``graded``,
``incomplete`` when the submission's grading did not finish, ``error`` when it could
not be graded), the integrity report's flags, the seconds it took, where its
results.json is, and a fingerprint: a hash of the submission's files and of the
grader (gradcheck-kit's version, the exercises' tests and points, the options that
change a grade). A submission whose fingerprint matches its row's, and whose
results.json is still there, needs no grading again.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gradcheck_kit._version import __version__
from gradcheck_kit.autograder.classroom import Submission
from gradcheck_kit.autograder.results import format_points
from gradcheck_kit.course.catalogue import EXERCISES

__all__ = [
    "COLUMNS",
    "ERROR",
    "GRADED",
    "INCOMPLETE",
    "Gradebook",
    "error_row",
    "grader_fingerprint",
    "graded_row",
    "submission_fingerprint",
]

#: How a submission's grading ended.
GRADED, INCOMPLETE, ERROR = "graded", "incomplete", "error"
#: The gradebook's columns, in order.
COLUMNS = (
    "identifier", "student", "email", "score", "total", *EXERCISES,
    "status", "note", "integrity", "seconds", "results", "fingerprint",
)  # fmt: skip
# The files of the exercises folder that decide a grade; the students' stubs do not.
_GRADER_FILES = ("conftest.py", "points.toml", "hints.toml")


def submission_fingerprint(submission: Submission, grader: str) -> str:
    """A hash of every file of ``submission`` (names and contents, links not followed) and of ``grader``."""
    digest = hashlib.sha256(grader.encode())
    root = submission.root
    files = [root] if root.is_file() else sorted(_files(root))
    for path in files:
        digest.update(b"\0" + str(path.relative_to(root) if path != root else path.name).encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1024**2), b""):
                digest.update(chunk)
    return digest.hexdigest()[:32]


def _files(folder: Path) -> list[Path]:
    """Every regular file under ``folder``; links, to files or folders, are not followed."""
    out = []
    for top, _, names in os.walk(folder):
        out += [p for p in (Path(top, n) for n in names) if p.is_file() and not p.is_symlink()]
    return out


def grader_fingerprint(exercises: Path, options: Sequence[str]) -> str:
    """A hash of what decides a grade besides the submission: the version, the exercises' tests and points, options."""
    digest = hashlib.sha256(f"gradcheck-kit {__version__}\0{options!r}".encode())
    graded = sorted(p for p in exercises.iterdir() if p.name in _GRADER_FILES or p.name.startswith("test_"))
    for path in graded:
        digest.update(b"\0" + path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:32]


def graded_row(
    submission: Submission,
    data: Mapping[str, Any],
    *,
    seconds: float,
    results: str,
    fingerprint: str,
    note: str = "",
) -> dict[str, str]:
    """The row of a submission that was graded, from its results.json ``data``."""
    extra = data.get("extra_data", {})
    complete = bool(extra.get("complete"))
    points: dict[str, float] = {}
    for test in data.get("tests", []):
        for tag in test.get("tags", [])[:1]:
            points[tag] = points.get(tag, 0.0) + float(test.get("score", 0))
    reason = str(extra.get("reason") or "")
    return {
        **_who(submission),
        "score": format_points(float(data.get("score", 0))),
        "total": format_points(float(extra.get("total", 0) or 0)),
        **{key: format_points(points[key]) if key in points else "" for key in EXERCISES},
        "status": GRADED if complete else INCOMPLETE,
        "note": "; ".join(part for part in (note, reason) if part),
        "integrity": _integrity(extra.get("integrity")),
        "seconds": f"{seconds:.1f}",
        "results": results,
        "fingerprint": fingerprint,
    }


def error_row(submission: Submission, message: str, *, seconds: float, fingerprint: str) -> dict[str, str]:
    """The row of a submission that could not be graded, saying why."""
    row = dict.fromkeys(COLUMNS, "")
    row.update(_who(submission), status=ERROR, note=message, seconds=f"{seconds:.1f}", fingerprint=fingerprint)
    return row


def _who(submission: Submission) -> dict[str, str]:
    return {"identifier": submission.identifier, "student": submission.student, "email": submission.email}


def _integrity(report: Any) -> str:
    """The integrity report's flags as "category (count)", most frequent first; "" when nothing was flagged."""
    if not isinstance(report, Mapping):
        return ""
    categories = report.get("by_category") or {}
    return "; ".join(f"{category} ({count})" for category, count in categories.items())


class Gradebook:
    """The gradebook CSV at ``path``: its rows by identifier, in the order they were first written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, dict[str, str]] = {}

    @classmethod
    def load(cls, path: Path) -> Gradebook:
        """The gradebook at ``path``; empty when there is none yet.

        Raises:
            ValueError: when the file is not a gradebook (another CSV would be overwritten).
        """
        book = cls(path)
        if not path.exists():
            return book
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None:
                return book
            if "identifier" not in reader.fieldnames or "fingerprint" not in reader.fieldnames:
                raise ValueError(
                    f"{path} is not a gradcheck-kit gradebook (it has no identifier and fingerprint columns); "
                    "give another --gradebook path, or remove it"
                )
            for row in reader:
                book.rows[row["identifier"]] = {c: row.get(c) or "" for c in COLUMNS}
        return book

    def up_to_date(self, identifier: str, fingerprint: str, results_dir: Path) -> bool:
        """Whether ``identifier`` was graded (to the end or not) from the same files by the same grader."""
        row = self.rows.get(identifier)
        return (
            row is not None
            and row["fingerprint"] == fingerprint
            and row["status"] in (GRADED, INCOMPLETE)
            and (results_dir / row["results"]).is_file()
        )

    def put(self, row: Mapping[str, str]) -> None:
        """Set ``row`` and write the whole gradebook at once, so that it is never half written."""
        self.rows[row["identifier"]] = dict(row)
        self.save()

    def save(self) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows.values())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            tmp.write_text(text.getvalue(), encoding="utf-8")
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def select(self, identifiers: Iterable[str]) -> list[dict[str, str]]:
        """The rows of ``identifiers`` that the gradebook has, in that order."""
        return [self.rows[i] for i in identifiers if i in self.rows]
