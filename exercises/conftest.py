"""The exercises' grading run: the graded implementation, its time limits, and what it scores.

Points, visibility and time limits come from ``points.toml`` next to this file, hints
from ``hints.toml``, and the hooks and fixtures of the run from
:mod:`gradcheck_kit.autograder.session`. They are imported here rather than named in
``pytest_plugins``, which pytest reads only in the conftest at the root of a run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gradcheck_kit.autograder.session import *  # noqa: F403
from gradcheck_kit.autograder.session import add_options, start

COURSE = Path(__file__).parent


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser, COURSE)


def pytest_configure(config: pytest.Config) -> None:
    start(config, COURSE)
