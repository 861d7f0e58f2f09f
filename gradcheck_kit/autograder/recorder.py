"""The plugin that records a grading run's test reports into its results, and keeps results.json written.

Registered on the process that reports (the pytest-xdist controller, or the only
one). results.json is rewritten after every graded test, so that a run killed
half way still leaves what it graded, and once more at the end with why the run
stopped, if it did.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gradcheck_kit.autograder.run import GradingRun
from gradcheck_kit.verdicts import RUNNING

__all__ = ["ResultsRecorder", "stop_reason"]

# pytest-xdist starts a worker's failure text with "[gw0] linux -- Python 3.11.7 /usr/bin/python".
_XDIST_HEADER = re.compile(r"\A\[gw\d+\] [^\n]*\n")


class ResultsRecorder:
    """Hands every report to the run's Results and keeps results.json up to date; on the controller only."""

    def __init__(self, config: pytest.Config, run: GradingRun) -> None:
        self.config = config
        self.run = run
        self.written = False

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.run.results.add_problem(f"collecting {report.nodeid or 'the tests'} failed:\n{report.longreprtext}")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # Under pytest-xdist this runs on the controller for every worker's report.
        text = _XDIST_HEADER.sub("", report.longreprtext, count=1).lstrip("\n") if report.failed else ""
        if report.skipped and isinstance(report.longrepr, tuple):
            text = str(report.longrepr[2])
        finished = self.run.results.add_report(
            report.nodeid, report.when, report.outcome, report.user_properties, text, report.duration
        )
        if finished:
            self.write(complete=False, reason=RUNNING)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        complete = exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
        self.write(complete=complete, reason=stop_reason(session, self.run, exitstatus))
        self.written = True

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if not self.written:
            self.write(complete=False, reason="pytest stopped before the grading session finished")

    def write(self, *, complete: bool, reason: str) -> None:
        path = self.config.getoption("gradescope")
        if path is not None:
            self.run.write(Path(self.config.invocation_params.dir, path), complete=complete, reason=reason)


def stop_reason(session: pytest.Session, run: GradingRun, exitstatus: int) -> str:
    """Why the run did not grade everything, or anything else wrong with it as a whole; empty when nothing."""
    why = {
        pytest.ExitCode.INTERRUPTED: "the run was interrupted",
        pytest.ExitCode.INTERNAL_ERROR: "pytest hit an internal error",
        pytest.ExitCode.USAGE_ERROR: "pytest was called wrongly",
        pytest.ExitCode.NO_TESTS_COLLECTED: "no tests were collected",
    }.get(exitstatus, "")
    stop = session.shouldstop or session.shouldfail
    if stop:
        why = f"{why}: {stop}" if why else str(stop)
    problems = run.results.problems
    if problems:
        why = f"{why}; {len(problems)} problem(s) outside the graded tests" if why else problems[0]
    return why
