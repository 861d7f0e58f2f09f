"""``gradcheck-kit integrity FOLDER``: the integrity report of a submission, without grading it."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from gradcheck_kit.autograder.integrity.report import scan_submission

__all__ = ["add_arguments", "main", "run"]

DESCRIPTION = (
    "Flag what a submission should not do (private torch APIs, autograd, processes, ...), "
    "read with Python's ast: nothing of the submission is run."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the subcommand (and of ``python -m gradcheck_kit.autograder.integrity``)."""
    parser.add_argument("folder", type=Path, help="the submission folder")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    """Print the integrity report of ``args.folder``; 2 when it is not a folder."""
    if not args.folder.is_dir():
        print(f"gradcheck-kit integrity: {args.folder} is not a folder", file=sys.stderr)
        return 2
    report = scan_submission(args.folder)
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.to_text())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gradcheck_kit.autograder.integrity``: the same as ``gradcheck-kit integrity``."""
    parser = argparse.ArgumentParser(prog="python -m gradcheck_kit.autograder.integrity", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))
