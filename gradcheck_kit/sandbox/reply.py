"""What a worker sends back after a call, and how the grader reads it without trusting it.

The worker runs the student's code, which can send anything down the pipe: a
plain ``pickle.loads`` would run any function it names, in the grader.
:func:`load_reply` unpickles with an allow-list of the types a :class:`Reply`
is made of instead.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, NamedTuple

from gradcheck_kit.sandbox.outcome import Outcome

__all__ = ["Reply", "load_reply"]


class Reply(NamedTuple):
    """How a call ended, as a worker sends it back."""

    outcome: Outcome
    # False when the call may have left the worker unfit for the next one.
    reusable: bool = True


def load_reply(data: bytes) -> Reply:
    """Unpickle a worker's reply, allowing only the types a reply is made of."""
    reply = _ReplyUnpickler(io.BytesIO(data)).load()
    if not isinstance(reply, Reply):
        raise pickle.UnpicklingError(f"a worker's reply must be a Reply, not {type(reply).__name__}")
    return reply


#: What a reply may name, by module: the reply's own types, containers, torch dtypes, numpy arrays.
_REPLY_GLOBALS = {
    "gradcheck_kit.sandbox.reply": {"Reply"},
    "gradcheck_kit.sandbox.outcome": {"Outcome", "TensorInfo", "_rebuild_returned_tensor"},
    "builtins": {"set", "frozenset", "complex", "slice", "bytearray"},
    "collections": {"OrderedDict"},
    "types": {"SimpleNamespace"},
    "torch": {"Size", "device"},
    "numpy": {"dtype", "ndarray"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "numpy.core.numeric": {"_frombuffer"},
    "numpy._core.numeric": {"_frombuffer"},
}


class _ReplyUnpickler(pickle._Unpickler):  # the Python unpickler: its BUILD can be checked
    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str) -> Any:
        import torch

        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if name not in _REPLY_GLOBALS.get(module, ()):
            raise pickle.UnpicklingError(f"a reply may not contain {module}.{name}")
        return super().find_class(module, name)

    def load_build(self) -> None:
        # BUILD sets attributes; on a class it would rewrite the class for every later use.
        if isinstance(self.stack[-2], type):
            raise pickle.UnpicklingError("a reply may not set attributes of a class")
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build
