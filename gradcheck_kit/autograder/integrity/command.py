"""``python -m gradcheck_kit.autograder.integrity FOLDER``: the integrity report of a submission, without grading it."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from gradcheck_kit.autograder.integrity.report import scan_submission

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Print the integrity report of a submission folder; exit 2 when the folder does not exist."""
    parser = argparse.ArgumentParser(
        prog="python -m gradcheck_kit.autograder.integrity",
        description="Flag what a submission should not do (private torch APIs, autograd, processes, ...), "
        "read with Python's ast: nothing of the submission is run.",
    )
    parser.add_argument("folder", type=Path, help="the submission folder")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    report = scan_submission(args.folder)
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.to_text())
    return 0
