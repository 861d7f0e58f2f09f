"""The training harness, exercise 6 grading and ``gradcheck-kit train``."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from gradcheck_kit.makemore import layers as reference
from gradcheck_kit.makemore import training
from gradcheck_kit.course.layers_grading import compare_checks, grade_calibration, grade_training_steps, train_to_target
from gradcheck_kit.sandbox.loading import load_module
from gradcheck_kit.makemore.names import load_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
LAYERS = load_module(ROOT / "solutions" / "ex5_layers.py")
STEPS = load_module(ROOT / "solutions" / "ex6_training.py")
SMALL = dict(vocab_size=27, n_hidden=16)


@pytest.fixture(scope="module")
def data():
    return load_dataset(limit=1000)


def failing(checks) -> dict[str, str]:
    return {c.name: c.problem for c in compare_checks(checks) if not c.ok}


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


def test_the_solution_trains_exactly_as_its_autograd_twin(data):
    checks = grade_training_steps(STEPS, LAYERS, steps=3, n_hidden=16, data=data)
    assert [c.name for c in checks[:3]] == ["losses", "C", "layers[0].weight"]
    assert any(c.name == "layers[16].running_var" for c in checks)
    assert failing(checks) == {}


def test_a_step_that_never_updates_the_embedding_is_caught_at_C(data):
    def step(C, layers, Xb, Yb, lr):
        return STEPS.train_step(C.clone(), layers, Xb, Yb, lr)

    wrong = failing(grade_training_steps(SimpleNamespace(train_step=step), LAYERS, steps=2, n_hidden=16, data=data))
    assert wrong["C"] == "mismatch"


def test_the_solution_reaches_the_loss_target(data):
    run = train_to_target(STEPS, LAYERS, steps=150, target=3.1, n_hidden=16, data=data)
    assert run.reached, run.message
    assert "reached the target 3.10" in run.message


def test_a_step_that_climbs_the_gradient_misses_the_loss_target(data):
    def step(C, layers, Xb, Yb, lr):
        return STEPS.train_step(C, layers, Xb, Yb, -lr)

    run = train_to_target(SimpleNamespace(train_step=step), LAYERS, steps=150, target=3.1, n_hidden=16, data=data)
    assert not run.reached
    assert "missed the target" in run.message


def test_the_solutions_calibration_matches_the_reference(data):
    checks = grade_calibration(STEPS, LAYERS, n_hidden=16, data=data)
    assert [c.name for c in checks[-2:]] == ["training", "dev loss"]
    assert failing(checks) == {}


def test_a_calibration_that_stays_in_training_mode_is_caught(data):
    def calibrate(C, layers, X):
        STEPS.calibrate(C, layers, X)
        for layer in layers:
            if hasattr(layer, "training"):
                layer.training = True

    wrong = failing(grade_calibration(SimpleNamespace(calibrate=calibrate), LAYERS, n_hidden=16, data=data))
    assert "training" in wrong


def test_untouched_exercise_6_stubs_raise_not_implemented(data):
    stub = load_module(ROOT / "exercises" / "ex6_training.py")
    with pytest.raises(NotImplementedError, match="^Exercise 6: train_step"):
        grade_training_steps(stub, LAYERS, steps=1, n_hidden=16, data=data)
    with pytest.raises(NotImplementedError, match="^Exercise 6: calibrate"):
        grade_calibration(stub, LAYERS, n_hidden=16, data=data)


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
