"""The integrity report of a submission folder: each file's findings, their counts, as text and as data."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gradcheck_kit.autograder.integrity.rules import (
    FORBIDDEN,
    KNOWN_MODULES,
    PLANTED_FILES,
    SUSPICIOUS,
)
from gradcheck_kit.autograder.integrity.scan import Finding, SourceScan, scan_source

__all__ = ["FileScan", "IntegrityReport", "Reason", "scan_file", "scan_submission"]

#: Why a file was scanned: it is an exercise, an exercise imports it, or it lies in the folder to be run on its own.
Reason = Literal["exercise", "imported", "planted"]

# A module of this name in the submission folder is imported instead of the installed one.
_SHADOWABLE = KNOWN_MODULES | {"gradcheck_kit", "pytest", "_pytest", "pluggy", "hypothesis"}
# Modules of the submission that import one another are followed up to this many files.
_MAX_FILES = 64


@dataclass(frozen=True)
class FileScan:
    """The findings of one file, and why it was scanned: an ``exercise``, ``imported`` by one, or ``planted``."""

    file: str
    findings: tuple[Finding, ...]
    reason: Reason = "exercise"


@dataclass(frozen=True)
class IntegrityReport:
    """The findings of a submission folder, file by file, with their counts and a one-line summary."""

    folder: str
    files: tuple[FileScan, ...]
    missing: tuple[str, ...] = ()

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(finding for scan in self.files for finding in scan.findings)

    @property
    def by_category(self) -> dict[str, int]:
        """Findings per category, the most frequent first."""
        counts = Counter(finding.category for finding in self.findings)
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    @property
    def by_severity(self) -> dict[str, int]:
        counts = Counter(finding.severity for finding in self.findings)
        return {FORBIDDEN: counts[FORBIDDEN], SUSPICIOUS: counts[SUSPICIOUS]}

    @property
    def flagged_files(self) -> tuple[str, ...]:
        return tuple(scan.file for scan in self.files if scan.findings)

    def summary(self) -> str:
        """``integrity: 3 findings in 2 files (1 forbidden-api, 2 suspicious)``, or ``integrity: nothing flagged``."""
        findings, files = len(self.findings), len(self.flagged_files)
        if not findings:
            return "integrity: nothing flagged"
        severities = ", ".join(f"{count} {severity}" for severity, count in self.by_severity.items() if count)
        return (
            f"integrity: {findings} finding{'s' * (findings != 1)} in {files} file{'s' * (files != 1)} ({severities})"
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON: the instructor-only part of results.json."""
        return {
            "summary": self.summary(),
            "folder": self.folder,
            "missing": list(self.missing),
            "by_severity": self.by_severity,
            "by_category": self.by_category,
            "files": [
                {"file": scan.file, "reason": scan.reason, "findings": [finding.as_dict() for finding in scan.findings]}
                for scan in self.files
            ],
        }

    def to_text(self) -> str:
        """A table of the findings (file:line, severity, category, what), one a line, then the summary."""
        if not self.findings:
            return self.summary()
        from tabulate import tabulate

        # The code of each line is in as_dict(); the table stays one short line a finding.
        rows = [(finding.where, finding.severity, finding.category, finding.what) for finding in self.findings]
        table = tabulate(rows, headers=("where", "severity", "category", "what"), tablefmt="simple")
        return f"{table}\n{self.summary()}"


def scan_file(path: str | Path) -> list[Finding]:
    """The findings of one file, named by ``path`` as given; a file that does not parse is one finding."""
    path = Path(path)
    return list(_scan(path, str(path), _local_modules(path.parent)).findings)


def scan_submission(folder: str | Path, files: Iterable[str] | None = None) -> IntegrityReport:
    """Scan a submission folder: its exercise files, the folder's own modules they import, and planted files.

    Args:
        folder: the submission.
        files: the exercise files to scan, relative to ``folder``; the course's
            (``ex1_chunked_backward.py`` ... ``ex7_triton_kernels.py``) by default. Those not
            in the folder are listed as missing, not flagged.

    Returns:
        The report; findings are named by their path relative to ``folder``.
    """
    folder = Path(folder)
    exercises = tuple(files) if files is not None else _exercise_files()
    local = _local_modules(folder)
    scans: list[FileScan] = []
    missing: list[str] = []
    queue, seen = list(exercises), set()
    while queue and len(seen) < _MAX_FILES:
        name = queue.pop(0)
        if name in seen:
            continue
        seen.add(name)
        path = folder / name
        if not path.is_file():
            if name in exercises:
                missing.append(name)
            continue
        result = _scan(path, name, local)
        scans.append(FileScan(name, result.findings, "exercise" if name in exercises else "imported"))
        for module in result.local_imports:
            queue.extend(c for c in (f"{module}.py", f"{module}/__init__.py") if (folder / c).is_file())
    return IntegrityReport(str(folder), tuple(_planted(folder, local, scans)), tuple(missing))


def _scan(path: Path, name: str, local_modules: frozenset[str]) -> SourceScan:
    try:
        source = path.read_bytes()
    except OSError as error:
        what = f"could not be read, so nothing in it was scanned: {error.strerror or error}"
        return SourceScan((Finding(name, 1, 1, "", "unscannable", SUSPICIOUS, what),))
    return scan_source(source, name, local_modules)


def _local_modules(folder: Path) -> frozenset[str]:
    try:
        return frozenset({p.stem for p in folder.glob("*.py")} | {p.parent.name for p in folder.glob("*/__init__.py")})
    except OSError:
        return frozenset()


def _planted(folder: Path, local_modules: frozenset[str], scans: list[FileScan]) -> list[FileScan]:
    """The scans with files that run without being imported (conftest.py) or shadow an installed module (torch.py).

    A planted file already scanned (imported by an exercise) gets the finding added to its scan.
    """
    planted = {name: why for name, why in PLANTED_FILES.items() if (folder / name).is_file()}
    for module in sorted(local_modules & _SHADOWABLE):
        file = f"{module}.py" if (folder / f"{module}.py").is_file() else f"{module}/__init__.py"
        planted[file] = f"shadows the installed {module} for code run from this folder"
    by_file = {scan.file: scan for scan in scans}
    for name, why in sorted(planted.items()):
        # A conftest.py or sitecustomize.py runs on its own; a pytest config or a shadowing module may be a slip.
        severity = FORBIDDEN if name in PLANTED_FILES and name.endswith(".py") else SUSPICIOUS
        finding = Finding(name, 1, 1, "", "planted-file", severity, f"{name}: {why}")
        scanned = by_file.get(name)
        if scanned is not None:
            by_file[name] = FileScan(name, (finding, *scanned.findings), scanned.reason)
        else:
            inside = _scan(folder / name, name, local_modules).findings if name.endswith(".py") else ()
            by_file[name] = FileScan(name, (finding, *inside), "planted")
    return list(by_file.values())


def _exercise_files() -> tuple[str, ...]:
    from gradcheck_kit.course.catalogue import EXERCISES

    return tuple(exercise.file for exercise in EXERCISES.values())
