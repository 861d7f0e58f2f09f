"""One grading run of a course: what is graded, under which time limits, and what it scored so far.

:class:`GradingRun` is the plain object behind the hooks of
:mod:`gradcheck_kit.autograder.session`. It holds the course's scheme (points.toml),
the folder of the implementation graded, the time limits, and the run's
:class:`~gradcheck_kit.autograder.results.Results`; it says what the header
prints and what results.json holds. It needs no pytest.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradcheck_kit.autograder.gradescope import to_gradescope, write_json
from gradcheck_kit.autograder.points import Scheme
from gradcheck_kit.autograder.results import Results

if TYPE_CHECKING:
    from gradcheck_kit.autograder.integrity import IntegrityReport

__all__ = ["DEFAULT_TIMEOUT", "POINTS_FILE", "GradingRun", "describe_limits"]

#: The file of a course folder, beside its tests, that sets points, visibility and time limits.
POINTS_FILE = "points.toml"
#: Seconds one call of a student's function may run where neither points.toml nor the option says.
DEFAULT_TIMEOUT = 60.0


@dataclass
class GradingRun:
    """The settings and the results of one grading run.

    Args:
        course: the course's folder: its tests, points.toml and hints.toml.
        implementation: the folder whose ``ex*.py`` files are graded.
        scheme: the course's points, visibility and time limits.
        timeout: seconds per call for every exercise, from ``--gradcheck-timeout``;
            None leaves each exercise the limit points.toml gives it.
        seed: the seed of the forward passes graded, told so that a run can be reproduced.
    """

    course: Path
    implementation: Path
    scheme: Scheme
    timeout: float | None = None
    seed: int | None = None
    results: Results = field(default_factory=Results)
    started: float = field(default_factory=time.monotonic)
    #: Figures measured beside the grades (``speedup``), for points.toml's ``[leaderboard]``.
    figures: dict[str, float] = field(default_factory=dict)
    #: Where results.json was last written, and with what outcome: :meth:`rewrite` repeats it.
    _written: tuple[Path, bool, str] | None = field(default=None, repr=False)

    @classmethod
    def load(
        cls, course: Path, implementation: Path, *, timeout: float | None = None, seed: int | None = None
    ) -> GradingRun:
        """The run of the course in ``course``, with the scheme of its points.toml.

        Raises:
            SchemeError: when points.toml cannot be applied.
        """
        return cls(course, implementation, Scheme.load(course / POINTS_FILE), timeout, seed)

    @cached_property
    def integrity(self) -> IntegrityReport:
        """What the submission's source does that grading cannot stop in its process, read once, never run."""
        from gradcheck_kit.autograder.integrity import scan_submission

        report = scan_submission(self.implementation)
        if self.implementation.resolve() == self.course.resolve():
            # Grading the course's own folder in place: its conftest.py is the grader's, not planted.
            report = replace(report, files=tuple(scan for scan in report.files if scan.reason != "planted"))
        return report

    def time_limits(self) -> tuple[float, dict[str, float]]:
        """Seconds per call: the default and each exercise's; the option, when given, is every exercise's."""
        if self.timeout is not None:
            return self.timeout, {}
        return self.scheme.time_limits(DEFAULT_TIMEOUT)

    def describe_limits(self) -> str:
        """``"20 s (ex6 120 s)"``: the default limit, then each exercise's that differs."""
        return describe_limits(*self.time_limits())

    def header(self) -> list[str]:
        """What the run says before it starts: what is graded, the time limits, and what makes it reproducible."""
        return [
            f"grading: {self.implementation}",
            f"time limit per call: {self.describe_limits()}",
            f"reproducible: forward pass seed {self.seed} (the notebook's); "
            "other shapes: hypothesis, derandomized (the same configurations every run)",
        ]

    def gradescope(self, *, complete: bool, reason: str) -> dict[str, Any]:
        """The run so far as Gradescope's results.json."""
        from gradcheck_kit._version import __version__

        default, limits = self.time_limits()
        return to_gradescope(
            self.results,
            execution_time=time.monotonic() - self.started,
            complete=complete,
            reason=reason,
            notes=[
                f"Graded with gradcheck-kit {__version__}. Forward pass seed {self.seed} (the notebook's); the other "
                "shapes are a fixed sequence of configurations, the same for every submission. "
                f"Each call of your function may run for {self.describe_limits()}."
            ],
            leaderboard=self.scheme.leaderboard_entries(self.figures),
            extra={
                "gradcheck_kit": __version__,
                "seed": self.seed,
                "hypothesis": "derandomized",
                "time_limits": {"default": default, **limits},
                "implementation": str(self.implementation),
                # For the instructor: Gradescope shows students the tests' output, not extra_data.
                "integrity": self.integrity.as_dict(),
            },
        )

    def write(self, path: Path, *, complete: bool, reason: str) -> None:
        """Write results.json to ``path``, atomically."""
        write_json(path, self.gradescope(complete=complete, reason=reason))
        self._written = (path, complete, reason)

    def rewrite(self) -> None:
        """Write results.json again as last written, with what was learnt since (the figures); none written, nothing."""
        if self._written is not None:
            path, complete, reason = self._written
            self.write(path, complete=complete, reason=reason)


def describe_limits(default: float, limits: Mapping[str, float]) -> str:
    """``"20 s (ex6 120 s)"``: the default limit, then each exercise's that differs."""
    others = [f"{key} {seconds:g} s" for key, seconds in limits.items() if seconds != default]
    return f"{default:g} s" + (f" ({', '.join(others)})" if others else "")
