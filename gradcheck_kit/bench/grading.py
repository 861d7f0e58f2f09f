"""``gradcheck-kit bench --grading``: how long grading takes, against a bare ``import torch`` on the same machine.

Every command runs in a fresh process, in rounds that take each command in turn
(A B C A B C ...), so that load from elsewhere on the machine and a drift of its
speed reach every command alike. A command's ratio is the median over the rounds
of its time over the bare import's time in the same round.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradcheck_kit.bench.units import format_seconds, iqr

__all__ = [
    "SCHEMA",
    "CommandFailed",
    "GradingCommand",
    "GradingRun",
    "Timed",
    "grading_commands",
    "measure_grading",
    "run_once",
    "to_json",
    "to_table",
]

SCHEMA = "gradcheck-kit-bench-grading/1"
#: The exercise graded alone, as ``-k``.
ONE_EXERCISE = "ex2"
#: pytest's exit codes once the tests ran: all passed, or some failed (a student's, say).
GRADED = (0, 1)

#: Runs a command once in ``cwd`` and returns its wall time in seconds.
Runner = Callable[["GradingCommand", Path], float]
Progress = Callable[[int, int, "GradingCommand"], None]


@dataclass(frozen=True)
class GradingCommand:
    """One command line to time; ``target`` is the most it may take, as a multiple of the baseline's time."""

    key: str
    label: str
    argv: tuple[str, ...]
    target: float | None = None
    #: Exit codes that mean the command did its job.
    accepted: tuple[int, ...] = (0,)


class CommandFailed(RuntimeError):
    """A command ended with an exit code it does not accept: its time would not be a grading's."""

    def __init__(self, command: GradingCommand, code: int, output: str) -> None:
        self.command, self.code, self.output = command, code, output
        tail = "\n".join(output.rstrip().splitlines()[-15:])
        super().__init__(f"{command.label}: `{' '.join(command.argv)}` exited with code {code}\n{tail}")


def grading_commands(
    exercises: Path, impl: Path, *, must_pass: bool = True, python: str = sys.executable
) -> list[GradingCommand]:
    """The bare import (the baseline, first), grading one exercise, and grading all of them.

    Args:
        exercises: the exercises/ folder; the commands run in the folder above it.
        impl: the implementation graded, passed as ``--impl=DIR`` (one word: pytest
            would otherwise take DIR for a test path and import its conftest.py).
        must_pass: a failing test stops the measurement, as for the reference
            solutions, whose failure means that grading is broken; False for a
            student's implementation, whose failures are part of its grading.
    """
    pytest = (python, "-m", "pytest", str(exercises), "-q", "-p", "no:cacheprovider", f"--impl={impl}")
    accepted = (0,) if must_pass else GRADED
    return [
        GradingCommand("import", 'python -c "import torch"', (python, "-c", "import torch")),
        GradingCommand(
            "one", f"grading one exercise (-k {ONE_EXERCISE})", (*pytest, "-k", ONE_EXERCISE), 2.5, accepted
        ),
        GradingCommand("all", "grading all exercises", pytest, 4.0, accepted),
    ]


def run_once(command: GradingCommand, cwd: Path) -> float:
    """Run ``command`` in a fresh process, its output discarded; return its wall time.

    Raises:
        CommandFailed: when it exits with a code it does not accept.
    """
    started = time.perf_counter()
    done = subprocess.run(command.argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in command.accepted:
        raise CommandFailed(command, done.returncode, done.stdout)
    return seconds


@dataclass(frozen=True)
class Timed:
    """A command's wall times, one per round, and each over the baseline's time in the same round."""

    command: GradingCommand
    times: tuple[float, ...]
    ratios: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def iqr(self) -> float:
        return iqr(self.times)

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def ratio_iqr(self) -> float:
        return iqr(self.ratios)

    @property
    def within_target(self) -> bool | None:
        target = self.command.target
        return None if target is None else self.ratio <= target


@dataclass(frozen=True)
class GradingRun:
    """The timed commands, the baseline first, and the machine they ran on."""

    timed: list[Timed]
    cwd: Path
    python: str
    cpus: int | None
    #: The 1, 5 and 15 minute load averages before and after the rounds (None where there are none).
    load_before: tuple[float, float, float] | None
    load_after: tuple[float, float, float] | None

    @property
    def rounds(self) -> int:
        return len(self.timed[0].times) if self.timed else 0


def measure_grading(
    commands: Sequence[GradingCommand],
    *,
    repeats: int,
    cwd: Path,
    runner: Runner = run_once,
    progress: Progress | None = None,
    warmup: bool = True,
) -> GradingRun:
    """Time ``commands`` in ``repeats`` rounds, each round running every command once, in order.

    Args:
        commands: the baseline first, which every other command is set against.
        repeats: rounds; each command's median and ratio are over them.
        cwd: where the commands run.
        runner: runs a command once and returns its wall time (:func:`run_once`).
        progress: called with the round, the rounds and the command before each timed run.
        warmup: first run the baseline once, untimed, so that the first round does not
            read torch's libraries from disk.

    Raises:
        CommandFailed: from ``runner``, when a command fails.
        ValueError: for no commands or fewer than one round.
    """
    if not commands:
        raise ValueError("no commands to time")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    load_before = _load()
    if warmup:
        runner(commands[0], cwd)
    times: list[list[float]] = [[] for _ in commands]
    for round_number in range(1, repeats + 1):
        for command, seconds in zip(commands, times, strict=True):
            if progress is not None:
                progress(round_number, repeats, command)
            seconds.append(runner(command, cwd))
    baseline = times[0]
    timed = [
        Timed(command, tuple(seconds), tuple(t / b for t, b in zip(seconds, baseline, strict=True)))
        for command, seconds in zip(commands, times, strict=True)
    ]
    return GradingRun(timed, cwd, commands[0].argv[0], os.cpu_count(), load_before, _load())


def _load() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:  # not on every platform
        return None


_COLUMNS = ("command", "median", "± iqr", "ratio", "± iqr", "target", "")


def to_table(run: GradingRun) -> str:
    """The run as text: a header with the machine's load, then a row per command."""
    from tabulate import tabulate

    spread = run.rounds > 1  # one round has none to show
    rows = [
        [
            t.command.label,
            format_seconds(t.median),
            format_seconds(t.iqr) if spread else "",
            f"{t.ratio:.2f}x",
            f"{t.ratio_iqr:.2f}" if spread else "",
            "" if t.command.target is None else f"{t.command.target:g}x",
            {None: "", True: "within", False: "over"}[t.within_target],
        ]
        for t in run.timed
    ]
    table = tabulate(rows, headers=_COLUMNS, tablefmt="simple", disable_numparse=True)
    lines = [
        f"gradcheck-kit bench --grading: {run.rounds} round{'s' if run.rounds != 1 else ''}, "
        f"each command in turn in a fresh process, in {run.cwd}",
        f"machine: {run.cpus or '?'} cpus, load average {_describe_load(run)}; python {platform.python_version()}",
        f"ratio: the median over the rounds of a command's time over {run.timed[0].command.label}'s in the same round",
        "",
        table,
    ]
    return "\n".join(lines) + "\n"


def _describe_load(run: GradingRun) -> str:
    if run.load_before is None or run.load_after is None:
        return "unknown"
    before, after = (" ".join(f"{x:.2f}" for x in load) for load in (run.load_before, run.load_after))
    return f"{before} before, {after} after"


def to_json(run: GradingRun) -> dict[str, Any]:
    """The run as plain, strictly JSON-serialisable data; times in seconds."""
    return {
        "schema": SCHEMA,
        "environment": {
            "cwd": str(run.cwd),
            "python": run.python,
            "python_version": platform.python_version(),
            "platform": platform.platform(),
            "cpus": run.cpus,
            "load_before": list(run.load_before) if run.load_before is not None else None,
            "load_after": list(run.load_after) if run.load_after is not None else None,
            "rounds": run.rounds,
        },
        "baseline": run.timed[0].command.key,
        "commands": [
            {
                "key": t.command.key,
                "label": t.command.label,
                "argv": list(t.command.argv),
                "times_s": list(t.times),
                "median_s": t.median,
                "iqr_s": t.iqr,
                "ratios": list(t.ratios),
                "ratio": t.ratio,
                "ratio_iqr": t.ratio_iqr,
                "target": t.command.target,
                "within_target": t.within_target,
            }
            for t in run.timed
        ],
    }
