"""Which submissions the paths given to ``gradcheck-kit grade`` hold, and the folder each is graded in.

A path is one submission or a class of them:

- a folder that holds exercise files (``ex2_cross_entropy.py``, ...) at its top is one
  submission; so is a folder whose exercise files lie deeper (``sub/hw3/*.py``), as long
  as they are one set: no exercise file is in it twice, in two of its subfolders;
- a folder whose subfolders (or ``.zip`` / ``.ipynb`` files) each hold a submission is a
  class, one submission per subfolder; Gradescope's "Download all submissions" export
  (``submission_NNNN/`` folders beside ``submission_metadata.yml``) always is, and the
  students' names come from its metadata;
- a ``.zip`` is unpacked safely (:mod:`gradcheck_kit.autograder.archive`) into a scratch
  folder and read the same way; a ``.ipynb`` is one submission, turned into exercise files
  by the notebook intake when it is installed.

:func:`prepare` finds a submission's exercise files by name, at any depth, and gives the
folder to grade: the one they lie in, or a scratch folder they are copied to when they
lie in several.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gradcheck_kit.autograder.archive import UnsafeArchive, unpack
from gradcheck_kit.course.catalogue import EXERCISES

__all__ = [
    "GRADESCOPE_METADATA",
    "Classroom",
    "NoSubmission",
    "NotGradable",
    "Submission",
    "exercise_files",
    "find_submissions",
    "prepare",
]

#: The file of Gradescope's "Download all submissions" export that maps submission folders to students.
GRADESCOPE_METADATA = "submission_metadata.yml"
# Folders that are never a student's work: editors', archivers' and Python's own.
_IGNORED_DIRS = {"__MACOSX", "__pycache__", ".ipynb_checkpoints", ".git", ".venv", "node_modules"}
# Zips inside zips are unpacked this deep (a class zip of students' zips), no deeper.
_ZIP_DEPTH = 2


class NoSubmission(ValueError):
    """A path given holds no submission; the message says what was looked for and where."""


class NotGradable(ValueError):
    """A submission that cannot be graded as it is (two notebooks, no intake); the message says why."""


@dataclass(frozen=True)
class Submission:
    """One student's submission.

    Attributes:
        identifier: its name in the gradebook and the name of its results file, unique in the class.
        root: the folder it is, or its notebook file.
        student: the students' names, when an export's metadata gives them.
        email: their e-mail addresses, likewise.
        problem: why it cannot be graded (a zip of a class that cannot be unpacked); "" when it can.
    """

    identifier: str
    root: Path
    student: str = ""
    email: str = ""
    problem: str = ""

    @property
    def label(self) -> str:
        """How the terminal names it: the student, and the identifier."""
        return f"{self.identifier} ({self.student})" if self.student else self.identifier


@dataclass
class Classroom:
    """The submissions found in the paths given, in order, and notes on how they were found.

    Attributes:
        class_given: whether a path was a class (several submissions, or an export), not one submission.
    """

    submissions: list[Submission] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    class_given: bool = False


def exercise_files(exercises: Path) -> frozenset[str]:
    """The names of the files a student hands in: the course's exercise files of which ``exercises`` has a stub.

    Empty for an exercises folder with no stubs (a course of other tests): its
    submissions are then taken as given, one per path, and never searched.
    """
    return frozenset(e.file for e in EXERCISES.values() if (exercises / e.file).is_file())


def find_submissions(paths: Sequence[str | Path], scratch: Path, names: frozenset[str]) -> Classroom:
    """The submissions in ``paths``; zips are unpacked under ``scratch``.

    Args:
        names: the exercise files' names (:func:`exercise_files`).

    Raises:
        NoSubmission: when a path does not exist or holds no exercise file nor notebook.
        UnsafeArchive: when a zip cannot be unpacked safely.
    """
    room = Classroom()
    found: list[Submission] = []
    for given in paths:
        path = Path(given).expanduser().resolve()
        if not path.exists():
            raise NoSubmission(f"{given}: no such folder or file")
        if not names and path.is_dir():
            found.append(Submission(path.name, path))
            continue
        found += _submissions_in(path, path.stem if path.is_file() else path.name, _Search(scratch, room, names))
    room.submissions = _unique(found)
    return room


@dataclass(frozen=True)
class _Search:
    """What a search for submissions needs at every level: where zips go, what it notes, the file names."""

    scratch: Path
    room: Classroom
    names: frozenset[str]
    depth: int = 0

    def deeper(self) -> _Search:
        return _Search(self.scratch, self.room, self.names, self.depth + 1)


def _submissions_in(path: Path, name: str, search: _Search) -> list[Submission]:
    if path.is_file():
        if path.suffix == ".ipynb":
            return [Submission(name, path)]
        if path.suffix == ".zip":
            if search.depth >= _ZIP_DEPTH:
                raise NoSubmission(f"{path}: a zip inside a zip inside a zip; unpack it first")
            folder = unpack(path, _fresh(search.scratch, name))
            return _submissions_in(folder, name, search.deeper())
        raise NoSubmission(f"{path}: not a folder, a .zip or a .ipynb; give the submission's folder")
    if any((path / f).is_file() for f in search.names):
        return [Submission(name, path)]
    students = _gradescope_names(path, search.room)
    entries = [e for e in _children(path) if e.is_file() or _holds_work(e, search.names)]
    if not entries:
        raise NoSubmission(
            f"{path}: no exercise files ({_listed(search.names)}) nor notebooks in it or its "
            "subfolders; give the folder of a submission, or of a class of them"
        )
    folders = [e for e in entries if e.is_dir()]
    lone_notebook = len(entries) == 1 and entries[0].suffix == ".ipynb"
    one_set = len(folders) == len(entries) and not _separate_sets(folders, search.names)
    if students is None and (lone_notebook or one_set):
        return [Submission(name, path)]  # one submission: its notebook, or its files in subfolders
    search.room.class_given = True
    out = []
    for entry in entries:
        who = (students or {}).get(entry.name, ("", ""))
        own = entry.stem if entry.is_file() else entry.name
        try:
            inner = _submissions_in(entry, own, search)
        except (NoSubmission, UnsafeArchive) as exc:
            # One student's broken upload is that student's row, not the end of the class's grading.
            out.append(Submission(own, entry, *who, problem=str(exc)))
            continue
        if len(inner) == 1:
            out.append(Submission(own, inner[0].root, *who, problem=inner[0].problem))
        else:
            out += [Submission(f"{own}-{s.identifier}", s.root, s.student, s.email, s.problem) for s in inner]
    return out


def _children(folder: Path) -> list[Path]:
    """The subfolders, zips and notebooks directly in ``folder``, by name."""
    out = []
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink() or entry.name.startswith(".") or entry.name in _IGNORED_DIRS:
            continue
        if entry.is_dir() or (entry.is_file() and entry.suffix in (".zip", ".ipynb")):
            out.append(entry)
    return out


def _holds_work(folder: Path, names: frozenset[str]) -> bool:
    return any(p.name in names or p.suffix == ".ipynb" for p in _walk(folder))


def _listed(names: frozenset[str]) -> str:
    return ", ".join(sorted(names)[:2]) + ", ..."


def _separate_sets(folders: Sequence[Path], names: frozenset[str]) -> bool:
    """Whether the subfolders are several students' sets: an exercise file in two, or one with only a notebook."""
    seen: set[str] = set()
    notebooks = 0
    for folder in folders:
        files = {p.name for p in _walk(folder) if p.name in names}
        if files & seen:
            return True
        seen |= files
        notebooks += not files
    return len(folders) > 1 and notebooks > 0


def _walk(folder: Path) -> Iterator[Path]:
    """The regular files under ``folder``, not following links, leaving out editors' and archivers' folders."""
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in _IGNORED_DIRS and not d.startswith("."))
        for name in sorted(files):
            path = Path(top, name)
            if not path.is_symlink():
                yield path


def _gradescope_names(folder: Path, room: Classroom) -> dict[str, tuple[str, str]] | None:
    """Submission folder -> (students' names, e-mails) from an export's metadata; None when it is not an export."""
    metadata = folder / GRADESCOPE_METADATA
    if not metadata.is_file():
        return None
    # PyYAML is not a dependency of gradcheck-kit: without it the export is still read, and its
    # rows are named by folder only.
    try:
        import yaml
    except ImportError:
        room.notes.append(
            f"{metadata}: PyYAML is not installed, so rows are named by submission folder, "
            "not by student (pip install pyyaml to read the names)"
        )
        return {}
    try:
        data = yaml.safe_load(metadata.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        room.notes.append(f"{metadata}: could not be read ({exc}); rows are named by submission folder")
        return {}
    names: dict[str, tuple[str, str]] = {}
    for key, entry in (data or {}).items() if isinstance(data, dict) else ():
        submitters = _field(entry, "submitters") if isinstance(entry, dict) else None
        people = [p for p in submitters or () if isinstance(p, dict)]
        names[str(key)] = (
            "; ".join(str(_field(p, "name") or "") for p in people),
            "; ".join(str(_field(p, "email") or "") for p in people),
        )
    return names


def _field(entry: dict, key: str) -> object:
    # Gradescope writes Ruby symbols: ":submitters:", which YAML reads as the key ":submitters".
    return entry.get(f":{key}", entry.get(key))


def _unique(submissions: Iterable[Submission]) -> list[Submission]:
    """The submissions with identifiers made safe as file names and unique (``alice``, ``alice-2``)."""
    out: list[Submission] = []
    taken: set[str] = set()
    for s in submissions:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", s.identifier).strip("._") or "submission"
        identifier, n = base, 1
        while identifier.lower() in taken:
            n += 1
            identifier = f"{base}-{n}"
        taken.add(identifier.lower())
        out.append(Submission(identifier, s.root, s.student, s.email, s.problem))
    return out


def _fresh(scratch: Path, name: str) -> Path:
    """A new folder under ``scratch`` for ``name``."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "archive"
    for n in range(1, 10_000):
        folder = scratch / (base if n == 1 else f"{base}-{n}")
        if not folder.exists():
            return folder
    raise FileExistsError(f"{scratch}: no free folder name for {name}")


# ------------------------------------------------------------------------------
# The folder a submission is graded in.


def prepare(submission: Submission, scratch: Path, names: frozenset[str]) -> tuple[Path, str]:
    """The folder to grade ``submission`` in, and a note on how it was made ("" when it is graded where it lies).

    Exercise files are found by name at any depth; when one is found more than once, the
    one nearest the top counts. When they lie in one folder, that folder is graded in place;
    otherwise they are copied into a new folder under ``scratch``. A notebook (with no
    exercise file beside it) goes through the notebook intake into a folder under ``scratch``.

    Raises:
        NotGradable: when neither exercise files nor exactly one notebook are found, or the
            notebook intake is not available.
    """
    root = submission.root
    if submission.problem:
        raise NotGradable(submission.problem)
    if root.is_file():
        return _from_notebook(root, _fresh(scratch, submission.identifier)), f"from the notebook {root.name}"
    if not names:
        return root, ""
    chosen: dict[str, Path] = {}
    notebooks = []
    for path in sorted(_walk(root), key=lambda p: (len(p.relative_to(root).parts), str(p))):
        if path.name in names:
            chosen.setdefault(path.name, path)
        elif path.suffix == ".ipynb":
            notebooks.append(path)
    if not chosen:
        if len(notebooks) == 1:
            folder = _from_notebook(notebooks[0], _fresh(scratch, submission.identifier))
            return folder, f"from the notebook {notebooks[0].relative_to(root)}"
        if notebooks:
            listed = ", ".join(str(p.relative_to(root)) for p in notebooks)
            raise NotGradable(f"{len(notebooks)} notebooks and no exercise files ({listed}): keep one")
        raise NotGradable(f"no exercise files ({_listed(names)}) nor a notebook in {root}")
    folders = {p.parent for p in chosen.values()}
    if len(folders) == 1:
        return folders.pop(), ""
    dest = _fresh(scratch, submission.identifier)
    dest.mkdir(parents=True)
    for name, path in chosen.items():
        shutil.copyfile(path, dest / name)
    where = ", ".join(sorted(str(f.relative_to(root)) for f in folders))
    return dest, f"exercise files gathered from {where}"


def _from_notebook(notebook: Path, dest: Path) -> Path:
    try:
        from gradcheck_kit.autograder.notebook import submission_from_notebook
    except ImportError as exc:  # the intake is another part of gradcheck-kit, absent from some installations
        if exc.name != "gradcheck_kit.autograder.notebook":
            raise
        raise NotGradable(f"notebook intake not available: {notebook.name} was not graded") from None
    dest.mkdir(parents=True, exist_ok=True)
    try:
        return Path(submission_from_notebook(notebook, dest))
    except (OSError, ValueError) as exc:
        raise NotGradable(f"{notebook.name}: {exc}") from None
