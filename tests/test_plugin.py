"""The pytest plugin, tested from the outside with pytester."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Imported here so that pytester's in-process runs find torch already loaded: the
# module snapshot it restores after each run must not unload a C extension.
import torch  # noqa: F401

import gradcheck_kit.report  # noqa: F401

ROWS_TEST = """
import torch
from gradcheck_kit.comparison import compare
from gradcheck_kit.report import Row, verdict_for

def row(name, actual, expected):
    c = compare(name, actual, expected)
    return Row(c, verdict_for(c), "")

def test_right(gradcheck):
    gradcheck.check(row("logits", torch.ones(2, 3), torch.ones(2, 3)), table="demo table")

def test_wrong(gradcheck):
    gradcheck.check(row("probs", torch.zeros(2, 3), torch.ones(2, 3)), table="demo table")

def test_not_started(gradcheck):
    gradcheck.check(row("counts", None, torch.ones(2, 3)), table="demo table")
"""


def test_importing_the_plugin_does_not_import_torch():
    code = "import sys, gradcheck_kit.plugin, gradcheck_kit; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_options_live_in_one_group_with_one_prefix(pytester: pytest.Pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["gradcheck-kit: manual backward checks:", "*--gradcheck-device*"])
    # Nothing graded depends on a seed of the command line: there is no option to change it.
    result.stdout.no_fnmatch_line("*--gradcheck-seed*")


def test_the_gradcheck_marker_is_registered_for_strict_markers(pytester: pytest.Pytester):
    pytester.makepyfile("import pytest\n@pytest.mark.gradcheck(exercise='ex1')\ndef test_a():\n    pass\n")
    pytester.runpytest("--strict-markers").assert_outcomes(passed=1)


def test_the_terminal_summary_prints_the_tables_of_the_run(pytester: pytest.Pytester):
    pytester.makepyfile(ROWS_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*gradcheck-kit: per-tensor tables*",
            "demo table",
            "name*shape*exact*approximate*maxdiff*verdict*",
            "logits*(2, 3)*True*True*exact*",
            "probs*(2, 3)*False*False*wrong*",
            "counts*(2, 3)*not started*",
            "1/3 gradients match, 1 wrong, 1 not started",
        ]
    )
    assert result.ret == 1


def test_the_tables_keep_the_files_order_whatever_order_the_tests_ran_in(pytester: pytest.Pytester):
    pytester.makepyfile(ROWS_TEST)
    # As pytest-randomly would: run the tests in another order than the file's.
    pytester.makeconftest("def pytest_collection_modifyitems(items):\n    items.reverse()\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly", "-v")
    result.stdout.fnmatch_lines(["*test_not_started*", "*test_wrong*", "*test_right*"])
    result.stdout.fnmatch_lines(["demo table", "name*", "---*", "logits*exact*", "probs*wrong*", "counts*not started*"])


def test_a_test_whose_gradients_are_all_not_started_reports_not_started(pytester: pytest.Pytester):
    pytester.makepyfile(ROWS_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider", "-v", "-k", "not_started")
    result.stdout.fnmatch_lines(["*test_not_started NOT STARTED*", "*1 not started*"])
    assert result.ret == 1


def test_a_failing_test_shows_its_row_and_the_message(pytester: pytest.Pytester):
    pytester.makepyfile(ROWS_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "wrong")
    result.stdout.fnmatch_lines(["*dprobs: WRONG*", "*Mismatched elements: 6 / 6 (100.0%)*", "*gradcheck: demo table*"])


def test_device_parametrises_tests_with_cuda_skipped_when_absent(pytester: pytest.Pytester):
    pytester.makepyfile("def test_on(device):\n    assert device in ('cpu', 'cuda')\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-v", "-rs")
    result.stdout.fnmatch_lines(["*test_on?cpu? PASSED*"])
    if not torch.cuda.is_available():
        result.stdout.fnmatch_lines(["*test_on?cuda? SKIPPED*", "*CUDA is not available*"])
    only_cpu = pytester.runpytest("-p", "no:cacheprovider", "--gradcheck-device", "cpu")
    only_cpu.assert_outcomes(passed=1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_it_is_a_usage_error_not_a_run_of_skips(pytester: pytest.Pytester):
    pytester.makepyfile("def test_on(device):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--gradcheck-device", "cuda")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--gradcheck-device cuda: torch * sees no CUDA device here*"])


def test_torch_generator_is_seeded_with_the_notebooks_seed(pytester: pytest.Pytester):
    pytester.makepyfile(
        "import torch\n"
        "def test_seed(torch_generator):\n"
        "    expected = torch.randn(3, generator=torch.Generator().manual_seed(2147483647))\n"
        "    assert torch.equal(torch.randn(3, generator=torch_generator), expected)\n"
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_the_seed_and_devices_are_printed_in_the_header(pytester: pytest.Pytester):
    pytester.makepyfile("def test_a():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["gradcheck-kit *: seed 2147483647, devices auto"])


@pytest.mark.e2e  # pytest-xdist's workers are child processes that import torch
def test_tables_are_printed_by_the_controller_under_xdist(pytester: pytest.Pytester):
    pytest.importorskip("xdist")
    pytester.makepyfile(ROWS_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.stdout.fnmatch_lines(
        ["*gradcheck-kit: per-tensor tables*", "logits*exact*", "probs*wrong*", "counts*not started*"]
    )
    assert result.ret == 1


def test_no_tables_option_silences_the_summary(pytester: pytest.Pytester):
    pytester.makepyfile(ROWS_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider", "--gradcheck-no-tables")
    result.stdout.no_fnmatch_line("*per-tensor tables*")
