"""The benchmark machinery: byte counts, arithmetic, checks before timing, outputs, and the command end to end."""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Imported here so that pytester's in-process runs find torch already loaded: the
# module snapshot it restores after each run must not unload a C extension.
import torch

from gradcheck_kit.bench import cli
from gradcheck_kit.bench.impl import Implementation
from gradcheck_kit.bench.kernel import measure_kernel
from gradcheck_kit.bench.memory import AllocationTracker, peak_bytes
from gradcheck_kit.bench.mlp import mlp_min_bytes
from gradcheck_kit.bench.ops import (
    BATCHNORM,
    CROSS_ENTROPY,
    EMBEDDING,
    MLP,
    OPS,
    batchnorm_min_bytes,
    cross_entropy_min_bytes,
    embedding_min_bytes,
)
from gradcheck_kit.bench.report import (
    SCHEMA,
    format_bytes,
    format_seconds,
    times_faster,
    to_json,
    to_table,
    write_plot,
)
from gradcheck_kit.bench.runner import Environment, Result, Run, check_variant, run_benchmark
from gradcheck_kit.bench.sizes import MEMORY_BOUND, NOTEBOOK, OP_NAMES, plan, sweep_tag
from gradcheck_kit.bench.speed import speed_line
from gradcheck_kit.bench.timing import Budget, CopyBandwidth, Timing, rotation

pytestmark = pytest.mark.e2e  # the slowest run the bench end to end and measure a copy of GiBs
ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
EXERCISES = ROOT / "exercises"
#: Time each variant for a few milliseconds: these tests check the machinery, not the speed.
TINY = Budget(min_run_time=0.002, max_run_time=0.02, threshold=0.5, max_rotation=2, copy_bytes=1 << 20)


def timing(median: float) -> Timing:
    return Timing(median=median, iqr=median / 10, times=(median,) * 4, calls_per_block=10)


def result(variant: str = "fused", median: float | None = 1e-3, **changes) -> Result:
    fields = dict(
        op="cross_entropy", size="32x27", params={"n": 32, "v": 27}, tags=(NOTEBOOK, sweep_tag("n")),
        variant=variant, label=variant, source="reference", status="ok", min_bytes=1_000_000,
        timing=timing(median) if median is not None else None, peak_bytes=2048,
    )  # fmt: skip
    fields.update(changes)
    return Result(**fields)


def a_run(results, copy_rate: float = 1e9) -> Run:
    env = Environment("cpu", "test cpu", 2, "float32", torch.__version__, "3.x", True, None)
    copy = CopyBandwidth(nbytes=int(copy_rate / 2), timing=timing(1.0))
    return Run(env, copy, list(results))


# ----------------------------------------------------------------- minimum bytes


def test_cross_entropy_reads_logits_and_labels_and_writes_dlogits():
    assert cross_entropy_min_bytes(n=2, v=3, itemsize=4) == 2 * (2 * 3 * 4) + 2 * 8


def test_batchnorm_reads_dy_bnraw_gain_and_var_inv_and_writes_dx():
    assert batchnorm_min_bytes(n=2, c=3, itemsize=4) == (3 * 2 * 3 + 2 * 3) * 4


def test_embedding_reads_demb_and_indices_and_writes_dC():
    assert embedding_min_bytes(n=2, block=3, d=4, v=5, itemsize=4) == 2 * 3 * 4 * 4 + 2 * 3 * 8 + 5 * 4 * 4


def test_mlp_bytes_grow_with_every_size():
    base = mlp_min_bytes(n=32, h=64, v=27, itemsize=4)
    assert mlp_min_bytes(n=64, h=64, v=27, itemsize=4) > base
    assert mlp_min_bytes(n=32, h=128, v=27, itemsize=4) > base
    assert mlp_min_bytes(n=32, h=64, v=54, itemsize=4) > base


def test_the_issue_target_sizes_count_logits_read_once_and_written_once():
    assert CROSS_ENTROPY.bytes_moved({"n": 8192, "v": 50257}, torch.float32) == 2 * 8192 * 50257 * 4 + 8192 * 8
    assert BATCHNORM.bytes_moved({"n": 16384, "c": 4096}, torch.float32) == (3 * 16384 * 4096 + 2 * 4096) * 4


def test_double_precision_doubles_the_float_bytes_only():
    f32 = CROSS_ENTROPY.bytes_moved({"n": 4, "v": 10}, torch.float32)
    f64 = CROSS_ENTROPY.bytes_moved({"n": 4, "v": 10}, torch.float64)
    assert f64 - 4 * 8 == 2 * (f32 - 4 * 8)


# ----------------------------------------------------------------- arithmetic


def test_bandwidth_is_the_minimum_bytes_over_the_median():
    assert result(median=2e-3).bandwidth == pytest.approx(5e8)


def test_fraction_of_copy_divides_by_the_measured_copy_bandwidth():
    copy = CopyBandwidth(nbytes=500_000_000, timing=timing(1.0))  # read and written: 1e9 B/s
    assert copy.bytes_per_second == pytest.approx(1e9)
    assert result(median=2e-3).fraction_of(copy) == pytest.approx(0.5)


def test_a_variant_that_was_not_timed_has_no_bandwidth():
    r = result(median=None, status="wrong")
    assert r.bandwidth is None and r.fraction_of(None) is None


def test_speed_up_is_the_chunked_median_over_each_variant(monkeypatch):
    from gradcheck_kit.bench.runner import with_speedups

    group = [result("chunked", 10e-3), result("fused", 2e-3), result("impl-fused", None, status="wrong")]
    speedups = [r.speedup for r in with_speedups(group, "chunked")]
    assert speedups == [pytest.approx(1.0), pytest.approx(5.0), None]


def test_rotation_covers_twice_the_cache_within_its_limit():
    assert rotation(working_set=1 << 20, cache=32 << 20, limit=8) == 8
    assert rotation(working_set=16 << 20, cache=32 << 20, limit=8) == 4
    assert rotation(working_set=1 << 30, cache=32 << 20, limit=8) == 1


def test_a_ratio_reads_as_faster_or_slower():
    assert times_faster(3.1, 1.0) == "3.1x faster than"
    assert times_faster(1.0, 2.0) == "2.0x slower than"


def test_times_and_bytes_read_with_their_units():
    assert format_seconds(2.5e-6) == "2.5 µs"
    assert format_seconds(0.0123) == "12.3 ms"
    assert format_bytes(3 << 20) == "3 MiB"


# ----------------------------------------------------------------- sizes


@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
@pytest.mark.parametrize("quick", [True, False])
def test_every_op_is_timed_at_the_notebooks_size(device_type, quick):
    notebook = {"cross_entropy": {"n": 32, "v": 27}, "batchnorm": {"n": 32, "c": 64}}
    for op in OPS:
        sizes = plan(op.name, device_type, quick)
        assert len({s.params for s in sizes}) == len(sizes)
        tagged = [s.values for s in sizes if NOTEBOOK in s.tags]
        assert len(tagged) == 1
        if op.name in notebook:
            assert tagged[0] == notebook[op.name]


def test_the_memory_bound_sizes_are_the_issues():
    def memory_bound(op, device_type):
        return [s.values for s in plan(op, device_type, quick=False) if MEMORY_BOUND in s.tags]

    assert {"n": 8192, "v": 50257} in memory_bound("cross_entropy", "cuda")
    assert {"n": 8192, "v": 32768} in memory_bound("cross_entropy", "cuda")
    assert memory_bound("cross_entropy", "cpu") == [{"n": 4096, "v": 8192}]
    assert memory_bound("batchnorm", "cuda") == [{"n": 16384, "c": 4096}]
    assert memory_bound("batchnorm", "cpu") == [{"n": 4096, "c": 1024}]


def test_each_axis_is_swept_over_more_than_one_size():
    for op in OPS:
        for axis in op.axes:
            swept = [s for s in plan(op.name, "cpu", quick=False) if sweep_tag(axis) in s.tags]
            assert len({s.values[axis] for s in swept}) > 1, (op.name, axis)


# ----------------------------------------------------------------- memory


def test_a_new_tensor_counts_its_bytes_and_a_view_counts_none():
    x = torch.ones(100)
    with AllocationTracker() as tracker:
        y = x * 2
        y.view(10, 10).t()
    assert tracker.total == 400


def test_in_place_operations_allocate_nothing():
    x = torch.ones(100)
    with AllocationTracker() as tracker:
        x.mul_(2).add_(1)
    assert tracker.total == 0


def test_the_peak_counts_temporaries_alive_together_not_one_after_the_other():
    x = torch.ones(1000)

    def one_at_a_time():
        for _ in range(3):
            x * 2  # freed at once
        return x + 1

    def all_at_once():
        a, b, c = x * 2, x * 3, x * 4
        del b, c
        return a

    cpu = torch.device("cpu")
    assert peak_bytes(one_at_a_time, cpu) == 4000
    assert peak_bytes(all_at_once, cpu) == 3 * 4000


# ----------------------------------------------------------------- checks before timing


def write_impl(tmp_path: Path, **files: str) -> Path:
    for name, text in files.items():
        (tmp_path / f"{name}.py").write_text(text)
    return tmp_path


WRONG_CROSS_ENTROPY = """
import torch.nn.functional as F

def cross_entropy_backward(logits, Yb):
    return F.softmax(logits, 1) / logits.shape[0]  # the label term is missing
"""

STUB_CROSS_ENTROPY = """
def cross_entropy_backward(logits, Yb):
    raise NotImplementedError("Exercise 2")
"""

AUTOGRAD_CROSS_ENTROPY = """
import torch
import torch.nn.functional as F

def cross_entropy_backward(logits, Yb):
    x = logits.detach().requires_grad_()
    return torch.autograd.grad(F.cross_entropy(x, Yb), x)[0]
"""


def check_impl(impl_dir: Path, op=CROSS_ENTROPY, key="impl-fused", params=None):
    cpu = torch.device("cpu")
    variant = next(v for v in op.all_variants(Implementation(impl_dir), cpu) if v.key == key)
    inputs = op.make_inputs(params or {"n": 8, "v": 5}, cpu, torch.float32, 0, True)
    return check_variant(op, variant, inputs)


def test_a_wrong_gradient_fails_its_check_with_the_comparison(tmp_path):
    check = check_impl(write_impl(tmp_path, ex2_cross_entropy=WRONG_CROSS_ENTROPY))
    assert check.status == "wrong"
    assert check.message.startswith("logits: Mismatched elements")


def test_an_untouched_stub_is_not_started(tmp_path):
    check = check_impl(write_impl(tmp_path, ex2_cross_entropy=STUB_CROSS_ENTROPY))
    assert check.status == "not started"


def test_a_chunked_backward_returning_only_none_is_not_started():
    check = check_impl(EXERCISES, op=MLP, key="impl-chunked", params={"n": 32, "h": 64, "v": 27})
    assert check.status == "not started"


def test_a_backward_that_calls_autograd_is_an_error(tmp_path):
    check = check_impl(write_impl(tmp_path, ex2_cross_entropy=AUTOGRAD_CROSS_ENTROPY))
    assert check.status == "error"
    assert "autograd" in check.message


def test_a_file_that_does_not_import_is_an_error(tmp_path):
    check = check_impl(write_impl(tmp_path, ex2_cross_entropy="def cross_entropy_backward(:\n"))
    assert check.status == "error"
    assert "SyntaxError" in check.message


def test_the_solutions_pass_their_checks_at_a_size_off_the_notebook():
    assert check_impl(SOLUTIONS, params={"n": 50, "v": 300}).ok
    assert check_impl(SOLUTIONS, op=BATCHNORM, params={"n": 50, "c": 40}).ok
    assert check_impl(SOLUTIONS, op=EMBEDDING, key="impl", params={"n": 20, "block": 3, "d": 4, "v": 9}).ok
    assert check_impl(SOLUTIONS, op=MLP, key="impl-chunked", params={"n": 40, "h": 16, "v": 11}).ok
    assert check_impl(SOLUTIONS, op=MLP, key="impl-fused", params={"n": 40, "h": 16, "v": 11}).ok


def test_a_wrong_implementation_is_reported_and_never_timed(tmp_path, monkeypatch):
    import gradcheck_kit.bench.runner as runner

    timed = []
    real_measure = runner.measure

    def measure(calls, **kwargs):
        timed.append(calls)
        return real_measure(calls, **kwargs)

    monkeypatch.setattr(runner, "measure", measure)
    impl = Implementation(write_impl(tmp_path, ex2_cross_entropy=WRONG_CROSS_ENTROPY))
    run = run_benchmark(device=torch.device("cpu"), budget=TINY, quick=True, threads=1, impl=impl, ops=[CROSS_ENTROPY])
    mine = [r for r in run.results if r.source == impl.label]
    reference = [r for r in run.results if r.source == "reference"]
    assert mine and all(r.status == "wrong" and r.timing is None and r.peak_bytes is None for r in mine)
    assert reference and all(r.status == "ok" and r.timing is not None for r in reference)
    assert len(timed) == len(reference)


def test_what_a_students_variant_writes_into_its_inputs_reaches_no_other_variant(tmp_path):
    shutil.copytree(SOLUTIONS, tmp_path, dirs_exist_ok=True)
    # Right gradients, then the forward pass it was given scribbled over: the fused variant runs next.
    (tmp_path / "ex1_chunked_backward.py").write_text(
        (SOLUTIONS / "ex1_chunked_backward.py").read_text() + "\n\n_right = chunked_backward\n\n"
        "def chunked_backward(f):\n"
        "    g = _right(f)\n"
        "    f.logits.mul_(3.0)\n"
        "    f.bnraw.zero_()\n"
        "    return g\n"
    )
    impl = Implementation(tmp_path)
    run = run_benchmark(device=torch.device("cpu"), budget=TINY, quick=True, threads=1, impl=impl, ops=[MLP])
    mine = {r.variant: r.status for r in run.results if r.source == impl.label and r.size == run.results[0].size}
    assert mine == {"impl-chunked": "ok", "impl-fused": "ok"}


def test_benchmark_cases_import_an_implementations_file_once(tmp_path):
    from gradcheck_kit.bench.cases import benchmark_cases, prepare

    shutil.copytree(SOLUTIONS, tmp_path, dirs_exist_ok=True)
    cases = [c for c in benchmark_cases(["cpu"], tmp_path) if c.variant == "impl-fused" and c.op == "cross_entropy"]
    loaded = {name for name in sys.modules if "ex2_cross_entropy" in name}
    for case in cases[:3]:
        prepare(case, tmp_path)
    assert len({name for name in sys.modules if "ex2_cross_entropy" in name} - loaded) <= 1


# ----------------------------------------------------------------- outputs


def test_the_table_shows_times_ratios_bandwidth_and_what_was_not_timed():
    run = a_run(
        [
            result("chunked", 4e-3, speedup=1.0),
            result("fused", 1e-3, speedup=4.0),
            result("mine", None, status="wrong", message="off"),
        ]
    )
    text = to_table(run)
    assert "copy bandwidth: 1 GB/s" in text
    fused = next(line for line in text.splitlines() if line.strip().startswith("fused"))
    assert fused.split()[1:] == ["1", "ms", "100", "µs", "4.00", "1", "100.0%", "2", "KiB"]
    assert "  mine: wrong: off" in text.splitlines()


def test_the_json_is_strict_and_carries_every_measure():
    data = to_json(a_run([result("chunked", 4e-3), result("fused", 1e-3), result("mine", None, status="wrong")]))
    text = json.dumps(data, allow_nan=False)
    data = json.loads(text)
    assert data["schema"] == SCHEMA
    assert set(data) == {"schema", "environment", "copy_bandwidth", "results"}
    assert data["environment"]["threads"] == 2
    fused = data["results"][1]
    assert fused["median_s"] == pytest.approx(1e-3)
    assert fused["bandwidth_bytes_per_s"] == pytest.approx(1e9)
    assert fused["fraction_of_copy"] == pytest.approx(1.0)
    assert fused["peak_bytes"] == 2048
    assert fused["tags"] == [NOTEBOOK, "sweep:n"]
    assert data["results"][2]["median_s"] is None and data["results"][2]["status"] == "wrong"


def test_the_plot_has_a_log_log_panel_per_swept_axis(tmp_path):
    pytest.importorskip("matplotlib")
    results = [
        result(v, m * scale, size=f"{n}x27", params={"n": n, "v": 27})
        for n, scale in ((32, 1), (512, 4), (4096, 30))
        for v, m in (("chunked", 4e-3), ("fused", 1e-3))
    ]
    path = tmp_path / "chart.png"
    write_plot(a_run(results), path)
    assert path.read_bytes().startswith(b"\x89PNG")


def test_plot_without_matplotlib_stops_before_benchmarking_with_the_install_command(monkeypatch, capsys, tmp_path):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a)
    )
    assert cli.run(parse("--quick", "--plot", str(tmp_path / "chart.png"))) == 2
    assert "pip install 'gradcheck-kit[plots]'" in capsys.readouterr().err
    assert not (tmp_path / "chart.png").exists()


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


# ----------------------------------------------------------------- end to end


def test_quick_runs_end_to_end_on_the_cpu(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = cli.run(parse("--quick", "--device", "cpu", "--threads", "1", "--op", "batchnorm", "--impl", str(SOLUTIONS),
                         "--json", str(out)))  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "gradcheck-kit bench: cpu" in text and "1 thread," in text
    assert "batchnorm backward" in text and "solutions/ fused (ex 3)" in text
    data = json.loads(out.read_text())
    assert {r["variant"] for r in data["results"]} == {"chunked", "fused", "autograd", "impl-fused"}
    assert all(r["status"] == "ok" and r["median_s"] > 0 for r in data["results"])
    assert all(math.isfinite(r["fraction_of_copy"]) for r in data["results"])


def test_the_ops_are_the_ones_the_command_offers():
    assert tuple(op.name for op in OPS) == OP_NAMES


def test_building_the_command_line_does_not_import_torch():
    code = (
        "import sys, argparse; from gradcheck_kit.bench import cli; cli.add_arguments(argparse.ArgumentParser()); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_the_command_is_wired_into_gradcheck_kit():
    done = subprocess.run(
        [sys.executable, "-m", "gradcheck_kit", "bench", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout and "--impl" in done.stdout


def test_an_unknown_device_is_a_usage_error(capsys):
    assert cli.run(parse("--device", "nonsense")) == 2
    assert "--device nonsense" in capsys.readouterr().err


@pytest.fixture(scope="module")
def in_process():
    # The same steps as a worker, in this process: the guard, the loading, the copies.
    from gradcheck_kit.sandbox.box import Sandbox

    return Sandbox(isolate=False)


def test_the_speed_line_compares_the_students_own_fused_and_chunked_passes(in_process):
    line = speed_line(SOLUTIONS, in_process, seconds=0.0)
    assert line is not None
    assert line.startswith("your fused backward (exercises 2-4)")  # a ratio, or why there is none
    assert "your chunked one (exercise 1)" in line


def test_no_speed_line_until_both_pass(tmp_path, in_process):
    assert speed_line(EXERCISES, in_process, seconds=0.0) is None
    shutil.copytree(SOLUTIONS, tmp_path, dirs_exist_ok=True)
    (tmp_path / "ex2_cross_entropy.py").write_text(WRONG_CROSS_ENTROPY)
    assert speed_line(tmp_path, in_process, seconds=0.0) is None


def test_the_speed_lines_passes_run_under_the_guard(tmp_path, in_process):
    shutil.copytree(SOLUTIONS, tmp_path, dirs_exist_ok=True)
    source = (tmp_path / "ex4_embedding.py").read_text()
    cheat = "    import torch\n    torch.ones(1, requires_grad=True).sum().backward()\n"
    (tmp_path / "ex4_embedding.py").write_text(source.replace('    """\n', '    """\n' + cheat, 1))
    assert speed_line(tmp_path, in_process, seconds=0.0) is None


# ----------------------------------------------------------------- pytest-benchmark


def copy_benchmarks(pytester: pytest.Pytester, impl: Path) -> None:
    # The benchmarks find which variants an implementation adds from the exercise files beside them.
    for stub in EXERCISES.glob("ex*.py"):
        shutil.copy(stub, pytester.path / stub.name)
    pytester.makepyfile(test_benchmarks=(EXERCISES / "test_benchmarks.py").read_text())
    pytester.makeconftest(
        "import pathlib, pytest\n"
        "from gradcheck_kit.bench.cases import Collected\n"
        "@pytest.fixture(scope='session')\n"
        f"def impl_dir():\n    return pathlib.Path({str(impl)!r})\n"
        "@pytest.fixture(scope='session')\n"
        "def benchmark_results(impl_dir):\n    return Collected(impl_dir)\n"
    )


def test_a_normal_run_skips_the_benchmarks_as_one_test(pytester: pytest.Pytester):
    copy_benchmarks(pytester, SOLUTIONS)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*benchmarks run with --benchmark-only*"])


def test_benchmark_only_times_each_case_with_its_bandwidth_in_extra_info(pytester: pytest.Pytester, tmp_path):
    copy_benchmarks(pytester, SOLUTIONS)
    out = tmp_path / "b.json"
    options = ["-p", "no:cacheprovider", "--benchmark-only", "--benchmark-max-time=0.01", "--benchmark-min-rounds=2"]
    result = pytester.runpytest(*options, "-k", "cpu-embedding-block3-d10-n32-v27", f"--benchmark-json={out}")
    result.assert_outcomes(passed=5)
    benchmarks = json.loads(out.read_text())["benchmarks"]
    assert {b["group"] for b in benchmarks} == {"embedding backward 32x3x10, 27 rows (cpu)"}
    for b in benchmarks:
        assert b["extra_info"]["min_bytes"] == EMBEDDING.bytes_moved(
            {"n": 32, "block": 3, "d": 10, "v": 27}, torch.float32
        )
        assert b["extra_info"]["bandwidth_bytes_per_s"] > 0 and 0 < b["extra_info"]["fraction_of_copy"]
    # Stable names are what --benchmark-compare matches runs by.
    assert "test_backward[cpu-embedding-block3-d10-n32-v27-index_add]" in {b["name"] for b in benchmarks}


def test_a_stub_is_skipped_by_the_benchmarks_not_timed(pytester: pytest.Pytester):
    copy_benchmarks(pytester, EXERCISES)
    options = ["-p", "no:cacheprovider", "--benchmark-only", "--benchmark-max-time=0.01", "-rs"]
    result = pytester.runpytest(*options, "-k", "cpu-embedding-block3-d10-n32-v27-impl")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*not timed: not started*"])


# ----------------------------------------------------------------- one kernel of your own


def test_measure_kernel_weighs_a_call_against_the_copy_bandwidth():
    x = torch.randn(256, 1024)

    def double():
        return x * 2  # reads x once, writes as much

    m = measure_kernel(double, min_bytes=2 * x.nbytes, device="cpu", threads=1, quick=True)
    assert m.median > 0 and m.timing.calls > 0
    assert m.bandwidth == pytest.approx(2 * x.nbytes / m.median)
    assert m.fraction_of_copy == pytest.approx(m.bandwidth / m.copy.bytes_per_second)
    assert m.peak_bytes == x.nbytes  # the result
    line = str(m)
    assert line.startswith("double: ") and "% of copy (" in line and line.endswith("peak 1 MiB")


def test_measure_kernel_takes_rotated_inputs_in_turn():
    counts = [0, 0, 0]

    def call(i):
        def run():
            counts[i] += 1

        return run

    m = measure_kernel([call(i) for i in range(3)], min_bytes=1, device="cpu", threads=1, quick=True, name="noop")
    assert str(m).startswith("noop: ")
    assert min(counts) > 0 and max(counts) - min(counts) <= 2


@pytest.mark.parametrize(
    ("fn", "min_bytes", "message"),
    [([], 8, "at least one call"), (lambda: None, 0, "min_bytes must be positive, not 0")],
)
def test_measure_kernel_refuses_nothing_to_time_or_no_bytes(fn, min_bytes, message):
    with pytest.raises(ValueError, match=message):
        measure_kernel(fn, min_bytes=min_bytes, device="cpu", quick=True)
