"""The queries on a recorded forward pass: gradients, single steps, and the graph between named tensors.

A :class:`Recording` is filled by :class:`~gradcheck_kit.recording.tracer.record` while
the block runs; once the block has ended, everything here reads it. Besides the real
autograd graph it holds a *local* graph: each step replayed with the named tensors it
reads replaced by detached leaves, so that :meth:`Recording.local_vjp` backpropagates
through that one step and no further.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from gradcheck_kit.report import Report

__all__ = ["Recording"]


class Recording:
    """The named tensors of a recorded forward pass and the graph between them.

    Attributes:
        tensors: name -> tensor, the intermediates in creation order, then the leaves.
        intermediates: name -> tensor created in the block.
        leaves: name -> leaf tensor that requires grad and was used in the block (the parameters).
        inputs: name -> names of the recorded tensors and leaves it was computed from directly.
        rebound: names bound to more than one tensor in the block (the last one is kept; in
            ``inputs`` the earlier ones appear as ``name#1``, ``name#2`` ...).
    """

    def __init__(self) -> None:
        self.intermediates: dict[str, torch.Tensor] = {}
        self.leaves: dict[str, torch.Tensor] = {}
        self.inputs: dict[str, tuple[str, ...]] = {}
        self.rebound: dict[str, int] = {}
        # name -> the tensor's value in the local graph, and the detached leaf that stands for it;
        # the tracer fills them while the block runs.
        self._local_out: dict[str, torch.Tensor] = {}
        self._local_leaf: dict[str, torch.Tensor] = {}

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        return {**self.intermediates, **self.leaves}

    def __repr__(self) -> str:
        return f"Recording({len(self.intermediates)} intermediates, {len(self.leaves)} leaves)"

    def __contains__(self, name: object) -> bool:
        return name in self.intermediates or name in self.leaves

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def differentiable(self) -> dict[str, torch.Tensor]:
        """The recorded tensors that autograd can give a gradient for."""
        return {name: t for name, t in self.tensors.items() if t.requires_grad}

    def grads(self, loss: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """Gradient of ``loss`` with respect to every differentiable recorded tensor.

        Computed with ``torch.autograd.grad`` on the recorded graph, so ``.grad``
        attributes are left alone and the graph stays usable. After a plain
        ``loss.backward()`` has freed that graph, the recorder's own step-by-step
        graphs give the same gradients. A tensor that ``loss`` does not depend on
        maps to None; ``loss`` itself is left out.

        Args:
            loss: a scalar computed from the recorded tensors.

        Returns:
            ``{name: gradient}`` in :meth:`backward_order`.
        """
        names = [n for n in self.backward_order() if self.tensors[n] is not loss and self.tensors[n].requires_grad]
        tensors = [self.tensors[n] for n in names]
        try:
            grads = torch.autograd.grad(loss, tensors, retain_graph=True, allow_unused=True)
        except RuntimeError as exc:
            if "backward through the graph a second time" not in str(exc):
                raise
            return self._grads_step_by_step(loss, names)
        return dict(zip(names, grads, strict=True))

    def _grads_step_by_step(self, loss: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor | None]:
        loss_name = next((n for n, t in self.intermediates.items() if t is loss), None)
        if loss_name is None:
            raise RuntimeError(
                "the graph of this loss was freed by loss.backward() and the loss was not computed in the "
                "recorded block; call rec.grads(loss) before loss.backward(), or record the loss too"
            )
        grads: dict[str, torch.Tensor | None] = {loss_name: torch.ones_like(loss)}
        # Consumers before inputs: intermediates newest first, then the leaves.
        for name in [*reversed(self.intermediates), *self.leaves]:
            if name == loss_name:
                continue
            total: torch.Tensor | None = None
            for consumer in self.consumers(name):
                upstream = grads.get(consumer)
                if upstream is None or not self.has_local_graph(consumer):
                    continue
                part = self.local_vjp(consumer, upstream)[name]
                if part is not None:
                    total = part if total is None else total + part
            grads[name] = total
        return {name: grads.get(name) for name in names}

    def retain_grad(self) -> None:
        """Make ``.grad`` available on every recorded intermediate after ``loss.backward()``."""
        for t in self.intermediates.values():
            if t.requires_grad and t.grad_fn is not None:
                t.retain_grad()

    def consumers(self, name: str) -> tuple[str, ...]:
        """The recorded tensors computed directly from ``name``."""
        return tuple(n for n, ins in self.inputs.items() if name in ins)

    def backward_order(self) -> list[str]:
        """Names in the order a backward pass meets them: loss side first.

        Intermediates come in reverse creation order; each leaf comes right after
        the newest recorded input of the first tensor that reads it, which is
        where the notebook computes it (``logits``, ``h``, ``W2``, ``b2``).
        """
        order: list[str] = []
        placed: set[str] = set()
        after: dict[str, list[str]] = {}
        for name in reversed(self.intermediates):
            ins = self.inputs.get(name, ())
            anchors = [i for i in ins if i in self.intermediates]
            anchor = max(anchors, key=list(self.intermediates).index) if anchors else name
            for leaf in ins:
                if leaf in self.leaves and leaf not in placed:
                    after.setdefault(anchor, []).append(leaf)
                    placed.add(leaf)
        for name in reversed(self.intermediates):
            order.append(name)
            order.extend(after.get(name, []))
        order.extend(leaf for leaf in self.leaves if leaf not in placed)
        return order

    def has_local_graph(self, name: str) -> bool:
        """Whether :meth:`local_vjp` can replay the step that produced ``name``."""
        return name in self._local_out and self._local_out[name].grad_fn is not None

    def local_vjp(self, name: str, grad_output: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """Backpropagate ``grad_output`` through the one step that produced ``name``.

        Args:
            name: a recorded intermediate.
            grad_output: a gradient of the shape of ``rec[name]``.

        Returns:
            ``{input_name: gradient}`` for each direct input of ``name``: what that
            step alone contributes to the input's gradient.
        """
        if not self.has_local_graph(name):
            raise KeyError(f"no local graph for {name!r}: it was not computed from recorded tensors")
        ins = self.inputs[name]
        sources = [self._local_leaf.get(i, self.leaves.get(i)) for i in ins]
        out = self._local_out[name]
        if grad_output.shape != out.shape:
            raise RuntimeError(
                f"local_vjp({name!r}): grad_output has shape {tuple(grad_output.shape)}, not {tuple(out.shape)}"
            )
        # Differentiating the scalar sum(out * g) gives 1.0 * g, exactly g, down the same graph; a tensor
        # passed as grad_outputs would import torch.fx's symbolic shapes and sympy (0.3 s) to check it.
        grads = torch.autograd.grad((out * grad_output).sum(), sources, retain_graph=True, allow_unused=True)
        return dict(zip(ins, grads, strict=True))

    def check(self, loss: torch.Tensor, manual: Mapping[str, Any] | None = None, *, prefix: str = "d") -> Report:
        """Grade the caller's ``d<name>`` gradients against autograd in a per-tensor report.

        Each gradient is graded as the autograder does: a wrong one whose own step is
        right given the gradients before it is marked as inherited, and the first
        wrong step is named with a diagnosis.

        Args:
            loss: the scalar the gradients are of.
            manual: where to look for the gradients; default: the caller's variables,
                ``dlogprobs`` for ``logprobs`` as in the notebook.
            prefix: the prefix that turns a tensor name into its gradient's name.

        Returns:
            The report. Outside IPython it is also printed; in IPython or Jupyter it is not,
            since the cell shows the returned report (the table, as HTML in a notebook) and
            would show it twice.
        """
        from gradcheck_kit.grading.steps import grade_steps
        from gradcheck_kit.report import Report

        reference = {name: g for name, g in self.grads(loss).items() if g is not None}
        if manual is None:
            caller = sys._getframe(1)
            namespace = {**caller.f_globals, **caller.f_locals}
            manual = {name: namespace.get(prefix + name) for name in reference}
        rows = grade_steps(manual, self, loss, reference)
        unknown = tuple(k for k, v in manual.items() if k not in reference and v is not None)
        report = Report("manual gradients vs autograd", tuple(rows), unknown)
        if not _in_ipython():
            print(report)
        return report


def _in_ipython() -> bool:
    """Whether this runs in an IPython shell or a Jupyter kernel, which display what a cell returns.

    Only an IPython that is already imported is asked: importing it here would take a
    second in a plain script, and a script that merely has it installed is not in it.
    """
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    return get_ipython is not None and get_ipython() is not None
