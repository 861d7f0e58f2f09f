"""What the pytest plugin's ``check_backward`` fixture hands a test, and the tables printed at the end of the run.

A kernel repository's test is then three lines::

    def test_fused_cross_entropy(check_backward):
        check_backward(F.cross_entropy, FusedCrossEntropy, cross_entropy_inputs)

Reports travel on the test report's ``user_properties`` as plain data, so that under
pytest-xdist the controller, which prints the summary, has them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pytest

from gradcheck_kit.backward_check.draw import Inputs
from gradcheck_kit.backward_check.report import LEGEND, SKIPPED, BackwardReport
from gradcheck_kit.backward_check.runner import check_backward

__all__ = ["DEVICES", "BackwardChecker", "summary"]

#: The devices each ``--gradcheck-device`` choice checks on.
DEVICES = {"auto": ("cpu", "cuda"), "cpu": ("cpu",), "cuda": ("cuda",)}


class BackwardChecker:
    """``check_backward(forward, backward, inputs, **options)`` for one test: recorded and asserted.

    The devices default to ``--gradcheck-device``'s. A check that fails fails the test with
    what went wrong; one where every row was skipped (no device, no PyTorch backward at the
    dtype) skips the test with the reason.

    Args:
        item: the test.
        key: the ``user_properties`` key the reports are recorded under.
        order: where the test stands in the collection, to print the reports in that order.
    """

    def __init__(self, item: pytest.Item, key: str, order: Sequence[Any]) -> None:
        self._item = item
        self._key = key
        self._order = list(order)

    def __call__(
        self,
        forward: Callable[..., Any],
        backward: Callable[..., Any] | type[Any],
        inputs: Inputs,
        **options: Any,
    ) -> BackwardReport:
        __tracebackhide__ = True
        options.setdefault("devices", DEVICES[self._item.config.getoption("gradcheck_device")])
        report = check_backward(forward, backward, inputs, **options)
        self._item.user_properties.append(
            (self._key, {"test": self._item.nodeid, "order": self._order, **report.as_dict()})
        )
        if report.passed:
            return report
        if set(report.counts()) == {SKIPPED}:
            pytest.skip(f"{report.title}: {report.summary()}")
        pytest.fail(f"{report.title}: {report.summary()}\n{report.failures()}", pytrace=False)


def summary(recorded: Iterable[Mapping[str, Any]], *, color: bool) -> list[str]:
    """Return the lines of the end-of-run section: each test's report, in collection order, then the legend."""
    lines: list[str] = []
    for data in sorted(recorded, key=lambda d: (d["order"], d["test"])):
        lines += [data["test"], BackwardReport.from_dict(data).to_text(color=color, legend=False), ""]
    return [*lines, LEGEND] if lines else []
