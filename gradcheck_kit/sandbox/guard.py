"""Make any use of autograd fail while a hand-written backward pass runs.

A manual backward pass that calls autograd would be graded against autograd
itself and always pass, so :func:`forbid_autograd` closes the three places
autograd can be reached from:

* the reverse-mode engine (``Variable._execution_engine``, and its class,
  so that no engine of one's own can be made), which every
  public reverse-mode entry point ends in: ``Tensor.backward``,
  ``torch.autograd.backward`` and ``grad``, ``torch.autograd.functional``,
  and the ``torch.func`` transforms built on them (``grad``, ``vjp``,
  ``jacrev``, ``hessian``);
* forward-mode AD, which needs a dual level (``torch.func.jvp``,
  ``jacfwd``, ``torch.autograd.forward_ad``, ``jacobian`` in forward mode);
* the aten backward kernels themselves (``aten::tanh_backward``,
  ``aten::_softmax_backward_data``, ...), which could otherwise be called
  directly through ``torch.ops.aten``.

Grad mode is left as it is. The inputs a student receives do not require
grad, so legitimate code builds no graph anyway; turning grad mode off would
stop none of the entry points above (``torch.func.grad`` turns it back on)
and would only replace a clear "forbidden" with torch's own "does not require
grad" error for some of them.

The guard stops honest mistakes and casual shortcuts, not a determined
attacker: code that runs in the same process can always undo a patch, and
code that starts another process can run autograd there.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

import torch
import torch.autograd.forward_ad as forward_ad
from torch.autograd.variable import Variable
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["AutogradForbidden", "forbid_autograd"]

#: The engine's class, under each name it is reachable by.
# (torch.autograd.variable is also the name of a function: the module is looked up by name.)
_ENGINE_MAKERS = [
    (torch._C, "_ImperativeEngine"),
    (importlib.import_module("torch.autograd.variable"), "ImperativeEngine"),
]

_PREFIX = "manual backward must not use autograd"
_HINT = "compute the gradient from the forward quantities with tensor operations instead"

# Private modules whose functions are public under another name.
_PUBLIC_MODULES = {
    "torch._tensor": "torch",
    "torch._functorch": "torch.func",
}
# Closures that torch hands out, named after the function that made them.
_CLOSURES = {
    "torch.func._vjp_with_argnums()": "the vjp_fn returned by torch.func.vjp()",
}


class AutogradForbidden(RuntimeError):
    """Raised when code under :func:`forbid_autograd` reaches autograd."""


def _is_torch_frame(frame: FrameType) -> bool:
    name = frame.f_globals.get("__name__", "")
    return name == "torch" or name.startswith("torch.")


def _is_guard_frame(frame: FrameType) -> bool:
    return frame.f_globals.get("__name__") == __name__


def _public_name(frame: FrameType) -> str:
    module = frame.f_globals.get("__name__", "")
    code = frame.f_code
    qualname = getattr(code, "co_qualname", code.co_name)
    # torch.func.grad(f)(x) runs a closure named "grad.<locals>.wrapper".
    qualname = qualname.split(".<locals>", 1)[0]
    for private, public in _PUBLIC_MODULES.items():
        if module == private or module.startswith(private + "."):
            module = public
            break
    name = f"{module}.{qualname}()"
    return _CLOSURES.get(name, name)


def _entry_point(default: str) -> str:
    """Name the torch function that the code outside torch called to get here.

    Args:
        default: what to say when no such call is on the stack.

    Returns:
        A public name such as ``torch.Tensor.backward()``.
    """
    frame: FrameType | None = sys._getframe(1)
    entry: FrameType | None = None
    while frame is not None:
        if _is_guard_frame(frame):
            frame = frame.f_back
            continue
        if not _is_torch_frame(frame):
            if entry is not None:
                return _public_name(entry)
        else:
            entry = frame
        frame = frame.f_back
    return _public_name(entry) if entry is not None else default


def _forbidden(what: str) -> AutogradForbidden:
    return AutogradForbidden(f"{_PREFIX}: {what} was called; {_HINT}")


def _stand_in_engine(engine: Any) -> Any:
    """An object in place of autograd's engine: every backward run is refused.

    The real engine is held by a closure, not by an attribute that code could
    read to reach it.
    """

    class _ForbiddenEngine:
        def run_backward(self, *args: Any, **kwargs: Any) -> Any:
            raise _forbidden(_entry_point("the autograd engine"))

        def __getattr__(self, name: str) -> Any:
            # queue_callback, is_checkpoint_valid, ... stay usable.
            return getattr(engine, name)

    return _ForbiddenEngine()


def _forbidden_new_engine(*args: Any, **kwargs: Any) -> Any:
    raise _forbidden("a new autograd engine (torch._C._ImperativeEngine())")


def _forbidden_dual_level() -> int:
    raise _forbidden(_entry_point("forward-mode AD"))


class _NoBackwardKernels(TorchDispatchMode):
    """Refuses every aten op whose name marks it as a backward kernel."""

    def __init__(self) -> None:
        super().__init__()
        self._refused: dict[Any, bool] = {}

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # True would wrap __torch_dispatch__ in torch._dynamo.disable, whose first
        # call imports torch._dynamo: seconds of start-up for every sandbox worker.
        return False

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        refused = self._refused.get(func)
        if refused is None:
            refused = self._refused[func] = "_backward" in func._schema.name
        if refused:
            raise _forbidden(func._schema.name)
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def forbid_autograd() -> Iterator[None]:
    """Make autograd raise :class:`AutogradForbidden` inside the block.

    Reverse-mode, forward-mode and the aten backward kernels are all refused;
    every forward op keeps working. The patches are process-wide, so the
    block must not overlap autograd work in other threads. Everything is
    restored on exit, also when the block raises.
    """
    engine = Variable._execution_engine
    enter_dual_level = forward_ad.enter_dual_level
    makers = [(owner, name, getattr(owner, name)) for owner, name in _ENGINE_MAKERS if hasattr(owner, name)]
    Variable._execution_engine = _stand_in_engine(engine)  # type: ignore[assignment]
    forward_ad.enter_dual_level = _forbidden_dual_level
    for owner, name, _ in makers:
        setattr(owner, name, _forbidden_new_engine)
    try:
        with _NoBackwardKernels():
            yield
    finally:
        Variable._execution_engine = engine  # type: ignore[assignment]
        forward_ad.enter_dual_level = enter_dual_level
        for owner, name, maker in makers:
            setattr(owner, name, maker)
