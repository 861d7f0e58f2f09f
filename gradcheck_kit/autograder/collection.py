"""A collected pytest test as the grading scheme sees it: its exercise's marks, its parameters, its device.

The one place that reads pytest's items for the scheme, so that
:mod:`gradcheck_kit.autograder.points` works on plain data.
"""

from __future__ import annotations

from typing import Any

import pytest

from gradcheck_kit.autograder.points import CollectedTest
from gradcheck_kit.plugin import collection_position

__all__ = ["collected_test"]


def collected_test(item: pytest.Item) -> tuple[list[Any], CollectedTest]:
    """``item`` as the scheme sees it, and where it stands in the course's order.

    Read when the item is collected: its skips then are those it was written with
    (an absent device's), not those a plugin adds later (``--benchmark-only``'s).
    """
    module_marks, test_marks = [], []
    for node, mark in item.iter_markers_with_node("gradcheck"):
        kwargs = dict(mark.kwargs)
        if mark.args:
            kwargs.setdefault("exercise", mark.args[0])
        (test_marks if isinstance(node, (pytest.Function, pytest.Class)) else module_marks).append(kwargs)
    callspec = getattr(item, "callspec", None)
    params = {k: str(v) for k, v in callspec.params.items()} if callspec else {}
    device = params.pop("device", None)
    skipped = any(
        m.name == "skip" or (m.name == "skipif" and m.args and m.args[0] is True) for m in item.iter_markers()
    )
    doc = (getattr(getattr(item, "obj", None), "__doc__", None) or "").strip()
    return collection_position(item), CollectedTest(
        nodeid=item.nodeid,
        function=getattr(item, "originalname", item.name),
        params=params,
        device=device,
        module_marks=tuple(module_marks),
        test_marks=tuple(test_marks),
        runs=not skipped,
        description=doc.splitlines()[0] if doc else "",
    )
