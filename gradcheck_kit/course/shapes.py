"""Shape-generic grading: other batch, vocabulary and layer sizes, and what a solution is held to there."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from gradcheck_kit.makemore.model import Config
from gradcheck_kit.report import OK, Report

__all__ = ["GRADING_SETTINGS", "configs", "held_to"]

_UNCHECKED = "values not compared: they are wrong at the notebook's shapes already, which costs the points there"

#: Reproducible and quick: a fixed sequence of examples, no example database, no deadline
#: (the student's code runs in a child process whose first call pays for its start).
GRADING_SETTINGS = settings(
    max_examples=6,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    # Explaining a failure re-grades it about a hundred times; the shrunk example says enough.
    phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def configs(device: str = "cpu", dtype: str = "float32") -> st.SearchStrategy[Config]:
    """Configurations unlike the notebook's, from the smallest batch (n=2) up.

    Sizes stay away from the notebook's 32, 27, 64 and 10, so that a solution which
    hard-codes them fails; every batch repeats at least one index (see ``draw_batch``).
    """
    return st.builds(
        Config,
        n=st.sampled_from([2, 3, 5, 17, 48]),
        block_size=st.integers(1, 5),
        n_embd=st.integers(1, 12).filter(lambda v: v != 10),
        n_hidden=st.integers(2, 40),
        vocab_size=st.integers(2, 40).filter(lambda v: v != 27),
        seed=st.integers(0, 2**31 - 1),
        dtype=st.just(dtype),
        device=st.just(device),
    )


def held_to(base: Report, other: Report) -> Report:
    """What of ``other`` (a report at another shape) counts, given ``base`` at the notebook's shapes.

    Other shapes test that nothing is hard-coded: where the values are right at the
    notebook's shapes, they must be right at every shape. Where they are wrong there
    already, that test has charged for it; at other shapes only what does not depend
    on the formula counts (it runs, and returns a finite tensor of the right shape,
    dtype and device), so one wrong formula costs its points once.
    """
    if base.passed:
        return other
    rows = tuple(
        replace(row, verdict=OK, note=_UNCHECKED) if row.comparison.problem == "mismatch" else row for row in other.rows
    )
    return replace(other, rows=rows)
