"""``gradcheck-kit bench --grading``: the rounds, the ratios, the table and the JSON, with stand-in commands."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from gradcheck_kit.bench import cli, grading
from gradcheck_kit.bench.grading import (
    SCHEMA,
    CommandFailed,
    GradingCommand,
    grading_commands,
    measure_grading,
    run_once,
    to_json,
    to_table,
)

ROOT = Path(__file__).resolve().parents[1]

BARE = GradingCommand("import", "bare", (sys.executable, "-c", "pass"))
ONE = GradingCommand("one", "one exercise", (sys.executable, "-c", "pass"), target=2.5, accepted=(0, 1))
ALL = GradingCommand("all", "all exercises", (sys.executable, "-c", "import sys; sys.exit(1)"), 4.0, (0, 1))


def scripted(seconds: dict[str, list[float]]):
    """A runner that takes no time and says each command took the next of its ``seconds``; it logs the order."""
    order: list[str] = []
    left = {key: list(values) for key, values in seconds.items()}

    def runner(command: GradingCommand, cwd: Path) -> float:
        order.append(command.key)
        return left[command.key].pop(0)

    return runner, order


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


# ----------------------------------------------------------------- rounds and ratios


def test_the_commands_run_in_turn_round_after_round_after_one_untimed_baseline():
    runner, order = scripted({"import": [9.0, 1, 1, 1], "one": [2, 2, 2], "all": [3, 3, 3]})
    run = measure_grading([BARE, ONE, ALL], repeats=3, cwd=ROOT, runner=runner)
    assert order == ["import"] + ["import", "one", "all"] * 3
    assert run.rounds == 3
    assert run.timed[0].times == (1, 1, 1)  # the warm-up's 9 s is not counted


def test_a_ratio_is_the_median_of_each_rounds_time_over_the_baselines_in_that_round():
    # Round 2 ran on a machine twice as slow: both commands took twice as long, the ratio stays 3.
    runner, _ = scripted({"import": [1.0, 2.0, 1.0], "one": [3.0, 6.0, 3.3], "all": [4.0, 8.0, 5.0]})
    run = measure_grading([BARE, ONE, ALL], repeats=3, cwd=ROOT, runner=runner, warmup=False)
    baseline, one, every = run.timed
    assert baseline.ratios == (1.0, 1.0, 1.0)
    assert one.ratios == pytest.approx((3.0, 3.0, 3.3))
    assert one.ratio == pytest.approx(3.0)
    assert one.median == pytest.approx(3.3)
    assert every.ratio == pytest.approx(4.0)
    assert every.ratio_iqr == pytest.approx((5.0 - 4.0) / 2)  # quartiles of (4, 4, 5): 4 and 4.5


def test_the_spread_is_the_interquartile_range_as_numpy_interpolates_it():
    runner, _ = scripted({"import": [1.0, 2.0, 3.0, 4.0, 100.0]})
    (timed,) = measure_grading([BARE], repeats=5, cwd=ROOT, runner=runner, warmup=False).timed
    assert timed.median == 3.0
    assert timed.iqr == pytest.approx(4.0 - 2.0)


@pytest.mark.parametrize(("ratio", "within"), [(2.4, True), (2.5, True), (2.6, False)])
def test_a_command_is_within_its_target_up_to_and_including_it(ratio, within):
    runner, _ = scripted({"import": [1.0], "one": [ratio]})
    _, one = measure_grading([BARE, ONE], repeats=1, cwd=ROOT, runner=runner, warmup=False).timed
    assert one.within_target is within


def test_the_baseline_has_no_target():
    runner, _ = scripted({"import": [1.0]})
    (timed,) = measure_grading([BARE], repeats=1, cwd=ROOT, runner=runner, warmup=False).timed
    assert timed.within_target is None


def test_no_rounds_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        measure_grading([BARE], repeats=0, cwd=ROOT, runner=lambda command, cwd: 1.0)


# ----------------------------------------------------------------- real processes


def test_stand_in_commands_are_timed_in_fresh_processes():
    run = measure_grading([BARE, ONE, ALL], repeats=2, cwd=ROOT)
    assert [t.command.key for t in run.timed] == ["import", "one", "all"]
    for t in run.timed:
        assert len(t.times) == 2 and all(0 < s < 60 for s in t.times)
        assert t.ratio > 0 and math.isfinite(t.ratio)


def test_a_command_failing_with_a_code_it_does_not_accept_stops_the_measurement():
    broken = GradingCommand("one", "one exercise", (sys.executable, "-c", "print('usage error'); exit(4)"), 2.5)
    with pytest.raises(CommandFailed, match="exited with code 4") as failed:
        run_once(broken, ROOT)
    assert "usage error" in str(failed.value)


def test_the_commands_grade_with_impl_as_one_word_from_above_the_exercises(tmp_path):
    bare, one, every = grading_commands(tmp_path / "exercises", tmp_path / "student", python="py")
    assert bare.argv == ("py", "-c", "import torch")
    assert every.argv == (
        "py", "-m", "pytest", str(tmp_path / "exercises"), "-q", "-p", "no:cacheprovider",
        f"--impl={tmp_path / 'student'}",
    )  # fmt: skip
    assert one.argv == (*every.argv, "-k", "ex2")
    assert (one.target, every.target) == (2.5, 4.0)
    assert one.accepted == every.accepted == (0,)  # the solutions failing: grading is broken, not timed


def test_a_students_failing_tests_still_make_a_grading(tmp_path):
    _, one, every = grading_commands(tmp_path / "exercises", tmp_path / "student", must_pass=False)
    assert one.accepted == every.accepted == (0, 1)


# ----------------------------------------------------------------- outputs


@pytest.fixture
def a_run():
    runner, _ = scripted({"import": [1.0, 1.2, 1.1], "one": [3.0, 3.6, 2.2], "all": [4.0, 4.8, 4.4]})
    return measure_grading([BARE, ONE, ALL], repeats=3, cwd=ROOT, runner=runner, warmup=False)


def test_the_table_gives_medians_spreads_ratios_and_targets(a_run):
    lines = to_table(a_run).splitlines()
    assert lines[0].startswith("gradcheck-kit bench --grading: 3 rounds,")
    assert "load average" in lines[1]
    header = next(i for i, line in enumerate(lines) if line.startswith("command"))
    assert lines[header].split() == ["command", "median", "±", "iqr", "ratio", "±", "iqr", "target"]
    rows = [line.split() for line in lines[header + 2 :]]
    assert rows[0] == ["bare", "1.1", "s", "100", "ms", "1.00x", "0.00"]
    assert rows[1] == ["one", "exercise", "3", "s", "700", "ms", "3.00x", "0.50", "2.5x", "over"]
    assert rows[2] == ["all", "exercises", "4.4", "s", "400", "ms", "4.00x", "0.00", "4x", "within"]


def test_a_single_round_shows_no_spread():
    runner, _ = scripted({"import": [1.0], "one": [3.0]})
    run = measure_grading([BARE, ONE], repeats=1, cwd=ROOT, runner=runner, warmup=False)
    assert to_table(run).splitlines()[-1].split() == ["one", "exercise", "3", "s", "3.00x", "2.5x", "over"]


def test_the_json_is_strict_and_carries_every_time_and_ratio(a_run):
    data = json.loads(json.dumps(to_json(a_run), allow_nan=False))
    assert data["schema"] == SCHEMA
    assert data["baseline"] == "import"
    assert data["environment"]["rounds"] == 3
    assert set(data["environment"]) >= {"cpus", "load_before", "load_after", "python", "cwd"}
    one = data["commands"][1]
    assert one["times_s"] == [3.0, 3.6, 2.2]
    assert one["ratios"] == pytest.approx([3.0, 3.0, 2.0])
    assert (one["median_s"], one["ratio"], one["target"], one["within_target"]) == (3.0, pytest.approx(3.0), 2.5, False)
    assert data["commands"][0]["target"] is None


# ----------------------------------------------------------------- the command


@pytest.fixture
def stand_ins(monkeypatch):
    """``bench --grading`` with the stand-in commands instead of pytest, and the arguments it built them from."""
    seen = {}

    def commands(exercises, impl, *, must_pass):
        seen.update(exercises=exercises, impl=impl, must_pass=must_pass)
        return [BARE, ONE, ALL]

    monkeypatch.setattr(grading, "grading_commands", commands)
    return seen


def test_grading_runs_end_to_end_with_stand_in_commands(tmp_path, capsys, stand_ins):
    out = tmp_path / "grading.json"
    assert cli.run(parse("--grading", "--repeats", "2", "--json", str(out))) == 0
    captured = capsys.readouterr()
    assert "gradcheck-kit bench --grading: 2 rounds" in captured.out
    assert "[round 2/2] all exercises" in captured.err
    assert stand_ins == {"exercises": ROOT / "exercises", "impl": ROOT / "solutions", "must_pass": True}
    data = json.loads(out.read_text())
    assert [c["key"] for c in data["commands"]] == ["import", "one", "all"]
    assert all(len(c["times_s"]) == 2 for c in data["commands"])


def test_quick_grading_takes_three_rounds_and_impl_names_the_graded_folder(tmp_path, capsys, stand_ins):
    assert cli.run(parse("--grading", "--quick", f"--impl={tmp_path}")) == 0
    assert "3 rounds" in capsys.readouterr().out
    assert stand_ins["impl"] == tmp_path.resolve()
    assert stand_ins["must_pass"] is False


def test_a_failing_command_fails_the_bench_with_its_output(capsys, monkeypatch):
    broken = GradingCommand("import", "bare", (sys.executable, "-c", "import sys; print('no torch'); sys.exit(3)"))
    monkeypatch.setattr(grading, "grading_commands", lambda *args, **kwargs: [broken])
    assert cli.run(parse("--grading", "--repeats", "1")) == 1
    err = capsys.readouterr().err
    assert "exited with code 3" in err and "no torch" in err


@pytest.mark.parametrize(
    "argv",
    [
        ("--grading", "--op", "mlp"),
        ("--grading", "--threads", "1"),
        ("--grading", "--plot", "x.png"),
        ("--repeats", "3"),
    ],
)
def test_options_of_the_other_mode_are_usage_errors(argv, capsys, stand_ins):
    assert cli.run(parse(*argv)) == 2
    assert "--grading" in capsys.readouterr().err


def test_grading_with_no_exercises_folder_is_a_usage_error(tmp_path, capsys):
    assert cli.run(parse("--grading", "--exercises", str(tmp_path))) == 2
    assert "not an exercises folder" in capsys.readouterr().err


def test_the_grading_bench_does_not_import_torch_itself():
    code = (
        "import sys; from gradcheck_kit.bench import cli, grading; "
        "grading.to_table(grading.measure_grading([grading.GradingCommand('a', 'a', (sys.executable, '-c', 'pass'))], "
        "repeats=1, cwd='.')); assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
