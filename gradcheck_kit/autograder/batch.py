"""Grade a class: one ``gradcheck-kit grade`` child per submission, several at once, into a gradebook.

Each submission is graded by a ``gradcheck-kit grade FOLDER`` child process of its own,
in a session of its own, exactly as one submission is graded alone: its pytest runs in
a process group the child ends, and its sandbox workers claim a uid of their own, so
children running side by side cannot stop or sweep each other's processes. Each writes
its results.json under a temporary name, moved into place once it has finished; then
its gradebook row is written. A submission's row is written only when its grading has
ended, so after Ctrl-C the gradebook holds every finished one, and the same command
grades the rest: a submission whose files and grader are unchanged is skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from gradcheck_kit.autograder.classroom import Classroom, NotGradable, Submission, exercise_files, prepare
from gradcheck_kit.autograder.gradebook import (
    ERROR,
    Gradebook,
    error_row,
    graded_row,
    grader_fingerprint,
    submission_fingerprint,
)
from gradcheck_kit.autograder.summary import plot, summary

__all__ = ["ClassOptions", "Job", "grade_class", "grade_command"]

#: The exit code of a class's grading stopped by Ctrl-C (128 + SIGINT, as a shell reports it).
INTERRUPTED = 130
# Seconds a grade child gets to stop after Ctrl-C: its own pytest gets 15 s to write what it graded.
_STOP_GRACE = 25.0
_POLL = 0.1


@dataclass(frozen=True)
class ClassOptions:
    """How a class is graded.

    Attributes:
        exercises: the exercises folder every submission is graded with.
        gradebook: the CSV file of rows.
        out: the folder of each submission's results.json and grading log.
        jobs: how many submissions are graded at once.
        force: grade again submissions whose files and grader are unchanged.
        grade_options: options of ``gradcheck-kit grade`` given to each child (``--timeout 5``, ...).
        pytest_args: pytest options given to each child after ``--``.
        plot: where to draw the score distribution as a PNG; None for no plot.
    """

    exercises: Path
    gradebook: Path
    out: Path
    jobs: int
    force: bool = False
    grade_options: tuple[str, ...] = ()
    pytest_args: tuple[str, ...] = ()
    plot: Path | None = None


@dataclass(frozen=True)
class Job:
    """One submission to grade: the folder it is graded in, and where its results go."""

    submission: Submission
    folder: Path
    note: str
    fingerprint: str
    results: Path
    log: Path

    @property
    def partial(self) -> Path:
        """Where the child writes results.json until it has finished."""
        return self.results.with_name(f".{self.results.name}.partial")


def grade_command(options: ClassOptions) -> Callable[[Job], list[str]]:
    """The command that grades one job: ``gradcheck-kit grade FOLDER`` with the class's options."""

    def command(job: Job) -> list[str]:
        return [
            sys.executable, "-m", "gradcheck_kit", "grade", str(job.folder),
            "--gradescope", str(job.partial), "--exercises", str(options.exercises),
            *options.grade_options, "--", *options.pytest_args,
        ]  # fmt: skip

    return command


def grade_class(
    room: Classroom,
    options: ClassOptions,
    scratch: Path,
    *,
    command: Callable[[Job], list[str]] | None = None,
    stream: TextIO | None = None,
) -> int:
    """Grade every submission of ``room`` that needs it, write the gradebook, print the summary.

    Args:
        scratch: a folder for the copies and notebooks' exercise files that some submissions need.
        command: the command line that grades a job (:func:`grade_command` by default).

    Returns:
        0 when every submission was graded, whatever the scores; 1 when some could not be
        graded; 130 when Ctrl-C stopped the grading (what had finished is in the gradebook).

    Raises:
        ValueError: when the gradebook file is not a gradebook.
    """
    out = stream or sys.stdout
    book = Gradebook.load(options.gradebook)
    grader = grader_fingerprint(options.exercises, (*options.grade_options, "--", *options.pytest_args))
    todo: list[tuple[Submission, str]] = []
    for submission in room.submissions:
        fingerprint = submission_fingerprint(submission, grader)
        if options.force or not book.up_to_date(submission.identifier, fingerprint, options.out):
            todo.append((submission, fingerprint))
    for note in room.notes:
        print(f"note: {note}", file=out)
    skipped = len(room.submissions) - len(todo)
    parts = [f"{len(todo)} to grade" + (f", {min(options.jobs, len(todo))} at a time" if todo else "")]
    if skipped:
        parts.append(f"{skipped} unchanged since they were graded, skipped (--force grades them again)")
    print(f"{len(room.submissions)} submissions: {'; '.join(parts)}", file=out)
    print(f"gradebook: {options.gradebook}\nresults and logs: {options.out}", file=out, flush=True)

    runner = _Runner(book, options, scratch, command or grade_command(options), out)
    interrupted = runner.run(todo)
    rows = book.select(s.identifier for s in room.submissions)
    print("", file=out)
    print("\n".join(summary(rows, options.out)), file=out)
    if options.plot is not None and rows:
        plot(rows, options.plot)
        print(f"score distribution drawn in {options.plot}", file=out)
    print(f"gradebook: {options.gradebook}", file=out, flush=True)
    if interrupted:
        print(
            f"Interrupted: {interrupted} submissions were not graded; "
            "run the same command again to grade them (finished ones are skipped).",
            file=out,
            flush=True,
        )
        return INTERRUPTED
    return 1 if any(r["status"] == ERROR for r in rows) else 0


class _Runner:
    """Runs the grade children, ``options.jobs`` at a time, and writes each one's row when it ends."""

    def __init__(
        self, book: Gradebook, options: ClassOptions, scratch: Path, command: Callable[[Job], list[str]], out: TextIO
    ) -> None:
        self.book = book
        self.options = options
        self.scratch = scratch
        self.command = command
        self.out = out
        self.names = exercise_files(options.exercises)
        self.running: dict[subprocess.Popen[bytes], tuple[Job, float]] = {}
        self.done = 0

    def run(self, todo: Sequence[tuple[Submission, str]]) -> int:
        """Grade ``todo``; return how many of them were left ungraded by Ctrl-C."""
        pending = deque(todo)
        with _stoppable(), _progress(len(todo), self.out) as self.progress:
            try:
                while pending or self.running:
                    while pending and len(self.running) < self.options.jobs:
                        self._start(*pending.popleft())
                    time.sleep(_POLL)
                    for process in [p for p in self.running if p.poll() is not None]:
                        self._finish(process)
            except KeyboardInterrupt:
                left = len(pending) + len(self.running)
                self._stop()
                return left
        return 0

    def _start(self, submission: Submission, fingerprint: str) -> None:
        started = time.monotonic()
        try:
            folder, note = prepare(submission, self.scratch, self.names)
        except (NotGradable, OSError) as exc:
            row = error_row(submission, str(exc), seconds=time.monotonic() - started, fingerprint=fingerprint)
            self._record(row, f"{submission.label}: could not be graded: {exc}")
            return
        results = self.options.out / f"{submission.identifier}.json"
        job = Job(submission, folder, note, fingerprint, results, results.with_suffix(".log"))
        job.results.parent.mkdir(parents=True, exist_ok=True)
        job.partial.unlink(missing_ok=True)
        with open(job.log, "wb") as log:
            process = subprocess.Popen(
                self.command(job), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.running[process] = (job, started)

    def _finish(self, process: subprocess.Popen[bytes]) -> None:
        job, started = self.running.pop(process)
        seconds = time.monotonic() - started
        data = _read(job.partial)
        if data is None:
            message = f"the grade command exited with code {process.returncode} and wrote no results; see {job.log}"
            row = error_row(job.submission, message, seconds=seconds, fingerprint=job.fingerprint)
            self._record(row, f"{job.submission.label}: could not be graded: {message}")
            return
        os.replace(job.partial, job.results)
        row = graded_row(
            job.submission,
            data,
            seconds=seconds,
            results=job.results.name,
            fingerprint=job.fingerprint,
            note=job.note,
        )
        line = f"{job.submission.label}: {row['score']} / {row['total']} in {seconds:.1f} s"
        if row["status"] != "graded":
            line += f" ({row['status']}: {row['note']})"
        self._record(row, line)

    def _record(self, row: dict[str, str], line: str) -> None:
        self.book.put(row)
        self.done += 1
        self.progress(line)

    def _stop(self) -> None:
        """Stop every running child as a Ctrl-C stops one, discarding what it wrote; a second Ctrl-C hurries them."""
        for process in self.running:
            _signal(process, signal.SIGINT)
        deadline = time.monotonic() + _STOP_GRACE
        for process, (job, _) in self.running.items():
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except KeyboardInterrupt:
                # A grade child interrupted twice ends its pytest at once (gradcheck_kit.autograder.command).
                for other in self.running:
                    _signal(other, signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            if process.poll() is None:
                _signal(process, signal.SIGKILL)
                process.wait()
            job.partial.unlink(missing_ok=True)
        self.running.clear()


@contextlib.contextmanager
def _stoppable() -> Iterator[None]:
    """Let Ctrl-C, and SIGTERM as well, stop the grading as Ctrl-C does.

    A shell starts a command in the background with SIGINT ignored, and a child inherits an
    ignored signal: without this, neither the grading nor its children could be interrupted.
    The children are started while these handlers are set, so each starts with SIGINT's default.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


def _signal(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("tests"), list) else None


@contextlib.contextmanager
def _progress(total: int, out: TextIO):
    """A progress bar with the time left (rich), and a line per finished submission; plain lines without rich."""
    try:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn
    except ImportError:
        count = iter(range(1, total + 1))

        def plain(line: str) -> None:
            print(f"[{next(count, total)}/{total}] {line}", file=out, flush=True)

        yield plain
        return
    console = Console(file=out)
    columns = ("grading", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), "left", TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("grading", total=total)

        def advance(line: str) -> None:
            bar.console.print(line, markup=False, highlight=False)
            bar.advance(task)

        yield advance
