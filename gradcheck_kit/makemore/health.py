"""The health of a layered network, as the batchnorm notebook plots it.

From one forward and backward pass (a :class:`Snapshot`) and, optionally, the
:class:`~gradcheck_kit.makemore.training.TrainingLog` of a run:

* each tanh layer's activation mean, std and saturation (``|t| > 0.97``);
* the mean and std of the gradient of each tanh layer's output;
* each weight matrix's gradient mean and std and its grad:data ratio;
* each weight matrix's update:data ratio over the training steps, which
  should hover around 1e-3.

:meth:`Diagnostics.to_text` prints the tables and the warnings,
:meth:`Diagnostics.plot` draws the notebook's figures as PNG files (matplotlib,
the ``plots`` extra, is imported only there).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gradcheck_kit.makemore.training import MLP, TrainingLog, autograd_twin, clone_model

__all__ = [
    "PLOTS_HINT",
    "SATURATION",
    "SATURATION_LIMIT",
    "UPDATE_RATIO_GUIDE",
    "UPDATE_RATIO_SPREAD",
    "Diagnostics",
    "LayerStats",
    "Snapshot",
    "WeightStats",
    "measure",
    "snapshot",
]

SATURATION = 0.97
"""A tanh output beyond this magnitude counts as saturated: its local gradient is below 6%."""
SATURATION_LIMIT = 0.05
"""Warn when more than this share of a tanh layer's outputs is saturated."""
UPDATE_RATIO_GUIDE = 1e-3
"""The rough guide for std(update) / std(data) per step."""
UPDATE_RATIO_SPREAD = 10.0
"""Warn when a weight's typical update:data ratio is further than this factor from the guide."""

PLOTS_HINT = "PNG figures need matplotlib, the 'plots' extra: pip install 'gradcheck-kit[plots]'"


@dataclass(frozen=True)
class Snapshot:
    """One forward and backward pass of a model on one minibatch.

    Attributes:
        layers: ``(name, kind, out, dout)`` for every layer: its output and the
            gradient of the loss with respect to it.
        parameters: ``(name, data, grad)`` for every parameter.
        loss: the minibatch loss.
    """

    layers: list[tuple[str, str, torch.Tensor, torch.Tensor]]
    parameters: list[tuple[str, torch.Tensor, torch.Tensor | None]]
    loss: float


def _kind(layer: Any) -> str:
    return type(layer).__name__


@torch.no_grad()
def snapshot(model: MLP, Xb: torch.Tensor, Yb: torch.Tensor, *, backward: str | None = None) -> Snapshot:
    """Run one forward and backward pass on a copy of ``model`` and keep every layer's output and gradient.

    The copy keeps the pass from moving the model's running statistics.

    Args:
        model: the model, in training mode as during training.
        Xb, Yb: the minibatch.
        backward: ``"manual"`` chains the layers' own ``backward``; ``"autograd"``
            runs autograd on a twin. Default: manual, autograd for an autograd model.
    """
    if backward is None:
        backward = "autograd" if model.autograd else "manual"
    if backward == "autograd":
        with torch.enable_grad():
            twin = autograd_twin(model)
            logits = twin.forward(Xb)
            for layer in twin.layers:
                layer.out.retain_grad()
            loss = F.cross_entropy(logits, Yb)
            loss.backward()
        outs = [(layer.out.detach(), layer.out.grad) for layer in twin.layers]
        params = [(name, p.detach(), p.grad) for name, p in twin.named_parameters()]
        names = [_kind(layer) for layer in twin.layers]
    elif backward == "manual":
        clone = clone_model(model)
        x = clone.C[Xb].view(Xb.shape[0], -1)
        forward = []
        for layer in clone.layers:
            x = layer(x)
            forward.append(x)
        loss = F.cross_entropy(x, Yb)
        n = x.shape[0]
        dx = F.softmax(x, dim=1)
        dx[range(n), Yb] -= 1
        dx /= n
        douts: list[torch.Tensor] = [dx] * len(clone.layers)
        for i in reversed(range(len(clone.layers))):
            douts[i] = dx
            dx = clone.layers[i].backward(dx)
        outs = list(zip(forward, douts, strict=True))
        grads = [g for layer in clone.layers for g in layer.grads()]
        dC = torch.zeros_like(clone.C).index_add_(0, Xb.reshape(-1), dx.reshape(-1, clone.C.shape[1]))
        params = [(name, p, g) for (name, p), g in zip(clone.named_parameters(), [dC, *grads], strict=False)]
        names = [_kind(layer) for layer in clone.layers]
    else:
        raise ValueError(f"backward={backward!r}: use 'manual' or 'autograd'")
    layers = [(f"layers[{i}]", kind, out, dout) for i, (kind, (out, dout)) in enumerate(zip(names, outs, strict=True))]
    return Snapshot(layers, params, loss.item())


@dataclass(frozen=True)
class LayerStats:
    """Activation and gradient statistics of one layer's output."""

    name: str
    kind: str
    mean: float
    std: float
    saturation: float
    grad_mean: float
    grad_std: float


@dataclass(frozen=True)
class WeightStats:
    """Gradient statistics of one weight matrix, and its typical update:data ratio (None without a run)."""

    name: str
    shape: tuple[int, ...]
    grad_mean: float
    grad_std: float
    grad_to_data: float
    update_to_data: float | None


@dataclass(frozen=True)
class Diagnostics:
    """The statistics of :func:`measure`, with warnings, a text table and figures.

    Attributes:
        layers: the tanh layers' statistics.
        weights: the statistics of every 2-D parameter (the weights and C).
        snapshot: the pass they were measured on.
        update_ratios: log10 update:data ratio per step of every 2-D parameter.
        losses: the minibatch loss of every step of the run.
    """

    layers: list[LayerStats]
    weights: list[WeightStats]
    snapshot: Snapshot
    update_ratios: dict[str, list[float]] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)

    def warnings(self) -> list[str]:
        """One line per layer that saturates too much and per weight whose updates stray from 1e-3."""
        found = []
        for s in self.layers:
            if s.saturation > SATURATION_LIMIT:
                found.append(
                    f"{s.name} ({s.kind}): {s.saturation:.1%} of the activations are saturated "
                    f"(|t| > {SATURATION}), above {SATURATION_LIMIT:.0%}: little gradient flows back through "
                    "them; scale down the weights that feed it, or normalise its input"
                )
        low, high = UPDATE_RATIO_GUIDE / UPDATE_RATIO_SPREAD, UPDATE_RATIO_GUIDE * UPDATE_RATIO_SPREAD
        for w in self.weights:
            r = w.update_to_data
            if r is not None and not low <= r <= high:
                direction = "above" if r > high else "below"
                advice = "lower the learning rate" if r > high else "raise the learning rate or check the init"
                found.append(
                    f"{w.name}: updates are {r:.1e} of the data (median over the last half of the run), "
                    f"far {direction} the {UPDATE_RATIO_GUIDE:.0e} guide: {advice}"
                )
        if any(not math.isfinite(loss) for loss in self.losses):
            found.append("the loss became NaN or infinite: training diverged")
        return found

    def to_text(self) -> str:
        """The notebook's statistics as three tables, followed by the warnings."""
        from tabulate import tabulate

        acts = tabulate(
            [[s.name, s.kind, f"{s.mean:+.2f}", f"{s.std:.2f}", f"{s.saturation:.2%}"] for s in self.layers],
            headers=["layer", "kind", "mean", "std", "saturated"],
            disable_numparse=True,
            colalign=("left", "left", "right", "right", "right"),
        )
        grads = tabulate(
            [[s.name, s.kind, f"{s.grad_mean:+.2e}", f"{s.grad_std:.2e}"] for s in self.layers],
            headers=["layer", "kind", "grad mean", "grad std"],
            disable_numparse=True,
            colalign=("left", "left", "right", "right"),
        )
        weights = tabulate(
            [
                [
                    w.name,
                    "x".join(map(str, w.shape)),
                    f"{w.grad_mean:+.2e}",
                    f"{w.grad_std:.2e}",
                    f"{w.grad_to_data:.2e}",
                    "" if w.update_to_data is None else f"{w.update_to_data:.2e}",
                ]
                for w in self.weights
            ],
            headers=["weight", "shape", "grad mean", "grad std", "grad:data", "update:data"],
            disable_numparse=True,
            colalign=("left", "left", "right", "right", "right", "right"),
        )
        parts = [
            f"activations (saturated: |t| > {SATURATION})\n{acts}",
            f"gradients of the activations\n{grads}",
            f"weights (update:data should be near {UPDATE_RATIO_GUIDE:.0e})\n{weights}",
        ]
        warnings = self.warnings()
        parts.append("\n".join(f"warning: {w}" for w in warnings) if warnings else "no warnings")
        return "\n\n".join(parts)

    def __str__(self) -> str:
        return self.to_text()

    def plot(self, directory: str | Path) -> list[Path]:
        """Write the notebook's figures as PNG files into ``directory``; return their paths.

        ``activations.png`` and ``gradients.png`` hold a histogram of each tanh
        layer's outputs and their gradients; ``update_ratios.png`` the log10
        update:data ratio of every weight over the steps, with the 1e-3 guide line;
        ``loss.png`` the log10 minibatch loss.

        Raises:
            ModuleNotFoundError: when matplotlib is not installed, saying how to get it.
        """
        try:
            from matplotlib.figure import Figure
        except ImportError as error:
            raise ModuleNotFoundError(PLOTS_HINT, name="matplotlib") from error

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        by_name = {name: (out, dout) for name, _, out, dout in self.snapshot.layers}

        for filename, title, pick, label in (
            (
                "activations.png",
                "activation distribution",
                0,
                lambda s: f"{s.name} ({s.kind}): mean {s.mean:+.2f}, std {s.std:.2f}, saturated {s.saturation:.2%}",
            ),
            (
                "gradients.png",
                "gradient distribution",
                1,
                lambda s: f"{s.name} ({s.kind}): mean {s.grad_mean:+.2e}, std {s.grad_std:.2e}",
            ),
        ):
            fig = Figure(figsize=(12, 4))
            ax = fig.add_subplot()
            for s in self.layers:
                values = by_name[s.name][pick].detach().float().flatten()
                hy, hx = torch.histogram(values, bins=100, density=True)
                ax.plot(hx[:-1].tolist(), hy.tolist(), label=label(s))
            ax.set_title(title)
            ax.legend(fontsize="small")
            written.append(_save(fig, directory / filename))

        fig = Figure(figsize=(12, 4))
        ax = fig.add_subplot()
        for w in self.weights:
            ratios = self.update_ratios.get(w.name)
            if ratios:
                ax.plot(ratios, label=f"{w.name} {tuple(w.shape)}")
        ax.axhline(math.log10(UPDATE_RATIO_GUIDE), color="k", label=f"guide {UPDATE_RATIO_GUIDE:.0e}")
        ax.set_title("update:data ratio per step (log10)")
        ax.set_xlabel("step")
        ax.legend(fontsize="small")
        written.append(_save(fig, directory / "update_ratios.png"))

        fig = Figure(figsize=(12, 4))
        ax = fig.add_subplot()
        ax.plot([math.log10(x) if x > 0 and math.isfinite(x) else math.nan for x in self.losses])
        ax.set_title("minibatch loss per step (log10)")
        ax.set_xlabel("step")
        written.append(_save(fig, directory / "loss.png"))
        return written


def _save(fig: Any, path: Path) -> Path:
    # Fixed margins: tight_layout would measure every label first and double the time.
    fig.subplots_adjust(left=0.06, right=0.98, top=0.9, bottom=0.12)
    fig.savefig(path, dpi=100)
    return path


def _median(values: list[float]) -> float | None:
    # -inf is a step that left the weight alone, which is worth a warning; NaN says nothing.
    known = [v for v in values if not math.isnan(v)]
    return statistics.median(known) if known else None


def measure(
    model: MLP,
    Xb: torch.Tensor,
    Yb: torch.Tensor,
    log: TrainingLog | None = None,
    *,
    backward: str | None = None,
    kinds: tuple[str, ...] = ("Tanh",),
) -> Diagnostics:
    """Measure a model's health on one minibatch, and its update ratios over a run.

    Args:
        model: the model, after (or during) training.
        Xb, Yb: the minibatch of the snapshot.
        log: the run's log, for the update:data ratios and the losses.
        backward: how the snapshot gets its gradients (see :func:`snapshot`).
        kinds: the layer kinds whose outputs are described, by class name.
    """
    snap = snapshot(model, Xb, Yb, backward=backward)
    layers = []
    for name, kind, out, dout in snap.layers:
        if kind not in kinds:
            continue
        out, dout = out.detach().float(), dout.detach().float()
        layers.append(
            LayerStats(
                name,
                kind,
                out.mean().item(),
                out.std().item(),
                (out.abs() > SATURATION).float().mean().item(),
                dout.mean().item(),
                dout.std().item(),
            )
        )
    ratios = log.update_ratios if log is not None else {}
    weights = []
    kept: dict[str, list[float]] = {}
    for name, data, grad in snap.parameters:
        if data.ndim != 2:
            continue
        history = ratios.get(name, [])
        recent = history[len(history) // 2 :]
        median = _median(recent)
        kept[name] = history
        # A layer whose backward left a gradient out has no statistics to show.
        g = torch.full_like(data, math.nan) if grad is None else grad.detach().float()
        weights.append(
            WeightStats(
                name,
                tuple(data.shape),
                g.mean().item(),
                g.std().item(),
                (g.std() / data.std()).item(),
                None if median is None else 10**median,
            )
        )
    losses = list(log.losses) if log is not None else []
    return Diagnostics(layers, weights, snap, kept, losses)
