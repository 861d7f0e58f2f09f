"""``gradcheck-kit grade``: grade a folder of exercise solutions, print the tables and the score, write results.json.

The grading is ``pytest exercises/ --gradcheck-impl=SUBMISSION_DIR -m gradcheck``, run in a
child process: whatever the submission does (hang, exit, kill its parent) cannot
take this command down, and results.json is written even when the child dies,
with what had been graded and why the rest was not. Nothing is copied: the
submission is graded where its exercise files lie (in a subfolder, when that is
where they are). Given a class (several submissions, a folder of them, a zip of
them), each is graded by a child ``gradcheck-kit grade`` of its own, several at
once, into a gradebook (:mod:`gradcheck_kit.autograder.batch`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from gradcheck_kit.autograder.archive import UnsafeArchive
from gradcheck_kit.autograder.classroom import (
    Classroom,
    NoSubmission,
    NotGradable,
    exercise_files,
    find_submissions,
    prepare,
)
from gradcheck_kit.autograder.gradescope import write_json
from gradcheck_kit.autograder.results import format_points
from gradcheck_kit.verdicts import RUNNING

__all__ = ["add_arguments", "find_exercises", "pytest_command", "run", "split_pytest_args"]

#: Seconds an interrupted grading run gets to write its results before it is killed.
_GRACE = 15.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "%(prog)s [options] SUBMISSION [SUBMISSION ...] [-- PYTEST_ARGS]"
    parser.add_argument(
        "submissions",
        nargs="*",
        metavar="SUBMISSION",
        help="a folder with the student's files, named as in exercises/ (ex1_chunked_backward.py, ...; "
        "found in subfolders too), a notebook (.ipynb), or a class: several of them, a folder of them, "
        "a .zip of them, Gradescope's 'Download all submissions' export",
    )
    parser.add_argument(
        "--gradescope",
        metavar="PATH",
        help="write Gradescope's results.json to PATH (on Gradescope: /autograder/results/results.json); "
        "one submission only",
    )
    group = parser.add_argument_group("grading a class")
    group.add_argument(
        "-j",
        "--jobs",
        type=int,
        metavar="N",
        help="grade N submissions at once (default: the number of CPUs)",
    )
    group.add_argument(
        "--gradebook",
        metavar="FILE.csv",
        help="the gradebook, one row per submission (default: gradebook.csv in --out, else ./gradebook.csv)",
    )
    group.add_argument(
        "--out",
        metavar="DIR",
        help="the folder of each submission's results.json and grading log (default: results/ beside the gradebook)",
    )
    group.add_argument(
        "--force",
        action="store_true",
        help="grade again the submissions whose files and grader are unchanged since their row was written",
    )
    group.add_argument(
        "--plot",
        metavar="PATH.png",
        help="draw the score distribution in a PNG (needs matplotlib: pip install 'gradcheck-kit[plots]')",
    )
    parser.add_argument(
        "--exercises",
        metavar="DIR",
        help="the exercises/ folder with the graded tests and points.toml "
        "(default: ./exercises, else the one next to the installed gradcheck_kit)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="seconds each call of a student's function may run, for every exercise (default: points.toml's)",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        metavar="SECONDS",
        help=(
            "stop grading after SECONDS in all and keep what was graded; stopping takes up to "
            f"{_GRACE:g} s more, so set it at least that far below Gradescope's own limit"
        ),
    )
    parser.add_argument(
        "-n",
        "--workers",
        metavar="N",
        help="grade in N processes with pytest-xdist ('auto': one per core)",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        help="devices to grade on (default: auto, the cpu and CUDA when there is one)",
    )
    parser.set_defaults(pytest_args=[])
    parser.epilog = (
        "Everything after -- goes to pytest (e.g. -- -k ex2, -- --tb=short); "
        "the options of grade may come before or after the submissions."
    )
    # argparse ends a list of positionals at the first option and takes the words after "--" for
    # more positionals, so "DIR --gradescope X -- -k ex2" would leave "-k ex2" unrecognised: the
    # words after "--" are set apart before argparse reads the rest.
    parser.parse_known_args = split_pytest_args(parser.parse_known_args)  # type: ignore[method-assign]


def split_pytest_args(parse: Any) -> Any:
    """Wrap an argument parser's ``parse_known_args`` to give what follows the first ``--`` to ``pytest_args``."""

    def parse_known_args(args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None) -> Any:
        words = list(sys.argv[1:] if args is None else args)
        extra: list[str] = []
        if "--" in words:
            at = words.index("--")
            words, extra = words[:at], words[at + 1 :]
        parsed, unknown = parse(words, namespace)
        parsed.pytest_args = extra
        return parsed, unknown

    return parse_known_args


def run(args: argparse.Namespace) -> int:
    """Grade; return 0 only on full marks, 1 otherwise, 2 when the command is used wrongly.

    A class is graded into a gradebook: 0 when every submission was graded, whatever the
    scores, 1 when some could not be, 130 when Ctrl-C stopped it.
    """
    if not args.submissions:
        return _usage_error(
            "give the SUBMISSION to grade (a folder, .zip or .ipynb) before --: everything after -- goes to pytest, "
            "e.g. gradcheck-kit grade DIR --gradescope results.json -- -k ex2"
        )
    try:
        exercises = find_exercises(args.exercises)
    except FileNotFoundError as exc:
        return _usage_error(str(exc))
    if not _importable("pytest") or not _importable("numpy"):
        return _usage_error("grading needs pytest and numpy: pip install 'gradcheck-kit[grade]'")
    if args.workers is not None and not _has_xdist():
        return _usage_error("--workers needs pytest-xdist: pip install 'gradcheck-kit[xdist]'")
    names = exercise_files(exercises)
    with tempfile.TemporaryDirectory(prefix="gradcheck-submissions-") as scratch:
        try:
            room = find_submissions(args.submissions, Path(scratch), names)
        except (NoSubmission, UnsafeArchive) as exc:
            return _usage_error(str(exc))
        class_options = [o for o, v in _CLASS_OPTIONS.items() if getattr(args, v) not in (None, False)]
        if len(room.submissions) == 1 and not room.class_given and not class_options:
            try:
                folder, note = prepare(room.submissions[0], Path(scratch), names)
            except NotGradable as exc:
                return _usage_error(str(exc))
            if note:
                print(f"{args.submissions[0]}: {note}", flush=True)
            return _grade_one(args, folder, exercises)
        return _grade_class(args, room, exercises, Path(scratch))


#: The options that only grading a class takes, by attribute.
_CLASS_OPTIONS = {"--jobs": "jobs", "--gradebook": "gradebook", "--out": "out", "--force": "force", "--plot": "plot"}


def _grade_class(args: argparse.Namespace, room: Classroom, exercises: Path, scratch: Path) -> int:
    from gradcheck_kit.autograder.batch import ClassOptions, grade_class
    from gradcheck_kit.autograder.gradebook import Gradebook

    if args.gradescope:
        return _usage_error(
            f"--gradescope writes the results.json of one submission, and {len(room.submissions)} were given: "
            "use --gradebook FILE.csv (each submission's results.json goes to results/ beside it) or --out DIR"
        )
    jobs = args.jobs if args.jobs is not None else os.cpu_count() or 1
    if jobs < 1:
        return _usage_error(f"--jobs must be at least 1, got {jobs}")
    shared_user = _shared_sandbox_user()
    if jobs > 1 and shared_user:
        return _usage_error(
            f"{shared_user} names one user for every sandbox, and only one grading process may use it at a "
            f"time: grade with -j 1, or unset {shared_user} so that each grading process takes a uid of its own"
        )
    if args.plot and not _importable("matplotlib"):
        return _usage_error("--plot needs matplotlib: pip install 'gradcheck-kit[plots]'")
    if args.gradebook:
        gradebook = Path(args.gradebook).expanduser().resolve()
        out = Path(args.out).expanduser().resolve() if args.out else gradebook.parent / "results"
    else:
        out = Path(args.out or "results").expanduser().resolve()
        gradebook = (out if args.out else Path.cwd()) / "gradebook.csv"
    try:
        Gradebook.load(gradebook)
    except (OSError, ValueError) as exc:
        return _usage_error(str(exc))
    grade_options: list[str] = []
    for option, value in (
        ("--timeout", args.timeout), ("--deadline", args.deadline), ("--device", args.device), ("-n", args.workers)
    ):  # fmt: skip
        if value is not None:
            grade_options += [option, f"{value:g}" if isinstance(value, float) else str(value)]
    options = ClassOptions(
        exercises=exercises,
        gradebook=gradebook,
        out=out,
        jobs=jobs,
        force=args.force,
        grade_options=tuple(grade_options),
        pytest_args=tuple(args.pytest_args),
        plot=Path(args.plot).expanduser().resolve() if args.plot else None,
    )
    return grade_class(room, options, scratch)


def _shared_sandbox_user() -> str | None:
    """The environment variable that names one sandbox user for every grading process, when it is set and in force."""
    from gradcheck_kit.sandbox.isolation import ENVIRONMENT

    return ENVIRONMENT if os.environ.get(ENVIRONMENT, "").strip() and os.geteuid() == 0 else None


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _grade_one(args: argparse.Namespace, submission: Path, exercises: Path) -> int:
    """Grade the submission in the folder ``submission``, as ``gradcheck-kit grade DIR`` does."""
    with tempfile.TemporaryDirectory(prefix="gradcheck-grade-") as scratch:
        results = Path(args.gradescope).expanduser().resolve() if args.gradescope else Path(scratch, "results.json")
        with contextlib.suppress(FileNotFoundError):
            results.unlink()  # a stale file must not pass for this run's
        command = pytest_command(
            exercises,
            submission,
            results,
            timeout=args.timeout,
            workers=args.workers,
            device=args.device,
            extra=args.pytest_args,
        )
        started = time.monotonic()
        code, stopped = _run_isolated(command, cwd=exercises.parent, deadline=args.deadline, tmp=Path(scratch))
        data = _read(results)
        if stopped or data is None or not data.get("extra_data", {}).get("complete", False):
            why = f"grading was stopped at the deadline of {args.deadline:g} s" if stopped else _describe_exit(code)
            data = _finish_incomplete(data, why, code, time.monotonic() - started)
            write_json(results, data)
            # The child may have died mid-line.
            print(f"\n{_score_line(data)}\nGrading did not finish: {data['extra_data']['reason']}", flush=True)
        if args.gradescope:
            print(f"Gradescope results: {results}")
    return 0 if _full_marks(data) else 1


def find_exercises(given: str | None, cwd: Path | None = None) -> Path:
    """The exercises/ folder: ``given``, else ./exercises, else the one next to the installed package.

    Raises:
        FileNotFoundError: when none of them holds a conftest.py, saying where it looked.
    """
    if given is not None:
        folder = Path(given).expanduser().resolve()
        if not (folder / "conftest.py").is_file():
            raise FileNotFoundError(f"--exercises {given}: not an exercises folder (it has no conftest.py)")
        return folder
    here = (cwd or Path.cwd()) / "exercises"
    installed = Path(__file__).resolve().parents[2] / "exercises"
    for folder in (here, installed):
        if (folder / "conftest.py").is_file():
            return folder.resolve()
    raise FileNotFoundError(
        f"no exercises/ folder found in {here.parent} or next to the installed gradcheck_kit ({installed.parent}); "
        "pass --exercises DIR"
    )


def pytest_command(
    exercises: Path,
    submission: Path,
    results: Path,
    *,
    timeout: float | None = None,
    workers: str | None = None,
    device: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The pytest command line that grades ``submission`` with the tests in ``exercises``."""
    # "--gradcheck-impl=DIR", never "--gradcheck-impl DIR": pytest reads its arguments once before
    # the conftest defines the option, takes a lone DIR for a test path, and would import any
    # conftest.py in the submission's folder into the grading process.
    command = [
        sys.executable, "-m", "pytest", str(exercises),
        f"--gradcheck-impl={submission}",
        f"--gradcheck-gradescope={results}",
        "-m", "gradcheck",
        "-p", "no:cacheprovider",
        "--tb=no", "-rN",
    ]  # fmt: skip
    if timeout is not None:
        command.append(f"--gradcheck-timeout={timeout:g}")
    if device is not None:
        command.append(f"--gradcheck-device={device}")
    if workers is not None:
        # xdist's default scheduling: under --dist loadfile or loadscope a worker killed by the
        # submission can leave the run waiting forever (pytest-dev/pytest-xdist#784, #1378).
        command += ["-n", str(workers)]
    return [*command, *extra]


def _run_isolated(
    command: list[str], cwd: Path, deadline: float | None = None, tmp: Path | None = None
) -> tuple[int, bool]:
    """Run ``command`` in its own process group; stop whatever it leaves running.

    Args:
        tmp: a folder to be the child's temporary directory, so that what a killed
            child leaves there (multiprocessing's sockets, worker logs) goes with it.

    Returns:
        The exit code, and whether the deadline stopped it.
    """
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # no __pycache__ in the submission's folder
    if tmp is not None and len(str(tmp)) <= _LONGEST_TMP:
        env["TMPDIR"] = str(tmp)
    with _sigint_default():
        process = subprocess.Popen(command, cwd=cwd, env=env, start_new_session=True)
    stopped = False
    try:
        code = process.wait(timeout=deadline)
    except (KeyboardInterrupt, subprocess.TimeoutExpired) as exc:
        stopped = isinstance(exc, subprocess.TimeoutExpired)
        # Interrupted, pytest still writes results.json with what was graded; a grace period for that.
        _signal_group(process.pid, signal.SIGINT)
        try:
            code = process.wait(timeout=_GRACE)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            code = process.wait()
    finally:
        # Also after a second Ctrl-C: the child runs in a session of its own, and a sandbox
        # worker whose grader is gone would run on. Everything left in the group goes.
        _signal_group(process.pid, signal.SIGKILL)
    return code, stopped


@contextlib.contextmanager
def _sigint_default() -> Iterator[None]:
    """Start children with SIGINT's default action, even where this process ignores it.

    A shell starts a command in the background with SIGINT ignored, and children inherit
    that: pytest would ignore the SIGINT that asks it to write what it graded. A signal
    this process handles is reset to its default in a child, so it is handled meanwhile.
    """
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    else:
        yield


#: multiprocessing listens on a socket at TMPDIR/pymp-XXXXXXXX/listener-XXXXXXXX, and a
#: socket's path may not pass 104 bytes (macOS; 108 on Linux).
_LONGEST_TMP = 104 - len("/pymp-XXXXXXXX/listener-XXXXXXXX")


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _has_xdist() -> bool:
    return _importable("xdist")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return (
            f"the grading process was killed by {name}; the submission's code may have killed it, "
            "or the machine ran out of memory"
        )
    meanings = {
        2: "it was interrupted",
        3: "pytest hit an internal error",
        4: "pytest was called wrongly",
        5: "no tests were collected",
    }
    return f"the grading process exited with code {code}" + (f": {meanings[code]}" if code in meanings else "")


def _finish_incomplete(data: dict[str, Any] | None, reason: str, code: int, seconds: float) -> dict[str, Any]:
    """Say in results.json why grading did not finish, keeping what was graded before it stopped."""
    earlier = (data or {}).get("extra_data", {}).get("reason", "")
    if earlier and earlier != RUNNING and not reason.startswith("grading was stopped"):
        reason = f"{earlier} ({reason})"
    if data is None:
        return {
            "score": 0.0,
            "execution_time": round(seconds, 3),
            "output": f"**Grading did not finish:** {reason}. Nothing was graded.",
            "output_format": "md",
            "visibility": "visible",
            "stdout_visibility": "hidden",
            "extra_data": {"complete": False, "reason": reason, "exit_code": code},
            "tests": [],
        }
    extra = data.setdefault("extra_data", {})
    extra.update(complete=False, reason=reason, exit_code=code)
    data["execution_time"] = round(seconds, 3)
    first, _, rest = data.get("output", "").partition("\n\n")
    if first.startswith("**Grading did not finish:**"):
        data["output"] = rest
    data["output"] = f"**Grading did not finish:** {reason}. Tests that did not run earn no points.\n\n" + data.get(
        "output", ""
    )
    for test in data.get("tests", []):
        if test.get("extra_data", {}).get("outcome") == "not run":
            test["output"] = f"These points were not graded: {reason}."
    return data


def _total(data: dict[str, Any]) -> float:
    total = data.get("extra_data", {}).get("total")
    if isinstance(total, (int, float)):
        return float(total)
    return float(sum(t.get("max_score", 0) for t in data.get("tests", [])))


def _score_line(data: dict[str, Any]) -> str:
    return f"Score: {format_points(float(data.get('score', 0)))} / {format_points(_total(data))}"


def _full_marks(data: dict[str, Any]) -> bool:
    total = _total(data)
    extra = data.get("extra_data", {})
    # Full marks on some of the tests (pytest's -k after --) are not full marks.
    whole = bool(extra.get("complete")) and not extra.get("selection")
    return whole and total > 0 and float(data.get("score", 0)) >= total - 1e-6


def _usage_error(message: str) -> int:
    print(f"gradcheck-kit grade: error: {message}", file=sys.stderr)
    return 2
