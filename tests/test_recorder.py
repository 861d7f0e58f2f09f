"""The recorder names every intermediate, reproduces autograd and replays single steps."""

from __future__ import annotations

import subprocess
import sys
import types
import warnings

import pytest
import torch

from gradcheck_kit import record
from gradcheck_kit.makemore.model import GRADED, Config, build

NOTEBOOK_CELL = """
emb = C[Xb]
embcat = emb.view(emb.shape[0], -1)
hprebn = embcat @ W1 + b1
bnmeani = 1/n*hprebn.sum(0, keepdim=True)
bndiff = hprebn - bnmeani
bndiff2 = bndiff**2
bnvar = 1/(n-1)*(bndiff2).sum(0, keepdim=True)
bnvar_inv = (bnvar + 1e-5)**-0.5
bnraw = bndiff * bnvar_inv
hpreact = bngain * bnraw + bnbias
h = torch.tanh(hpreact)
logits = h @ W2 + b2
logit_maxes = logits.max(1, keepdim=True).values
norm_logits = logits - logit_maxes
counts = norm_logits.exp()
counts_sum = counts.sum(1, keepdims=True)
counts_sum_inv = counts_sum**-1
probs = counts * counts_sum_inv
logprobs = probs.log()
loss = -logprobs[range(n), Yb].mean()
"""


def notebook_namespace(dtype=torch.float32, device="cpu"):
    fwd = build(Config(dtype=str(dtype).removeprefix("torch."), device=device))
    names = {
        name: getattr(fwd, name).detach().clone().requires_grad_()
        for name in ("C", "W1", "b1", "W2", "b2", "bngain", "bnbias")
    }
    return {"torch": torch, "Xb": fwd.Xb, "Yb": fwd.Yb, "n": fwd.n, **names}


def run_cell(namespace):
    """Run the notebook's forward pass at module level, as a notebook cell runs."""
    code = compile(
        "with record() as rec:\n" + "\n".join("    " + line for line in NOTEBOOK_CELL.strip().splitlines()),
        "<cell>",
        "exec",
    )
    namespace["record"] = record
    exec(code, namespace)
    return namespace["rec"]


def test_a_notebook_cell_records_every_intermediate_in_creation_order():
    rec = run_cell(notebook_namespace())
    expected = [line.split(" = ")[0] for line in NOTEBOOK_CELL.strip().splitlines()]
    assert list(rec.intermediates) == expected
    assert sorted(rec.leaves) == sorted(["C", "W1", "b1", "W2", "b2", "bngain", "bnbias"])


def test_a_function_body_is_recorded_the_same_way():
    fwd = build()
    assert set(GRADED) <= set(fwd.recording.tensors)


def test_grads_reproduce_autograd_bit_for_bit_without_touching_grad():
    namespace = notebook_namespace()
    rec = run_cell(namespace)
    loss = namespace["loss"]
    grads = rec.grads(loss)
    assert all(t.grad is None for t in rec.leaves.values())

    rec.retain_grad()
    loss.backward()
    for name in GRADED:
        assert torch.equal(grads[name], rec.tensors[name].grad), name


def test_direct_inputs_look_through_unnamed_temporaries():
    rec = build().recording
    assert set(rec.inputs["hprebn"]) == {"embcat", "W1", "b1"}
    assert set(rec.inputs["probs"]) == {"counts", "counts_sum_inv"}
    assert set(rec.inputs["hpreact"]) == {"bngain", "bnraw", "bnbias"}
    assert set(rec.consumers("counts")) == {"counts_sum", "probs"}


def test_local_steps_summed_over_consumers_give_the_total_gradient():
    fwd = build()
    rec, grads = fwd.recording, fwd.recording.grads(fwd.loss)
    for name in GRADED:
        total = sum(
            rec.local_vjp(c, torch.ones_like(fwd.loss) if c == "loss" else grads[c])[name] for c in rec.consumers(name)
        )
        assert torch.equal(total, grads[name]), name


def test_a_local_step_does_not_run_on_into_earlier_tensors():
    fwd = build()
    rec = fwd.recording
    step = rec.local_vjp("probs", torch.ones_like(fwd.probs))
    # d(counts * counts_sum_inv)/dcounts along this one edge is counts_sum_inv, broadcast.
    assert torch.equal(step["counts"], fwd.counts_sum_inv.detach().expand_as(fwd.counts))


def test_backward_order_puts_the_loss_side_first_and_parameters_after_their_step():
    order = build().recording.backward_order()
    assert order[:3] == ["loss", "logprobs", "probs"]
    assert order.index("W2") == order.index("h") + 1 or order.index("W2") > order.index("logits")
    assert order[-2:] == ["emb", "C"]


def test_a_name_bound_twice_keeps_the_last_tensor_and_says_so():
    x = torch.randn(3, requires_grad=True)
    with pytest.warns(UserWarning, match="'y' was bound to 2 different tensors"):
        with record() as rec:
            y = x * 2
            y = y + 1
    assert rec.rebound == {"y": 2}
    assert rec.intermediates["y"] is y
    assert rec.inputs["y"] == ("y#1",)
    assert "y#1" not in rec.tensors


def test_float64_forward_passes_are_recorded_in_float64():
    fwd = build(Config(dtype="float64"))
    assert all(g.dtype == torch.float64 for g in fwd.reference_grads.values())


def test_tracing_is_restored_after_the_block_even_when_it_raises():
    before = sys.gettrace()
    x = torch.randn(2, requires_grad=True)
    with pytest.raises(ZeroDivisionError):
        with record():
            y = x * 2  # noqa: F841
            raise ZeroDivisionError
    assert sys.gettrace() is before
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with record() as rec:
            z = x + 1  # noqa: F841
    assert list(rec.intermediates) == ["z"]


def test_check_reads_the_callers_d_variables_and_lists_what_is_missing(capsys):
    x = torch.randn(4, 3, requires_grad=True)
    with record() as rec:
        y = x.tanh()
        loss = (y * y).sum()
    dy = 2 * y.detach()  # noqa: F841
    dx = (1 - y.detach() ** 2) * 3  # wrong on purpose  # noqa: F841
    report = rec.check(loss)
    out = capsys.readouterr().out
    assert "y" in out and "x" in out
    assert report["y"].passed
    assert not report["x"].passed


def fake_ipython(monkeypatch, shell):
    """An imported IPython module whose get_ipython() returns ``shell``, as in a kernel (or None, as in a script)."""
    module = types.ModuleType("IPython")
    module.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", module)


def one_wrong_step():
    x = torch.randn(4, 3, requires_grad=True)
    with record() as rec:
        y = x.tanh()
        loss = (y * y).sum()
    return rec, loss, {"y": 2 * y.detach(), "x": None}


def test_check_in_ipython_prints_nothing_and_the_returned_report_shows_the_table_once(monkeypatch, capsys):
    fake_ipython(monkeypatch, shell=object())
    rec, loss, manual = one_wrong_step()

    report = rec.check(loss, manual)

    assert capsys.readouterr().out == ""  # the cell shows the returned report instead
    assert repr(report) == "<Report 'manual gradients vs autograd': 1/2 gradients match, 1 not started>"
    page = report._repr_html_()
    assert page.count("<tr>") == 3 and "not started" in page


def test_check_prints_the_table_when_ipython_is_imported_but_not_running(monkeypatch, capsys):
    fake_ipython(monkeypatch, shell=None)  # a plain script that imported IPython
    rec, loss, manual = one_wrong_step()

    report = rec.check(loss, manual)

    assert capsys.readouterr().out == str(report) + "\n"


def test_check_in_a_plain_script_prints_the_table_once(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        "import torch\nfrom gradcheck_kit import record\n"
        "x = torch.ones(2, requires_grad=True)\n"
        "with record() as rec:\n    y = x * 3\n    loss = y.sum()\n"
        "dy = torch.ones(2)\ndx = 3 * dy\n"
        "rec.check(loss)\n"
    )
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)

    assert run.returncode == 0, run.stderr
    assert run.stdout.count("manual gradients vs autograd") == 1
    assert run.stdout.rstrip().endswith("2/2 gradients match")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cuda_forward_passes_match_the_cpu_ones():
    cpu, cuda = build(), build(Config(device="cuda"))
    for name in GRADED:
        torch.testing.assert_close(cuda.reference_grads[name].cpu(), cpu.reference_grads[name])


def test_grads_still_work_after_a_plain_backward_freed_the_graph():
    namespace = notebook_namespace()
    rec = run_cell(namespace)
    expected = rec.grads(namespace["loss"])
    namespace["loss"].backward()  # frees the recorded graph's saved tensors
    after = rec.grads(namespace["loss"])
    for name in GRADED:
        assert torch.equal(after[name], expected[name]), name


def test_check_grades_steps_and_names_the_first_wrong_one(capsys):
    x = torch.randn(4, 3, requires_grad=True)
    with record() as rec:
        y = x.tanh()
        z = y * 3
        loss = z.sum()
    dz = torch.ones(4, 3)
    dy = 2 * dz  # wrong: should be 3 * dz
    dx = (1 - y.detach() ** 2) * dy  # right, given dy
    report = rec.check(loss, {"z": dz, "y": dy, "x": dx})
    assert report["z"].verdict == "exact"
    assert report["y"].verdict == "wrong" and "first wrong step" in report["y"].note
    assert report["x"].verdict == "inherited"
    assert "first wrong step" in capsys.readouterr().out


class Layer:
    def __init__(self, fan_in, fan_out, generator):
        self.weight = torch.randn(fan_in, fan_out, generator=generator).requires_grad_()

    def __call__(self, x):
        self.out = torch.tanh(x @ self.weight)
        return self.out


def test_layer_outputs_and_weights_are_named_by_attribute_in_a_loop():
    g = torch.Generator().manual_seed(0)
    layers = [Layer(4, 5, g), Layer(5, 5, g), Layer(5, 3, g)]
    x0 = torch.randn(2, 4, generator=g)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # `x = layer(x)` is the idiom: no rebinding warning
        with record() as rec:
            x = x0
            for layer in layers:
                x = layer(x)
            loss = x.sum()
    assert [n for n in rec.intermediates if n.startswith("layers")] == [
        "layers[0].out",
        "layers[1].out",
    ]
    assert rec.intermediates["x"] is layers[2].out
    assert {"layers[0].weight", "layers[1].weight", "layers[2].weight"} <= set(rec.leaves)
    assert rec.inputs["layers[1].out"] == ("layers[0].out", "layers[1].weight")
    grads = rec.grads(loss)
    assert grads["layers[1].out"].shape == (2, 5)
    assert grads["layers[0].weight"].shape == (4, 5)
