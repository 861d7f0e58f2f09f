"""The speed line: the ratio is stated only where the rounds pin it down, and the worker holds no solution.

The decisions are fed made-up times; the worker and the line run the reference
solutions once, for as few rounds as the rule allows, and assert nothing about speed.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from gradcheck_kit.bench.ratio import (
    FASTER,
    MIN_ROUNDS,
    SLOWER,
    TOO_CLOSE,
    TOO_NOISY,
    RatioEstimate,
    median_interval,
)
from gradcheck_kit.bench.speed import describe, speed_line

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"


def rounds(ratios, base=2e-3):
    """Per-round times of a chunked pass near ``base`` seconds and a fused one ``ratio`` times faster."""
    chunked = [base * (1 + 0.3 * math.sin(i)) for i in range(len(ratios))]  # load that comes and goes
    return chunked, [slow / ratio for slow, ratio in zip(chunked, ratios, strict=True)]


def line(ratios, elapsed=0.5):
    chunked, fused = rounds(ratios)
    estimate = RatioEstimate.of(chunked, fused)
    return estimate, describe(estimate, chunked=2e-3, fused=2e-3 / estimate.median, elapsed=elapsed, where="n=32, cpu")


# ----------------------------------------------------------------- the interval of the median


@pytest.mark.parametrize(("n", "k"), [(6, 1), (10, 2), (20, 6), (30, 10), (100, 40)])
def test_the_interval_of_the_median_is_the_kth_value_from_each_end_as_the_binomial_tables_give(n, k):
    values = [float(v) for v in range(n)]
    assert median_interval(list(reversed(values))) == (values[k - 1], values[n - k])


def test_five_values_are_too_few_for_a_95_percent_interval():
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) is None
    assert median_interval([]) is None


# ----------------------------------------------------------------- the decision


def test_a_clearly_faster_pass_is_stated_with_its_spread():
    estimate, text = line([6.0 + 0.3 * math.cos(i) for i in range(15)])

    assert estimate.verdict == FASTER and estimate.precise
    assert re.fullmatch(
        r"your fused backward \(exercises 2-4\): 6\.\dx faster than your chunked one \(exercise 1\) "
        r"\(5\.\dx-6\.\dx over 15 rounds\), \S+ µs against 2 ms a step at the notebook's size \(n=32, cpu\)",
        text,
    ), text


def test_a_clearly_slower_pass_is_stated_as_slower_with_the_spread_inverted():
    estimate, text = line([0.5 + 0.02 * math.cos(i) for i in range(12)])

    assert estimate.verdict == SLOWER
    low, high = estimate.interval
    assert (round(1 / high, 1), round(1 / low, 1)) == (1.9, 2.1)
    assert "2.0x slower than your chunked one (exercise 1) (1.9x-2.1x over 12 rounds), 4.01 ms against 2 ms" in text


def test_an_interval_that_straddles_one_is_too_close_to_call():
    estimate, text = line([0.95, 1.05] * 8)

    assert estimate.precise and estimate.verdict == TOO_CLOSE
    assert "too close to call (from 1.05x slower to 1.05x faster over 16 rounds)" in text
    assert "faster than" not in text and "slower than" not in text


def test_a_huge_spread_is_too_noisy_and_states_no_ratio():
    estimate, text = line([0.5, 20.0, 3.0, 0.8, 12.0, 1.5, 7.0, 0.6, 15.0, 2.0, 9.0, 0.9] * 5, elapsed=3.1)

    assert estimate.interval is not None and not estimate.precise
    assert estimate.verdict == TOO_NOISY
    assert text == (
        "your fused backward (exercises 2-4) against your chunked one (exercise 1): timing too noisy on this "
        "machine for a ratio: over 60 rounds in 3.1 s its 95% interval is 1.5x-7.0x faster, wider than ±20% of "
        "the median"
    )


def test_a_clear_ratio_from_too_few_rounds_for_an_interval_is_not_stated():
    estimate, text = line([6.0] * 5)

    assert estimate.interval is None and not estimate.precise
    assert estimate.verdict == TOO_NOISY and "faster than" not in text
    assert text.endswith("too noisy on this machine for a ratio: 5 rounds in 0.5 s are too few for a 95% interval")


def test_twenty_percent_either_side_of_the_median_is_the_edge_of_precise():
    inside = [0.8] * 2 + [1.0] * 6 + [1.2] * 2  # the interval (2nd and 9th of ten) is 0.8 to 1.2 exactly
    outside = [0.79] * 2 + [1.0] * 6 + [1.2] * 2
    assert RatioEstimate(tuple(r * 5 for r in inside)).precise
    assert not RatioEstimate(tuple(r * 5 for r in outside)).precise


def test_every_round_must_time_both_passes_with_real_durations():
    with pytest.raises(ValueError, match="every round times both passes: got 3 and 2 times"):
        RatioEstimate.of([1.0, 1.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="positive, finite"):
        RatioEstimate.of([1.0, 0.0], [1.0, 1.0])


# ----------------------------------------------------------------- the worker and the line


def test_the_worker_times_both_passes_in_the_same_rounds_and_stops_when_its_time_is_up(monkeypatch):
    import time

    import torch
    import torch.utils.benchmark

    from gradcheck_kit.bench import variants as v
    from gradcheck_kit.bench.ops import MLP
    from gradcheck_kit.bench.runner import SEED
    from gradcheck_kit.bench.timed_passes import time_passes
    from gradcheck_kit.makemore.model import PARAMETERS

    inputs = MLP.make_inputs({"n": 32, "h": 64, "v": 27}, torch.device("cpu"), torch.float32, SEED, True)
    chunked = SimpleNamespace(
        chunked_backward=lambda f: v.mlp_backward(
            f, v.cross_entropy_chunked, v.batchnorm_chunked, lambda f, demb: v.embedding_loop(demb, f.Xb, 27)
        )
    )
    fused = (
        SimpleNamespace(cross_entropy_backward=v.cross_entropy_fused),
        SimpleNamespace(batchnorm_backward=v.batchnorm_fused),
        SimpleNamespace(embedding_backward=v.embedding_index_add),
    )

    made = []

    class Timer(torch.utils.benchmark.Timer):
        def __init__(self, *args, **kwargs):
            made.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(torch.utils.benchmark, "Timer", Timer)

    value = time_passes(chunked, *fused, vars(inputs.f), tuple(PARAMETERS), seconds=0.0)

    # One thread, on its CPU time: what other processes take of the core is not the passes' time.
    assert [(kw["num_threads"], kw["timer"]) for kw in made] == [(1, time.thread_time)] * 2

    assert {key: len(times) for key, times in value["seconds"].items()} == {"chunked": MIN_ROUNDS, "fused": MIN_ROUNDS}
    assert all(t > 0 for times in value["seconds"].values() for t in times)
    for key in ("chunked", "fused"):
        assert set(value["grads"][key]) == set(PARAMETERS)
        for name in PARAMETERS:
            torch.testing.assert_close(value["grads"][key][name], inputs.expected[name], msg=f"{key} d{name}")


class _Spy:
    """A sandbox that runs the call in this process and remembers which driver it was handed."""

    def __init__(self):
        from gradcheck_kit.sandbox.box import Sandbox

        self.box = Sandbox(isolate=False)
        self.drivers = []

    def call(self, path, func_name, *args, **kwargs):
        self.drivers.append((Path(path), func_name))
        return self.box.call(path, func_name, *args, **kwargs)


def test_the_line_for_the_reference_solutions_is_one_of_its_three_forms():
    text = speed_line(SOLUTIONS, _Spy(), seconds=0.0)

    assert text is not None
    assert re.match(
        r"your fused backward \(exercises 2-4\)(: [\d.]+x (faster|slower) than your chunked one \(exercise 1\) "
        r"\([\d.]+x-[\d.]+x over \d+ rounds\)"
        r"| against your chunked one \(exercise 1\): (too close to call|timing too noisy))",
        text,
    ), text


def test_the_speed_line_worker_loads_no_reference_solution(tmp_path):
    from gradcheck_kit.sandbox.box import Sandbox
    from gradcheck_kit.sandbox.outcome import unwrap

    spy = _Spy()
    speed_line(SOLUTIONS, spy, seconds=0.0)
    [(driver, func_name)] = spy.drivers
    module = ".".join(driver.resolve().relative_to(ROOT).with_suffix("").parts)
    # A driver of the same imports as the speed line's: the worker imports them all before it is confined.
    probe = tmp_path / "probe.py"
    probe.write_text(f"import sys\n\nimport {module}\n\n\ndef loaded(student):\n    return sorted(sys.modules)\n")
    student = tmp_path / "ex1_chunked_backward.py"
    student.write_text("def chunked_backward(f):\n    return None\n")

    with Sandbox(timeout=60) as box:
        outcome = box.call(probe, "loaded", student_files=[student])

    assert outcome.ok, outcome
    loaded = set(unwrap(outcome.value))
    assert module in loaded and func_name == "time_passes"
    assert "gradcheck_kit.bench.variants" not in loaded
    assert not [name for name in loaded if name.partition(".")[0] == "solutions"]
