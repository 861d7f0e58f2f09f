"""The integrity report: what cannot be stopped inside the student's process, flagged for the instructor.

The guard around a submission turns autograd off in the worker that runs it; it
cannot stop code that starts a thread or a process, reaches torch's internals,
walks the interpreter, or takes finite differences. Those are read, not run: each
exercise file is parsed with ``ast`` and every use of such an API is listed with
its file, line, code, category and severity (``forbidden-api``: no honest use;
``suspicious``: worth a look). Nothing of the submission is imported or executed,
and the scan imports neither torch nor the grader.

A Triton kernel file (exercise 7) is scanned like any other: ``triton`` is a
module of the course, so importing and using it is not a finding, and reading
Triton's own settings (``os.environ.get("TRITON_INTERPRET")``) is not either.

From a terminal, without grading: ``python -m gradcheck_kit.autograder.integrity FOLDER``.

The package is layered: ``rules`` (what is flagged, as data) and ``names`` (what a
file's names stand for) import nothing of it; ``patterns`` (finite differences,
endless loops) uses ``names``; ``scan`` (one file) uses all three; ``report`` (a
folder) uses ``scan``; ``command`` prints a report.
"""

from __future__ import annotations

from gradcheck_kit.autograder.integrity.report import FileScan, IntegrityReport, scan_file, scan_submission
from gradcheck_kit.autograder.integrity.rules import CATEGORIES, FORBIDDEN, SUSPICIOUS, Severity
from gradcheck_kit.autograder.integrity.scan import Finding, scan_source

__all__ = [
    "CATEGORIES",
    "FORBIDDEN",
    "SUSPICIOUS",
    "FileScan",
    "Finding",
    "IntegrityReport",
    "Severity",
    "scan_file",
    "scan_source",
    "scan_submission",
]
