"""Network health: activation and gradient statistics, update ratios, warnings, tables and figures."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from gradcheck_kit.makemore import training
from gradcheck_kit.makemore.health import Diagnostics, WeightStats, measure, snapshot
from gradcheck_kit.makemore.names import load_dataset
from gradcheck_kit.sandbox.loading import load_module

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
LAYERS = load_module(ROOT / "solutions" / "ex5_layers.py")
STEPS = load_module(ROOT / "solutions" / "ex6_training.py")


@pytest.fixture(scope="module")
def data():
    return load_dataset(limit=500)


@pytest.fixture(scope="module")
def batch(data):
    return next(training.batches(data.Xtr, data.Ytr, 1, 32, seed=1))


def model(**kwargs):
    return training.build_mlp(LAYERS, vocab_size=27, n_hidden=32, **kwargs)


def with_update_ratios(health: Diagnostics, name: str, log10_ratio: float) -> Diagnostics:
    weights = [
        WeightStats(
            w.name, w.shape, w.grad_mean, w.grad_std, w.grad_to_data, 10**log10_ratio if w.name == name else 1e-3
        )
        for w in health.weights
    ]
    return Diagnostics(health.layers, weights, health.snapshot)


def test_the_manual_snapshot_agrees_with_autograd(batch):
    net = model()
    manual = snapshot(net, *batch)
    auto = snapshot(net, *batch, backward="autograd")
    assert manual.loss == pytest.approx(auto.loss, rel=1e-6)
    for (name, _, out, dout), (_, _, out_ref, dout_ref) in zip(manual.layers, auto.layers, strict=True):
        assert torch.allclose(out, out_ref, atol=1e-5), name
        assert torch.allclose(dout, dout_ref, rtol=1e-4, atol=1e-7), name
    for (name, _, grad), (_, _, grad_ref) in zip(manual.parameters, auto.parameters, strict=True):
        assert torch.allclose(grad, grad_ref, rtol=1e-4, atol=1e-7), name


def test_a_snapshot_leaves_the_running_statistics_alone(batch):
    net = model()
    before = [b.clone() for _, b in net.named_buffers()]
    snapshot(net, *batch)
    assert all(torch.equal(b, a) for (_, b), a in zip(net.named_buffers(), before, strict=True))


def test_an_unknown_backward_is_refused(batch):
    with pytest.raises(ValueError, match="'manual' or 'autograd'"):
        snapshot(model(), *batch, backward="numeric")


def test_statistics_are_those_the_notebook_plots(batch):
    net = model()
    health = measure(net, *batch)
    assert [s.name for s in health.layers] == ["layers[2]", "layers[5]", "layers[8]", "layers[11]", "layers[14]"]
    _, _, t, dt = health.snapshot.layers[2]
    first = health.layers[0]
    assert first.kind == "Tanh"
    assert first.mean == pytest.approx(t.mean().item())
    assert first.std == pytest.approx(t.std().item())
    assert first.saturation == pytest.approx((t.abs() > 0.97).float().mean().item())
    assert first.grad_std == pytest.approx(dt.std().item())
    assert [w.name for w in health.weights] == ["C"] + [f"layers[{i}].weight" for i in (0, 3, 6, 9, 12, 15)]
    name, data, grad = health.snapshot.parameters[1]
    assert health.weights[1].grad_to_data == pytest.approx((grad.std() / data.std()).item())
    assert all(w.update_to_data is None for w in health.weights)


def test_a_well_initialised_network_raises_no_warning(batch):
    assert measure(model(), *batch).warnings() == []


def test_saturation_above_five_percent_is_a_warning_naming_the_layer(batch):
    net = model()
    with torch.no_grad():
        for layer in net.layers:
            if hasattr(layer, "gamma"):
                layer.gamma *= 5  # pushes every tanh deep into its tails
    health = measure(net, *batch)
    warnings = health.warnings()
    assert all(s.saturation > 0.05 for s in health.layers)
    assert len(warnings) == 5
    assert warnings[0].startswith("layers[2] (Tanh): ")
    assert "of the activations are saturated (|t| > 0.97), above 5%" in warnings[0]


@pytest.mark.parametrize(
    "log10_ratio, expected",
    [(-3.0, None), (-2.3, None), (-3.9, None), (-1.0, "far above the 1e-03 guide: lower the learning rate"),
     (-5.0, "far below the 1e-03 guide: raise the learning rate")],
)  # fmt: skip
def test_update_ratios_far_from_one_in_a_thousand_are_warnings(batch, log10_ratio, expected):
    health = with_update_ratios(measure(model(), *batch), "layers[3].weight", log10_ratio)
    warnings = health.warnings()
    if expected is None:
        assert warnings == []
    else:
        assert len(warnings) == 1
        assert warnings[0].startswith("layers[3].weight: updates are ")
        assert expected in warnings[0]


def test_the_update_ratio_is_the_median_over_the_last_half_of_the_run(data, batch):
    net = model()
    log = training.train(net, STEPS.train_step, data.Xtr, data.Ytr, steps=6, track_updates=True)
    health = measure(net, *batch, log)
    history = log.update_ratios["layers[0].weight"]
    median = sorted(history[3:])[1]
    assert health.weights[1].update_to_data == pytest.approx(10**median)
    assert health.update_ratios["layers[0].weight"] == history
    assert health.losses == log.losses


def test_a_diverged_run_is_a_warning(batch):
    health = measure(model(), *batch)
    health = Diagnostics(health.layers, health.weights, health.snapshot, {}, [3.3, math.nan])
    assert health.warnings() == ["the loss became NaN or infinite: training diverged"]


def test_the_text_report_has_the_three_tables_and_the_warnings(batch):
    net = model()
    with torch.no_grad():
        net.layers[1].gamma *= 5
    text = measure(net, *batch).to_text()
    lines = text.splitlines()
    assert lines[0] == "activations (saturated: |t| > 0.97)"
    assert lines[1].split() == ["layer", "kind", "mean", "std", "saturated"]
    assert lines[3].startswith("layers[2]   Tanh")
    assert "gradients of the activations" in lines
    assert "weights (update:data should be near 1e-03)" in lines
    assert any(line.startswith("C ") and "27x10" in line for line in lines)
    assert lines[-1].startswith("warning: layers[2] (Tanh): ")


def test_plots_are_the_notebooks_four_figures(tmp_path, data, batch):
    pytest.importorskip("matplotlib")
    net = model()
    log = training.train(net, STEPS.train_step, data.Xtr, data.Ytr, steps=3)
    paths = measure(net, *batch, log).plot(tmp_path / "figures")
    assert [p.name for p in paths] == ["activations.png", "gradients.png", "update_ratios.png", "loss.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plotting_without_matplotlib_says_how_to_install_it(tmp_path, monkeypatch, batch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'gradcheck-kit\[plots\]'"):
        measure(model(), *batch).plot(tmp_path)
    assert not any(tmp_path.iterdir())


def test_the_module_loads_without_matplotlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    module = load_module(ROOT / "gradcheck_kit" / "makemore" / "health.py")
    assert hasattr(module, "measure")


def test_a_weight_that_never_moves_is_a_warning(data, batch):
    def step(C, layers, Xb, Yb, lr):
        frozen = layers[0].weight.clone()
        loss = STEPS.train_step(C, layers, Xb, Yb, lr)
        layers[0].weight.copy_(frozen)
        return loss

    net = model()
    log = training.train(net, step, data.Xtr, data.Ytr, steps=2)
    warnings = measure(net, *batch, log).warnings()
    assert len(warnings) == 1
    assert warnings[0].startswith("layers[0].weight: updates are 0.0e+00 of the data")
