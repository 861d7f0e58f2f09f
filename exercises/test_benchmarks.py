"""Benchmarks of the fused and chunked backward passes, timed by pytest-benchmark.

``pytest exercises/ --benchmark-only`` runs them: every op, size and variant of a
full ``gradcheck-kit bench`` run, grouped by op and size, each with its effective
bandwidth in ``extra_info``, then the tables of ``gradcheck-kit bench`` (speed-up,
GB/s, share of the copy bandwidth, peak memory). ``--benchmark-autosave`` and
``--benchmark-compare`` compare runs. A normal run, grading included, skips them
all as one test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SKIP_REASON = "benchmarks run with --benchmark-only (or --benchmark-enable)"


def _benchmarking(config: pytest.Config) -> bool:
    return bool(config.getoption("benchmark_only", False) or config.getoption("benchmark_enable", False))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames:
        return
    if not _benchmarking(metafunc.config):
        # One skipped test, not hundreds, and nothing imported or built.
        metafunc.parametrize("case", [pytest.param(None, id="skipped", marks=pytest.mark.skip(reason=SKIP_REASON))])
        return
    import torch

    from gradcheck_kit.bench.cases import benchmark_cases

    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    # Which variants the implementation under test adds depends only on its file names,
    # the same as this folder's.
    cases = benchmark_cases(devices, Path(__file__).parent)
    metafunc.parametrize("case", cases, ids=[c.id for c in cases])


def test_backward(case, benchmark, impl_dir, benchmark_results):
    from gradcheck_kit.bench.cases import NotTimed, copy_bandwidth_of, prepare
    from gradcheck_kit.bench.timing import Timing

    try:
        prepared = prepare(case, impl_dir)
    except NotTimed as exc:
        benchmark_results.add_untimed(case.device, exc.result)
        pytest.skip(str(exc))
    benchmark.group = case.group
    benchmark.extra_info.update(prepared.info)
    benchmark(prepared.step)
    if benchmark.stats is None:  # --benchmark-disable: run once, nothing measured
        return
    stats = benchmark.stats.stats
    timing = Timing(stats.median, stats.iqr, tuple(stats.data), calls_per_block=benchmark.stats.iterations)
    benchmark_results.add_timed(case.device, prepared, timing)
    bandwidth = prepared.min_bytes / stats.median
    copy = copy_bandwidth_of(case.device).bytes_per_second
    benchmark.extra_info.update(
        bandwidth_bytes_per_s=bandwidth, copy_bytes_per_s=copy, fraction_of_copy=bandwidth / copy
    )
