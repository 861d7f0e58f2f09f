"""``gradcheck-kit bench``: time the fused and chunked backward passes and print the table."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
from pathlib import Path
from typing import TextIO

from gradcheck_kit.bench.sizes import OP_NAMES

__all__ = ["add_arguments", "run"]

#: Rounds of ``--grading``: each takes about as long as grading twice.
GRADING_REPEATS = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` options to ``parser``; imports nothing heavy."""
    parser.add_argument(
        "--quick", action="store_true", help="only the small sizes, in seconds (a smoke test); with --grading, 3 rounds"
    )
    parser.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:N, or auto: cuda when there is one (default: auto)"
    )
    parser.add_argument(
        "--impl",
        type=Path,
        metavar="DIR",
        help="the exercise files to benchmark beside the reference variants, once they pass "
        "(default: ./exercises if it exists, else ./solutions); with --grading, the folder graded "
        "(default: the solutions next to exercises/)",
    )
    parser.add_argument("--no-impl", action="store_true", help="benchmark the reference variants only")
    parser.add_argument(
        "--op", action="append", choices=OP_NAMES, help="only this op; give it again for more (default: all)"
    )
    parser.add_argument(
        "--threads", type=int, metavar="N", help="torch threads for the whole run (default: every core)"
    )
    parser.add_argument(
        "--min-time",
        type=float,
        metavar="SECONDS",
        help="time each variant for at least this long (default: 0.2, or 0.01 with --quick)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument(
        "--grading",
        action="store_true",
        help="time grading instead: pytest exercises/ for one exercise and for all of them, against a bare "
        '`python -c "import torch"`, each in a fresh process, in turn (grades --impl, default: the solutions)',
    )
    parser.add_argument(
        "--repeats",
        type=int,
        metavar="N",
        help=f"with --grading: rounds of the three commands (default: {GRADING_REPEATS}, or 3 with --quick)",
    )
    parser.add_argument(
        "--exercises",
        metavar="DIR",
        help="with --grading: the exercises/ folder (default: ./exercises, else the one next to gradcheck_kit)",
    )
    parser.add_argument(
        "--plot", type=Path, metavar="PATH", help="also draw time against size, log-log, to PATH (needs matplotlib)"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``gradcheck-kit bench``.

    Returns:
        0; 1 when a reference variant fails its own correctness check; 2 for bad options.
    """
    if args.grading:
        return _run_grading(args)
    if args.repeats is not None or args.exercises is not None:
        return _usage("--repeats and --exercises go with --grading")
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        return _usage("--plot needs matplotlib: pip install 'gradcheck-kit[plots]'")
    if args.threads is not None and args.threads < 1:
        return _usage(f"--threads must be at least 1, got {args.threads}")
    if args.impl is not None and not args.impl.is_dir():
        return _usage(f"--impl {args.impl}: no such directory")

    import torch

    from gradcheck_kit.bench.impl import Implementation, default_impl_dir
    from gradcheck_kit.bench.ops import OPS
    from gradcheck_kit.bench.report import to_table, write_json, write_plot
    from gradcheck_kit.bench.runner import default_threads, run_benchmark, stderr_is_tty
    from gradcheck_kit.bench.timing import FULL, QUICK
    from gradcheck_kit.report import OK, SKIPPED

    device_name = args.device
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device_name)
    except RuntimeError as exc:
        return _usage(f"--device {args.device}: {exc}")
    if device.type == "cuda" and not torch.cuda.is_available():
        return _usage(f"--device {args.device}: this torch has no CUDA device")

    impl_dir = None if args.no_impl else args.impl or default_impl_dir()
    budget = QUICK if args.quick else FULL
    if args.min_time is not None:
        budget = dataclasses.replace(
            budget, min_run_time=args.min_time, max_run_time=max(budget.max_run_time, 4 * args.min_time)
        )
    progress = _Progress(sys.stderr, live=stderr_is_tty(), quiet=args.quick)
    result = run_benchmark(
        device=device,
        budget=budget,
        quick=args.quick,
        threads=args.threads or default_threads(),
        impl=Implementation(impl_dir) if impl_dir is not None else None,
        ops=[op for op in OPS if not args.op or op.name in args.op],
        progress=progress,
    )
    progress.done()
    sys.stdout.write(to_table(result))
    if args.json is not None:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    if args.plot is not None:
        write_plot(result, args.plot)
        print(f"wrote {args.plot}")
    broken = [r for r in result.results if r.source == "reference" and r.status not in (OK, SKIPPED)]
    for r in broken:
        message = f"reference {r.op} {r.label} at {r.size} is {r.status}: {r.message}"
        print(f"gradcheck-kit bench: {message}", file=sys.stderr)
    return 1 if broken else 0


def _run_grading(args: argparse.Namespace) -> int:
    """``bench --grading``: time grading against a bare import of torch; 1 when a command fails."""
    from gradcheck_kit.autograder.command import find_exercises
    from gradcheck_kit.bench import grading

    ignored = [
        option
        for option, given in (
            ("--device", args.device != "auto"),
            ("--no-impl", args.no_impl),
            ("--op", args.op),
            ("--threads", args.threads is not None),
            ("--min-time", args.min_time is not None),
            ("--plot", args.plot is not None),
        )
        if given
    ]
    if ignored:
        return _usage(f"{', '.join(ignored)} do not apply to --grading, which times whole pytest runs")
    repeats = args.repeats if args.repeats is not None else 3 if args.quick else GRADING_REPEATS
    if repeats < 1:
        return _usage(f"--repeats must be at least 1, got {repeats}")
    try:
        exercises = find_exercises(args.exercises)
    except FileNotFoundError as exc:
        return _usage(str(exc))
    impl = (args.impl or exercises.parent / "solutions").expanduser().resolve()
    if not impl.is_dir():
        return _usage(f"--impl {impl}: no such directory")

    def progress(number: int, total: int, command: grading.GradingCommand) -> None:
        print(f"[round {number}/{total}] {command.label}", file=sys.stderr, flush=True)

    try:
        result = grading.measure_grading(
            grading.grading_commands(exercises, impl, must_pass=args.impl is None),
            repeats=repeats,
            cwd=exercises.parent,
            progress=progress,
        )
    except grading.CommandFailed as exc:
        print(f"gradcheck-kit bench --grading: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(grading.to_table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(grading.to_json(result), indent=2, allow_nan=False) + "\n")
        print(f"wrote {args.json}")
    return 0


def _usage(message: str) -> int:
    print(f"gradcheck-kit bench: {message}", file=sys.stderr)
    return 2


class _Progress:
    """Shows which variant is being timed: one rewritten line on a terminal, else a line per op and size."""

    def __init__(self, stream: TextIO, *, live: bool, quiet: bool) -> None:
        self.stream = stream
        self.live = live
        self.quiet = quiet
        self._last_group = ""

    def __call__(self, number: int, total: int, what: str) -> None:
        if self.live:
            self.stream.write(f"\r\x1b[K[{number:>{len(str(total))}}/{total}] {what}")
            self.stream.flush()
            return
        group = what.split(":", 1)[0]
        if not self.quiet and group != self._last_group:
            self._last_group = group
            print(f"[{number}/{total}] {group}", file=self.stream, flush=True)

    def done(self) -> None:
        if self.live:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
