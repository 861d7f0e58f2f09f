"""The pytest plugin: options, markers, fixtures and the per-tensor tables of a run.

Registered through the ``pytest11`` entry point, so it loads in every pytest run
where gradcheck-kit is installed. It therefore imports nothing heavy at module
level: torch and tabulate are imported by the fixtures and hooks that use them.
Tests hand rows to the ``gradcheck`` fixture; rows travel on the test report's
``user_properties``, so under pytest-xdist the controller still sees them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from gradcheck_kit._version import __version__
from gradcheck_kit.verdicts import NOT_STARTED, ROW_PROPERTY, VERDICT_PROPERTY

if TYPE_CHECKING:
    import torch

    from gradcheck_kit.report import Report, Row

#: The notebook's seed, which the graded forward passes use too (makemore's ``Config.seed``). No
#: option changes it: a grade must not depend on how pytest was called.
DEFAULT_SEED = 2147483647


@dataclass(eq=False)  # registered as a plugin, which must stay hashable
class RunTables:
    """Rows collected over a run, grouped by table title; a later row of a name replaces an earlier one."""

    tables: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.tables.setdefault(table, {})[row["name"]] = row

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # Runs on the controller for every report under pytest-xdist, too.
        if report.when != "call":
            return
        for key, value in report.user_properties:
            if key == ROW_PROPERTY:
                self.add(value["table"], {k: v for k, v in value.items() if k != "table"})

    def reports(self) -> Iterator[Report]:
        from gradcheck_kit.report import Report

        for title, rows in self.tables.items():
            # Rows arrive in the order tests ran (shuffled by pytest-randomly, by completion
            # under pytest-xdist): put them back in the order of the test file.
            ordered = sorted(rows.values(), key=lambda row: list(row.get("order", [])))
            yield Report.from_dict({"title": title, "rows": ordered})


tables_key = pytest.StashKey[RunTables]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gradcheck", "gradcheck-kit: manual backward checks")
    group.addoption(
        "--gradcheck-device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="devices to grade on: auto = cpu, and cuda when available (default); cpu; cuda",
    )
    group.addoption(
        "--gradcheck-no-tables",
        action="store_true",
        help="do not print the per-tensor tables at the end of the run",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "gradcheck(exercise=None, points=None, visibility=None): "
        "a graded test, its exercise, its points and its Gradescope visibility",
    )
    if config.getoption("gradcheck_device") == "cuda":
        _require_cuda()
    tables = RunTables()
    config.stash[tables_key] = tables
    config.pluginmanager.register(tables, "gradcheck-tables")


def _require_cuda() -> None:
    """Refuse a run asked to grade on CUDA where there is none, rather than skip every test."""
    import torch

    if torch.cuda.is_available():
        return
    build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
    raise pytest.UsageError(
        f"--gradcheck-device cuda: torch {torch.__version__} ({build}) sees no CUDA device here; "
        "use --gradcheck-device auto to grade on the cpu, and on CUDA where there is one"
    )


def pytest_report_header(config: pytest.Config) -> str:
    return f"gradcheck-kit {__version__}: seed {DEFAULT_SEED}, devices {config.getoption('gradcheck_device')}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "device" not in metafunc.fixturenames:
        return
    choice = metafunc.config.getoption("gradcheck_device")
    params = []
    if choice in ("auto", "cpu"):
        params.append(pytest.param("cpu", id="cpu"))
    if choice in ("auto", "cuda"):
        import torch

        reason = "CUDA is not available on this machine; the exercises are graded on the cpu"
        params.append(
            pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason=reason))
        )
    metafunc.parametrize("device", params, scope="session")


@pytest.fixture(scope="session")
def _grading_backends() -> Iterator[None]:
    import torch

    # TF32 matmuls round to 10 mantissa bits: references must be full float32.
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture
def torch_generator() -> torch.Generator:
    """A torch.Generator seeded with the notebook's seed, :data:`DEFAULT_SEED`."""
    import torch

    return torch.Generator().manual_seed(DEFAULT_SEED)


class GradeSheet:
    """What a test hands its graded rows to; failing rows fail the test with their diagnosis."""

    def __init__(self, item: pytest.Item) -> None:
        self._item = item

    def record(self, rows: Row | Report | Iterable[Row], *, table: str) -> list[Row]:
        """Add rows to the run's table ``table`` (and to this test's report section)."""
        rows = list(_as_rows(rows))
        position = collection_position(self._item)
        for i, row in enumerate(rows):
            data = {"table": table, "order": [*position, i], **row.as_dict()}
            self._item.user_properties.append((ROW_PROPERTY, data))
        return rows

    def check(self, rows: Row | Report | Iterable[Row], *, table: str, record: bool = True) -> None:
        """Record ``rows`` and fail the test, with each failing row's diagnosis, unless all pass.

        A test whose failing rows are all "not started" is reported as NOT STARTED
        rather than FAILED; it still counts as a failure for the exit status.
        """
        __tracebackhide__ = True
        rows = self.record(rows, table=table) if record else list(_as_rows(rows))
        failing = [row for row in rows if not row.passed]
        if not failing:
            return
        not_started = all(row.verdict == NOT_STARTED for row in failing)
        self._item.user_properties.append((VERDICT_PROPERTY, NOT_STARTED if not_started else "failed"))
        lines = [f"{table}:"]
        for row in failing:
            lines.append(
                f"  {row.label}: {row.verdict.upper()}: {row.explanation}"
                if row.explanation
                else f"  {row.label}: {row.verdict.upper()}"
            )
            if row.comparison.problem == "mismatch":
                lines.extend("      " + line for line in row.comparison.message.splitlines())
        # Recorded rows also appear as a table in this test's "gradcheck" report section.
        pytest.fail("\n".join(lines), pytrace=False)


def collection_position(item: pytest.Item) -> list[Any]:
    """Where ``item`` stands in its test file: its file, its function's line, then its parameters' order.

    The order pytest collects tests in, whatever order they run in: a key that
    pytest-randomly, pytest-xdist, ``--lf`` and a selection leave as it is.
    """
    path, line, _ = item.location
    callspec = getattr(item, "callspec", None)
    indices = list(callspec.indices.values()) if callspec is not None else []
    return [path, -1 if line is None else line, *indices]


def _as_rows(rows: Any) -> Iterable[Row]:
    from gradcheck_kit.report import Report, Row

    if isinstance(rows, Row):
        return [rows]
    if isinstance(rows, Report):
        return rows.rows
    return rows


@pytest.fixture
def gradcheck(request: pytest.FixtureRequest) -> GradeSheet:
    """Collects this test's graded rows for the run's per-tensor tables, and checks them."""
    return GradeSheet(request.node)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if call.when == "call":
        rows = [value for key, value in item.user_properties if key == ROW_PROPERTY]
        if rows and report.failed:
            from gradcheck_kit.report import Report

            by_table: dict[str, list[dict[str, Any]]] = {}
            for row in rows:
                by_table.setdefault(row["table"], []).append(row)
            for title, table_rows in by_table.items():
                text = Report.from_dict({"title": title, "rows": table_rows}).to_text(color=False)
                report.sections.append((f"gradcheck: {title}", text))
    return report


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> tuple[str, str, Any] | None:
    if report.when == "call" and report.failed and (VERDICT_PROPERTY, NOT_STARTED) in report.user_properties:
        return NOT_STARTED, "N", ("NOT STARTED", {"yellow": True})
    return None


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if config.getoption("gradcheck_no_tables"):
        return
    tables = config.stash[tables_key]
    if not tables.tables:
        return
    markup = terminalreporter._tw.hasmarkup
    terminalreporter.write_sep("=", "gradcheck-kit: per-tensor tables")
    for report in tables.reports():
        terminalreporter.write_line(report.to_text(color=markup))
        terminalreporter.write_line("")


# check_backward: a kernel's backward held to PyTorch's own error (gradcheck_kit.backward_check).
BACKWARD_PROPERTY = "gradcheck_backward"


@pytest.fixture
def check_backward(request: pytest.FixtureRequest) -> Any:
    """``check_backward(forward, backward, inputs, **options)`` on ``--gradcheck-device``'s devices.

    The report is printed at the end of the run; a kernel that fails fails the test.
    """
    from gradcheck_kit.backward_check.fixture import BackwardChecker

    return BackwardChecker(request.node, BACKWARD_PROPERTY, collection_position(request.node))


@pytest.hookimpl(specname="pytest_terminal_summary")
def pytest_terminal_summary_backward_checks(terminalreporter: Any, config: pytest.Config) -> None:
    # Read from the test reports, which pytest-xdist sends to the controller with their properties.
    recorded = [
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for key, value in getattr(report, "user_properties", ())
        if key == BACKWARD_PROPERTY
    ]
    if recorded and not config.getoption("gradcheck_no_tables"):
        from gradcheck_kit.backward_check.fixture import summary

        terminalreporter.write_sep("=", "gradcheck-kit: backward checks")
        for line in summary(recorded, color=terminalreporter._tw.hasmarkup):
            terminalreporter.write_line(line)
