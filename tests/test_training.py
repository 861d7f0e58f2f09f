"""The training harness, exercise 6 grading and ``gradcheck-kit train``."""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import pytest
import torch

from gradcheck_kit.course.catalogue import Hints
from gradcheck_kit.course.grader import Grader, Result
from gradcheck_kit.course.layers import LAYER_CHECKS
from gradcheck_kit.makemore import layers as reference
from gradcheck_kit.makemore import training
from gradcheck_kit.makemore.names import load_dataset
from gradcheck_kit.report import NOT_STARTED
from gradcheck_kit.sandbox.box import Sandbox
from gradcheck_kit.sandbox.loading import load_module
from gradcheck_kit.sandbox.policy import ExerciseSandbox

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
LAYERS = load_module(ROOT / "solutions" / "ex5_layers.py")
STEPS = load_module(ROOT / "solutions" / "ex6_training.py")
SMALL = dict(vocab_size=27, n_hidden=16)


@pytest.fixture(scope="module")
def data():
    return load_dataset(limit=1000)


# -- the model -------------------------------------------------------------------


def test_build_mlp_stacks_five_blocks_and_an_output_layer_as_the_notebook():
    model = training.build_mlp(LAYERS, **SMALL)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Linear", "BatchNorm1d", "Tanh"] * 5 + ["Linear", "BatchNorm1d"]
    assert model.C.shape == (27, 10)
    assert all(layer.bias is None for layer in model.layers if isinstance(layer, LAYERS.Linear))
    assert torch.allclose(model.layers[-1].gamma, torch.full((27,), 0.1))


def test_every_linear_weight_carries_the_tanh_gain_over_the_root_of_the_fan_in():
    # The notebook scales every Linear before the last layer, the output Linear included.
    model = training.build_mlp(LAYERS, vocab_size=27, n_hidden=200)
    first, last = model.layers[0].weight, model.layers[15].weight
    assert first.std().item() == pytest.approx((5 / 3) / 30**0.5, rel=0.1)
    assert last.std().item() == pytest.approx((5 / 3) / 200**0.5, rel=0.1)


def test_the_same_seed_builds_the_same_model_from_the_solution_and_the_reference_layers():
    mine = training.build_mlp(LAYERS, **SMALL, seed=7)
    ref = training.build_mlp(reference, **SMALL, seed=7)
    for (name, p), (_, q) in zip(mine.named_parameters(), ref.named_parameters(), strict=True):
        assert torch.equal(p, q), name
    assert not torch.equal(mine.C, training.build_mlp(LAYERS, **SMALL, seed=8).C)


def test_building_a_model_leaves_the_global_random_state_alone():
    state = torch.random.get_rng_state()
    training.build_mlp(LAYERS, **SMALL)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_named_parameters_and_buffers_say_where_each_tensor_lives():
    model = training.build_mlp(LAYERS, **SMALL)
    names = [name for name, _ in model.named_parameters()]
    assert names[:4] == ["C", "layers[0].weight", "layers[1].gamma", "layers[1].beta"]
    assert len(names) == len(model.parameters()) == 1 + 6 + 6 * 2
    assert [name for name, _ in model.named_buffers()][:2] == ["layers[1].running_mean", "layers[1].running_var"]


def test_the_autograd_twin_is_a_copy_that_trains_without_touching_the_model(data):
    model = training.build_mlp(LAYERS, **SMALL)
    before = [p.clone() for p in model.parameters()]
    twin = training.autograd_twin(model)
    assert all(p.requires_grad for p in twin.parameters())
    training.train(twin, training.autograd_step, data.Xtr, data.Ytr, steps=3, track_updates=False)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    assert not torch.equal(twin.C.detach(), model.C)


# -- the training loop -----------------------------------------------------------


def test_learning_rate_drops_tenfold_from_decay_at():
    assert [training.learning_rate(i, 0.1, decay_at=2) for i in range(4)] == [0.1, 0.1, 0.01, 0.01]
    assert training.learning_rate(10**6, 0.1) == 0.1


def test_train_logs_the_loss_and_the_update_ratio_of_every_parameter_at_every_step(data):
    model = training.build_mlp(LAYERS, **SMALL)
    log = training.train(model, STEPS.train_step, data.Xtr, data.Ytr, steps=4, lr=0.1, decay_at=2)
    assert len(log.losses) == 4 and log.lrs == [0.1, 0.1, 0.01, 0.01]
    assert set(log.update_ratios) == {name for name, _ in model.named_parameters()}
    ratios = log.update_ratios["layers[0].weight"]
    assert len(ratios) == 4
    # A tenth of the learning rate makes each update about a tenth as large.
    assert ratios[3] < ratios[1] - 0.5


def test_train_reports_progress_at_the_first_step_every_tenth_and_the_last(data):
    seen = []
    model = training.build_mlp(LAYERS, **SMALL)
    training.train(
        model, STEPS.train_step, data.Xtr, data.Ytr, steps=25, track_updates=False,
        progress=lambda i, total, loss, seconds: seen.append((i, total)),
    )  # fmt: skip
    assert seen == [(1, 25), (2, 25), (4, 25), (6, 25), (8, 25), (10, 25), (12, 25), (14, 25), (16, 25),
                    (18, 25), (20, 25), (22, 25), (24, 25), (25, 25)]  # fmt: skip


def test_a_manual_step_runs_without_autograd(data):
    def cheating_step(C, layers, Xb, Yb, lr):
        logits = training.MLP(C, layers).forward(Xb)
        torch.nn.functional.cross_entropy(logits, Yb).backward()
        return 0.0

    model = training.build_mlp(LAYERS, **SMALL)
    with pytest.raises(RuntimeError, match="does not require grad"):
        training.train(model, cheating_step, data.Xtr, data.Ytr, steps=1)


def test_calibration_gives_each_batchnorm_the_statistics_of_the_whole_set_and_eval_mode(data):
    model = training.calibrate_batchnorm(training.build_mlp(LAYERS, **SMALL), data.Xtr)
    x = model.C[data.Xtr].view(len(data.Xtr), -1)
    assert torch.allclose(model.layers[1].running_mean, (x @ model.layers[0].weight).mean(0), atol=1e-6)
    assert not any(getattr(layer, "training", False) for layer in model.layers)


def test_an_untrained_model_scores_about_a_uniform_guess(data):
    model = training.calibrate_batchnorm(training.build_mlp(LAYERS, **SMALL), data.Xtr)
    assert training.split_loss(model, data.Xdev, data.Ydev) == pytest.approx(math.log(27), abs=0.1)


def test_sampling_gives_names_from_the_vocabulary_and_restores_the_mode(data):
    model = training.build_mlp(LAYERS, **SMALL)
    names = training.sample(model, data.itos, count=5, max_length=12)
    again = training.sample(model, data.itos, count=5, max_length=12)
    assert names == again and len(names) == 5
    assert all(set(name) <= set("abcdefghijklmnopqrstuvwxyz") and len(name) <= 12 for name in names)
    assert all(layer.training for layer in model.layers if hasattr(layer, "training"))


# -- exercise 6 grading ----------------------------------------------------------
# Through the grader, as in a student's run, with the sandbox in this process for speed.


REFERENCE_LAYERS_NOTE = (
    "graded on the reference layers: your exercise 5 layers do not pass yet, and one mistake costs points once"
)


def in_process_grader(folder: Path) -> Grader:
    return Grader(folder, ExerciseSandbox(Sandbox(isolate=False), {}, 20.0), Hints())


def grade(grader: Grader, check: str) -> Result:
    return grader.grade_layers(LAYER_CHECKS[check])


def failing(result: Result) -> dict[str, str]:
    """Each row that does not pass, by its label, with what is wrong with it."""
    return {row.label: row.comparison.problem or row.verdict for row in result.report.rows if not row.passed}


@pytest.fixture(scope="module")
def solution() -> Grader:
    return in_process_grader(ROOT / "solutions")


@pytest.fixture
def changed(tmp_path: Path):
    """``changed(file, (old, new), ...)``: a grader of the solutions with ``old`` replaced by ``new`` in ``file``."""

    def change(file: str, *replacements: tuple[str, str]) -> Grader:
        for source in (ROOT / "solutions").glob("ex*.py"):
            shutil.copy(source, tmp_path)
        path = tmp_path / file
        text = path.read_text(encoding="utf-8")
        for old, new in replacements:
            assert text.count(old) == 1, f"{old!r} is not in {file} exactly once"
            text = text.replace(old, new)
        path.write_text(text, encoding="utf-8")
        return in_process_grader(tmp_path)

    return change


def test_the_solution_trains_exactly_as_its_autograd_twin(solution):
    result = grade(solution, "training_steps")
    rows = result.report.rows
    first = [(row.label, row.kind) for row in rows[:3]]
    assert first == [("losses", "metric"), ("C", "value"), ("layers[0].weight", "value")]
    assert result.report["layers[16].running_var"].kind == "buffer"
    assert failing(result) == {}
    assert result.report.title == LAYER_CHECKS["training_steps"].title


def test_a_step_that_never_updates_the_embedding_is_caught_at_C(changed):
    result = grade(changed("ex6_training.py", ("    C -= lr * dC\n", "")), "training_steps")
    assert failing(result)["C"] == "mismatch"


def test_the_solution_reaches_the_loss_target(solution):
    (row,) = grade(solution, "loss_target").report.rows
    assert (row.label, row.kind, row.passed) == ("dev loss", "metric", True)
    assert "reached the target 3.00" in row.note


def test_a_step_that_climbs_the_gradient_misses_the_loss_target(changed):
    grader = changed("ex6_training.py", ("C -= lr * dC", "C += lr * dC"), ("p -= lr * grad", "p += lr * grad"))
    (row,) = grade(grader, "loss_target").report.rows
    assert not row.passed
    assert "missed the target 3.00" in row.note


def test_the_solutions_calibration_matches_the_reference(solution):
    result = grade(solution, "calibration")
    assert [(row.label, row.kind) for row in result.report.rows[-2:]] == [("training", "flag"), ("dev loss", "metric")]
    assert result.report["layers[1].running_mean"].kind == "buffer"
    assert failing(result) == {}


def test_a_calibration_that_stays_in_training_mode_is_caught(changed):
    last = "            layer.training = False\n        x = layer(x)\n"
    stays = last + "    for layer in layers:\n        layer.training = True\n"
    result = grade(changed("ex6_training.py", (last, stays)), "calibration")
    assert failing(result) == {"training": "mismatch"}
    assert result.report["training"].explanation == (
        "calibrate left the layers in training mode (6 of 6 batchnorm layers do not have training = False after "
        "it; it must leave every batchnorm in eval mode)"
    )


def test_untouched_exercise_6_stubs_are_not_started():
    grader = in_process_grader(ROOT / "exercises")
    stubs = {"training_steps": "train_step", "calibration": "calibrate", "loss_target": "train_step"}
    for check, function in stubs.items():
        result = grade(grader, check)
        assert result.status == "not_started", check
        assert result.outcome.message.startswith(f"Exercise 6: {function}"), check
        assert {row.verdict for row in result.report.rows} == {NOT_STARTED}


def test_exercise_6_runs_on_the_reference_layers_when_exercise_5_is_wrong_and_passes_with_a_right_train_step(
    changed,
):
    # The biased variance in BatchNorm1d.backward: on these layers no train_step could match autograd.
    grader = changed(
        "ex5_layers.py", ("n * dxhat - dxhat.sum(0) - n / (n - 1) * self.xhat", "n * dxhat - dxhat.sum(0) - self.xhat")
    )
    assert not grade(grader, "batchnorm_training").report.passed
    for check in ("training_steps", "calibration", "loss_target"):
        result = grade(grader, check)
        assert failing(result) == {}, check
        assert result.report.title == f"{LAYER_CHECKS[check].title} ({REFERENCE_LAYERS_NOTE})"


# -- gradcheck-kit train ---------------------------------------------------------


def train_cli(*argv: str) -> int:
    from gradcheck_kit.cli import main

    return main(["train", *argv])


def test_train_prints_progress_losses_samples_and_the_health_tables(capsys):
    rc = train_cli("--impl", str(ROOT / "solutions"), "--steps", "20", "--n-hidden", "16", "--samples", "3")
    out = capsys.readouterr().out
    assert rc == 0
    assert "step  1/20  loss 3." in out and "step 20/20" in out
    assert "dev loss" in out and "samples: " in out
    assert "activations (saturated: |t| > 0.97)" in out and "layers[14]  Tanh" in out
    assert "update:data" in out


def test_train_with_autograd_follows_the_solution_step_for_step(capsys):
    common = ("--steps", "5", "--n-hidden", "16", "--samples", "0")
    assert train_cli("--impl", "autograd", *common) == 0
    with_autograd = capsys.readouterr().out.splitlines()
    assert train_cli("--impl", str(ROOT / "solutions"), *common) == 0
    with_solution = capsys.readouterr().out.splitlines()
    assert [line.split("(")[0] for line in with_autograd if line.startswith("step")] == [
        line.split("(")[0] for line in with_solution if line.startswith("step")
    ]


def test_train_reads_a_names_file_given_by_path(tmp_path, capsys):
    path = tmp_path / "names.txt"
    path.write_text("emma\nolivia\nava\nisabella\nsophia\ncharlotte\nmia\namelia\nharper\nevelyn\n")
    assert train_cli("--impl", "autograd", "--data", str(path), "--steps", "2", "--n-hidden", "8") == 0
    assert f"data: {path}:" in capsys.readouterr().out


def test_train_on_the_untouched_stubs_says_not_started(capsys):
    assert train_cli("--impl", str(ROOT / "exercises"), "--steps", "2") == 1
    assert "not started: Exercise" in capsys.readouterr().err


def test_train_names_the_implementation_line_that_raised(tmp_path, capsys):
    (tmp_path / "ex5_layers.py").write_text((ROOT / "solutions" / "ex5_layers.py").read_text())
    (tmp_path / "ex6_training.py").write_text("def train_step(C, layers, Xb, Yb, lr):\n    return 1 / 0\n")
    assert train_cli("--impl", str(tmp_path), "--steps", "2", "--n-hidden", "8") == 1
    assert "ZeroDivisionError: division by zero (at ex6_training.py:2)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (("--impl", "no/such/folder"), "ex5_layers.py not found"),
        (("--impl", "autograd", "--data", "no/such/names.txt"), "names.txt"),
        (("--impl", "autograd", "--steps", "0"), "--steps must be at least 1"),
    ],
)
def test_train_usage_errors_exit_2(capsys, argv, message):
    assert train_cli(*argv) == 2
    assert message in capsys.readouterr().err


def test_train_plot_without_matplotlib_is_a_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert train_cli("--impl", "autograd", "--plot", str(tmp_path)) == 2
    assert "pip install 'gradcheck-kit[plots]'" in capsys.readouterr().err


def test_train_plot_writes_the_figures(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rc = train_cli("--impl", "autograd", "--steps", "3", "--n-hidden", "8", "--samples", "0", "--plot", str(tmp_path))
    assert rc == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "activations.png", "gradients.png", "loss.png", "update_ratios.png"
    ]  # fmt: skip
    assert "figures: " in capsys.readouterr().out
