"""Hypothesis strategies for shape-generic grading: other batch, vocabulary and layer sizes."""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from gradcheck_kit.makemore.model import Config

__all__ = ["GRADING_SETTINGS", "configs"]

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
