"""The words a grading run is told in: each gradient's verdict, and the keys its results travel under.

Plain strings with no imports, so that the pytest plugin, the autograder and
the code that reads a results.json agree on them without importing torch.
"""

from __future__ import annotations

__all__ = [
    "ERROR",
    "EXACT",
    "INHERITED",
    "NOT_STARTED",
    "OK",
    "PASSING",
    "PLAN_PROPERTY",
    "ROW_PROPERTY",
    "RUNNING",
    "SKIPPED",
    "TEST_PROPERTY",
    "UNCHECKED",
    "VERDICTS",
    "VERDICT_PROPERTY",
    "WRONG",
]

EXACT = "exact"
OK = "ok"
WRONG = "wrong"
NOT_STARTED = "not started"
ERROR = "error"
#: Right given the student's own upstream gradients; the total is off because an earlier step is wrong.
INHERITED = "inherited"
#: A step the student's own upstream gradients make zero or NaN everywhere: no output would show
#: it right or wrong, so it earns nothing until they are fixed, and is not counted as a mistake.
UNCHECKED = "unchecked"
SKIPPED = "skipped"

#: Every verdict, in the order counts and summaries list them.
VERDICTS = (EXACT, OK, WRONG, INHERITED, UNCHECKED, NOT_STARTED, ERROR, SKIPPED)
#: Verdicts that pass: an inherited gradient's own step is right, so it is not penalised again.
PASSING = frozenset({EXACT, OK, INHERITED})

# Test reports carry a run's results in their ``user_properties``, so that the process
# that prints the tables and the score (the pytest-xdist controller, or the only one)
# sees every test without collecting any. The keys:

#: A graded row of a per-tensor table, as a dict with its ``table`` and ``order``.
ROW_PROPERTY = "gradcheck_row"
#: A failed test's verdict as a whole: :data:`NOT_STARTED` when every failing row is, else ``"failed"``.
VERDICT_PROPERTY = "gradcheck_verdict"
#: What a graded test is worth: its :class:`~gradcheck_kit.autograder.points.Share`, as a dict.
TEST_PROPERTY = "gradcheck_test"
#: The run's points per exercise: :meth:`~gradcheck_kit.autograder.points.Plan.summary`.
PLAN_PROPERTY = "gradcheck_plan"

#: The reason results.json gives while the run goes on: left there, it means the run died.
RUNNING = "grading is still running, or stopped before it finished"
