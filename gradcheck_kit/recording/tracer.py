"""Record a forward pass: name each tensor it creates after the variable it is bound to.

``with record() as rec:`` around notebook-style forward code watches two things:

* every torch operation in the block (through a ``TorchFunctionMode``), which
  gives the creation order of tensors, and
* every line of the block (through the frame's trace function), which tells
  which variable name each new tensor was bound to.

Alongside the real autograd graph it builds a *local* graph: each operation is
replayed with the named tensors it reads replaced by detached leaves. The local
graph of ``probs = counts * counts_sum_inv`` therefore ends at ``counts`` and
``counts_sum_inv`` instead of running on to ``logits``. That gives each named
tensor's direct inputs (looking through unnamed temporaries) and the vector-
Jacobian product of that one step, which is what grading a backward pass step
by step needs. What the block leaves behind is a
:class:`~gradcheck_kit.recording.recording.Recording`.
"""

from __future__ import annotations

import itertools
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from types import FrameType, ModuleType
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from gradcheck_kit.recording.recording import Recording

__all__ = ["record"]


class record:
    """Context manager that records the forward pass written inside it.

    Example::

        with gradcheck_kit.record() as rec:
            emb = C[Xb]
            ...
            loss = -logprobs[range(n), Yb].mean()
        grads = rec.grads(loss)      # {"logprobs": ..., "C": ...}

    Args:
        leaves: names for leaf tensors (parameters) that are not plain variables
            of the calling frame, e.g. ``{"W1": layer.weight}``.
    """

    def __init__(self, leaves: Mapping[str, torch.Tensor] | None = None) -> None:
        self._leaf_names = dict(leaves or {})
        self.recording = Recording()
        self._frame: FrameType | None = None
        self._mode: _LocalGraphMode | None = None
        self._seq: dict[int, int] = {}
        self._keep: list[torch.Tensor] = []
        self._counter = itertools.count()
        self._bound: dict[str, torch.Tensor] = {}
        self._shadow: dict[int, torch.Tensor] = {}
        self._busy = False
        self._earlier: dict[int, str] = {}
        self._earlier_tensors: dict[str, list[torch.Tensor]] = {}
        self._local_by_tensor: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._previous_trace: Any = None
        self._previous_frame_trace: Any = None

    def __enter__(self) -> Recording:
        frame = sys._getframe(1)
        self._frame = frame
        self._previous_trace = sys.gettrace()
        self._previous_frame_trace = frame.f_trace
        frame.f_trace = self._trace_line
        frame.f_trace_lines = True
        sys.settrace(self._trace_call)
        self._mode = _LocalGraphMode(self)
        self._mode.__enter__()
        return self.recording

    def __exit__(self, *exc: object) -> None:
        assert self._frame is not None and self._mode is not None
        self._mode.__exit__(None, None, None)
        sys.settrace(self._previous_trace)
        self._frame.f_trace = self._previous_frame_trace
        try:
            if exc[0] is None:
                self._scan(self._frame.f_locals)
                self._finish(self._frame)
        finally:
            self._frame = None
            self._shadow.clear()

    # -- tracing -------------------------------------------------------------

    def _trace_call(self, frame: FrameType, event: str, arg: Any) -> Any:
        # Only the recorded frame is traced line by line; calls it makes are not.
        if self._previous_trace is not None:
            return self._previous_trace(frame, event, arg)
        return None

    def _trace_line(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line" and frame is self._frame:
            self._scan(frame.f_locals)
        if self._previous_frame_trace is not None:
            self._previous_frame_trace(frame, event, arg)
        return self._trace_line

    def _scan(self, namespace: Mapping[str, Any]) -> None:
        """Name the tensors bound since the last line, and cut them off in the local graph."""
        self._busy = True
        try:
            for name, value in list(namespace.items()):
                if not isinstance(value, torch.Tensor) or id(value) not in self._seq:
                    continue
                previous = self._bound.get(name)
                if previous is value:
                    continue
                if any(t is value for t in self._bound.values()):
                    continue  # an alias of a tensor already named
                if previous is not None:
                    self.recording.rebound[name] = self.recording.rebound.get(name, 1) + 1
                    self._earlier_tensors.setdefault(name, []).append(previous)
                self._bound[name] = value
                self._bind(name, value)
        finally:
            self._busy = False

    def _bind(self, name: str, tensor: torch.Tensor) -> None:
        rec = self.recording
        earlier = rec._local_leaf.pop(name, None)
        if earlier is not None:
            # Steps computed from the earlier tensor still end at its leaf: name it apart.
            self._earlier[id(earlier)] = f"{name}#{rec.rebound.get(name, 2) - 1}"
        rec.intermediates.pop(name, None)
        rec.intermediates[name] = tensor
        if tensor.requires_grad and tensor.grad_fn is not None:
            rec._local_out[name] = self._shadow.get(id(tensor), tensor)
            leaf = tensor.detach().requires_grad_()
            rec._local_leaf[name] = leaf
            self._shadow[id(tensor)] = leaf
            self._local_by_tensor[id(tensor)] = (rec._local_out[name], leaf)

    # -- torch operations ----------------------------------------------------

    def _on_op(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        if self._busy:
            return
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        for t in outputs:
            if id(t) not in self._seq:
                self._seq[id(t)] = next(self._counter)
                self._keep.append(t)
        if not any(t.grad_fn is not None for t in outputs):
            return

        def local(x: Any) -> Any:
            if isinstance(x, torch.Tensor):
                return self._shadow.get(id(x), x)
            return x

        # Replayed even when nothing was substituted, so that the local graph never
        # shares saved tensors with the real one (which a loss.backward() frees).
        local_args, local_kwargs = tree_map(local, (args, kwargs))
        try:
            local_out = func(*local_args, **local_kwargs)
        except RuntimeError:
            # An in-place update of a named tensor cannot be replayed on its leaf;
            # the step is then graded without a local graph.
            return
        for t, s in zip(tree_flatten(out)[0], tree_flatten(local_out)[0], strict=False):
            if isinstance(t, torch.Tensor) and isinstance(s, torch.Tensor):
                self._shadow[id(t)] = s

    # -- after the block -----------------------------------------------------

    def _finish(self, frame: FrameType) -> None:
        rec = self.recording
        named = {id(t) for t in rec.intermediates.values()}
        created = {id(t): t for t in self._keep}
        attributes = _attribute_names(frame, lambda t: id(t) in created and id(t) not in named)
        for tensor_id, name in attributes.items():
            rec.intermediates[name] = created[tensor_id]
            if tensor_id in self._local_by_tensor:
                # Bound to a rebound variable while it was built (`x = layer(x)`): its step is known.
                rec._local_out[name], leaf = self._local_by_tensor[tensor_id]
                rec._local_leaf[name] = leaf
                self._earlier.pop(id(leaf), None)
        rec.intermediates = dict(sorted(rec.intermediates.items(), key=lambda kv: self._seq[id(kv[1])]))
        for name, count in rec.rebound.items():
            if all(id(t) in attributes for t in self._earlier_tensors.get(name, ())):
                continue  # `x = layer(x)` in a loop: every earlier x is named as layer.out
            warnings.warn(
                f"'{name}' was bound to {count} different tensors in the recorded block; only the last one "
                "is recorded. Give each intermediate its own name to check its gradient.",
                stacklevel=3,
            )
        names_of_leaves = self._name_leaves(frame)
        leaf_inputs: dict[str, list[torch.Tensor]] = {}
        local_leaf_names = {id(t): n for n, t in rec._local_leaf.items()} | self._earlier
        for name in rec.intermediates:
            out = rec._local_out.get(name)
            if out is None:
                rec.inputs[name] = ()
                continue
            found: list[str] = []
            for leaf in _graph_leaves(out):
                leaf_name = local_leaf_names.get(id(leaf)) or names_of_leaves.get(id(leaf))
                if leaf_name is None:
                    leaf_name = f"leaf{len(names_of_leaves)}"
                    names_of_leaves[id(leaf)] = leaf_name
                if leaf_name not in found:
                    found.append(leaf_name)
                if id(leaf) not in local_leaf_names:
                    leaf_inputs.setdefault(leaf_name, []).append(leaf)
            order = list(rec.intermediates)
            found.sort(key=lambda n: (n not in rec.intermediates, order.index(n) if n in rec.intermediates else 0))
            rec.inputs[name] = tuple(found)
        for leaf_name, (leaf, *_) in leaf_inputs.items():
            rec.leaves[leaf_name] = leaf

    def _name_leaves(self, frame: FrameType) -> dict[int, str]:
        names: dict[int, str] = {id(t): n for n, t in self._leaf_names.items()}
        for namespace in (frame.f_locals, frame.f_globals):
            for name, value in namespace.items():
                if isinstance(value, torch.Tensor) and value.is_leaf and value.requires_grad:
                    names.setdefault(id(value), name)
        for tensor_id, name in _attribute_names(frame, lambda t: t.is_leaf and t.requires_grad).items():
            names.setdefault(tensor_id, name)
        return names


#: How many items of a list of layers are searched for tensor attributes.
_MAX_ITEMS = 1000


def _attribute_names(frame: FrameType, wanted: Callable[[torch.Tensor], bool]) -> dict[int, str]:
    """Name tensors held as attributes of the frame's objects: ``layers[3].out``, ``model.weight``."""
    names: dict[int, str] = {}
    namespaces = [frame.f_locals] if frame.f_locals is frame.f_globals else [frame.f_locals, frame.f_globals]
    for namespace in namespaces:
        for name, value in list(namespace.items()):
            if isinstance(value, (list, tuple)):
                owners = [(f"{name}[{i}]", item) for i, item in enumerate(value[:_MAX_ITEMS])]
            else:
                owners = [(name, value)]
            for prefix, owner in owners:
                if (
                    isinstance(owner, (type, ModuleType, torch.Tensor))
                    or callable(owner)
                    and not hasattr(owner, "__dict__")
                ):
                    continue
                for attr, item in list(getattr(owner, "__dict__", {}).items()):
                    if isinstance(item, torch.Tensor) and wanted(item):
                        names.setdefault(id(item), f"{prefix}.{attr}")
    return names


def _graph_leaves(tensor: torch.Tensor) -> Iterator[torch.Tensor]:
    """The leaf tensors that requires-grad paths from ``tensor`` end at, in the order the expression reads them."""
    if tensor.grad_fn is None:
        if tensor.requires_grad:
            yield tensor
        return
    seen: set[int] = set()
    stack = [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if variable is not None:
            yield variable
            continue
        # Depth first, left operand first: `embcat @ W1 + b1` gives embcat, W1, b1.
        stack.extend(next_node for next_node, _ in reversed(node.next_functions))


class _LocalGraphMode(TorchFunctionMode):
    def __init__(self, recorder: record) -> None:
        super().__init__()
        self._recorder = recorder

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self._recorder._on_op(func, args, kwargs, out)
        return out
