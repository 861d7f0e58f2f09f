"""How a call of a student's function ended, and the tensors it returned.

The types here are what every other module of the sandbox speaks: :mod:`~gradcheck_kit.sandbox.call`
builds an :class:`Outcome`, :mod:`~gradcheck_kit.sandbox.reply` carries it back from the worker, and
:class:`~gradcheck_kit.sandbox.box.Sandbox` hands it to the grader. They live below all of those,
so that no two of them import each other.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

__all__ = [
    "OUTPUT_LIMIT",
    "Outcome",
    "ReturnedTensor",
    "Status",
    "TensorInfo",
    "map_tensors",
    "unwrap",
]

Status = Literal[
    "ok",
    "not_started",
    "error",
    "import_error",
    "missing_function",
    "forbidden",
    "timeout",
    "crashed",
    "exited",
]

#: Characters of a call's printed output kept in :attr:`Outcome.stdout`.
OUTPUT_LIMIT = 4096


@dataclass(frozen=True)
class TensorInfo:
    """What a returned tensor was before it was copied to the CPU."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    device: str

    @classmethod
    def of(cls, tensor: torch.Tensor) -> TensorInfo:
        """Describe ``tensor``."""
        return cls(tensor.dtype, tuple(tensor.shape), str(tensor.device))

    def __str__(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.")
        return f"{dtype}[{', '.join(map(str, self.shape))}] on {self.device}"


@dataclass(frozen=True)
class ReturnedTensor:
    """A tensor a function returned: a CPU copy, and what it was.

    It crosses from the worker as its raw bytes (see :mod:`~gradcheck_kit.sandbox.reply`).
    """

    tensor: torch.Tensor
    info: TensorInfo


@dataclass(frozen=True)
class Outcome:
    """How one call ended.

    ``value`` is the return value for ``"ok"``, with every tensor in it (also
    inside lists, tuples, dicts and SimpleNamespaces) replaced by a
    :class:`ReturnedTensor`; for ``"error"``, what the function had computed when
    it raised (the tensors among its local variables, by name, and in its local
    dicts), or ``None``; ``None`` otherwise. ``message`` says what
    happened and, for an exception, at which line of the student's file;
    ``traceback`` starts at the student's first frame. ``duration`` is the
    function's own run time when it ended by itself and the time waited
    otherwise. ``stdout`` holds what the call printed on both streams, cut to
    about :data:`OUTPUT_LIMIT` characters.
    """

    status: Status
    value: Any = None
    message: str = ""
    traceback: str = ""
    duration: float = 0.0
    stdout: str = ""

    @property
    def ok(self) -> bool:
        """Whether the function returned."""
        return self.status == "ok"


def map_tensors(value: Any, on_tensor: Callable[[Any], Any], on_other: Callable[[Any], Any] = lambda v: v) -> Any:
    """Rebuild ``value`` with ``on_tensor`` applied to each tensor and ``on_other`` to each other leaf."""
    torch = sys.modules.get("torch")  # not imported yet: there are no tensors

    def walk(v: Any) -> Any:
        if torch is not None and isinstance(v, torch.Tensor):
            return on_tensor(v)
        if isinstance(v, list):
            return [walk(x) for x in v]
        if type(v) is tuple:
            return tuple(walk(x) for x in v)
        if isinstance(v, tuple) and hasattr(v, "_fields"):
            return type(v)(*(walk(x) for x in v))
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, SimpleNamespace):
            return SimpleNamespace(**{k: walk(x) for k, x in vars(v).items()})
        return on_other(v)

    return walk(value)


def unwrap(value: Any) -> Any:
    """Replace every :class:`ReturnedTensor` in ``value`` by its CPU tensor."""
    return map_tensors(value, lambda t: t, lambda v: v.tensor if isinstance(v, ReturnedTensor) else v)
