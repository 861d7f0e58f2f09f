"""``gradcheck-kit grade``: grade a folder of exercise solutions, print the tables and the score, write results.json.

The grading is ``pytest exercises/ --gradcheck-impl=SUBMISSION_DIR -m gradcheck``, run in a
child process: whatever the submission does (hang, exit, kill its parent) cannot
take this command down, and results.json is written even when the child dies,
with what had been graded and why the rest was not. Nothing is copied: the
submission is graded where it lies.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradcheck_kit.autograder.gradescope import write_json
from gradcheck_kit.autograder.results import format_points
from gradcheck_kit.verdicts import RUNNING

__all__ = ["add_arguments", "find_exercises", "pytest_command", "run"]

#: Seconds an interrupted grading run gets to write its results before it is killed.
_GRACE = 15.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "submission",
        metavar="SUBMISSION_DIR",
        help="folder with the student's files, named as in exercises/ (ex1_chunked_backward.py, ...)",
    )
    parser.add_argument(
        "--gradescope",
        metavar="PATH",
        help="write Gradescope's results.json to PATH (on Gradescope: /autograder/results/results.json)",
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
    parser.add_argument(
        "pytest_args",
        nargs="*",
        metavar="-- PYTEST_ARGS",
        help="more pytest options, after --; e.g. -- --tb=short to see each failure in full",
    )


def run(args: argparse.Namespace) -> int:
    """Grade; return 0 only on full marks, 1 otherwise, 2 when the command is used wrongly."""
    submission = Path(args.submission).expanduser().resolve()
    if not submission.is_dir():
        return _usage_error(f"{args.submission}: no such folder")
    try:
        exercises = find_exercises(args.exercises)
    except FileNotFoundError as exc:
        return _usage_error(str(exc))
    if args.workers is not None and not _has_xdist():
        return _usage_error("--workers needs pytest-xdist: pip install 'gradcheck-kit[xdist]'")

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


#: multiprocessing listens on a socket at TMPDIR/pymp-XXXXXXXX/listener-XXXXXXXX, and a
#: socket's path may not pass 104 bytes (macOS; 108 on Linux).
_LONGEST_TMP = 104 - len("/pymp-XXXXXXXX/listener-XXXXXXXX")


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _has_xdist() -> bool:
    import importlib.util

    return importlib.util.find_spec("xdist") is not None


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
