"""Grading configuration of the exercises: which implementation is graded, and how it is run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

EXERCISES_DIR = Path(__file__).parent


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gradcheck")
    group.addoption(
        "--impl",
        metavar="DIR",
        default=None,
        help="folder of the implementation to grade, with the file names of exercises/ (default: exercises/)",
    )


def _impl_dir(config: pytest.Config) -> Path:
    value = config.getoption("impl")
    if value is None:
        return EXERCISES_DIR
    for base in (Path.cwd(), config.rootpath):
        candidate = (base / value).resolve()
        if candidate.is_dir():
            return candidate
    raise pytest.UsageError(f"--impl {value}: no such folder (looked in {Path.cwd()} and {config.rootpath})")


def pytest_configure(config: pytest.Config) -> None:
    _impl_dir(config)


def pytest_report_header(config: pytest.Config) -> str:
    return f"grading: {_impl_dir(config)}"


@pytest.fixture(scope="session")
def impl_dir(request: pytest.FixtureRequest) -> Path:
    """The folder whose ex*.py files are graded."""
    return _impl_dir(request.config)


@pytest.fixture(scope="session")
def sandbox(request: pytest.FixtureRequest) -> Iterator[object]:
    from gradcheck_kit.sandbox import Sandbox

    with Sandbox(timeout=request.config.getoption("gradcheck_timeout")) as box:
        yield box


@pytest.fixture(scope="session")
def grader(impl_dir: Path, sandbox: object, _grading_backends: None) -> object:
    from gradcheck_kit.course import Grader, Hints

    return Grader(impl_dir, sandbox, Hints.load(EXERCISES_DIR / "hints.toml"))
