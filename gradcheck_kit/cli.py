"""The ``gradcheck-kit`` command: one subcommand per job, each in its own module."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gradcheck_kit._version import __version__

__all__ = ["main"]

#: subcommand -> (module with add_arguments(parser) and run(args) -> int, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "grade": (
        "gradcheck_kit.autograder.command",
        "grade a folder of exercise solutions (tables, score, Gradescope results.json), or a class into a gradebook",
    ),
    "bench": ("gradcheck_kit.bench.cli", "benchmark fused against chunked backward passes"),
    "train": (
        "gradcheck_kit.makemore.train_command",
        "train the MLP with an implementation's own backward and show its health",
    ),
    "gradescope-bundle": ("gradcheck_kit.autograder.bundle", "write a Gradescope autograder zip, ready to upload"),
    "integrity": (
        "gradcheck_kit.autograder.integrity.command",
        "flag what a submission's source does that grading cannot stop (read, never run)",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradcheck-kit",
        description="Check hand-written backward passes against autograd, tensor by tensor.",
    )
    parser.add_argument("--version", action="version", version=f"gradcheck-kit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=module)
        try:
            importlib.import_module(module).add_arguments(sub)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            sub.set_defaults(_missing=f"'{name}' is not available in this installation")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "_missing", None):
        parser.error(args._missing)
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
