"""What a worker sends back after a call, and how the grader reads it without trusting it.

The worker runs the student's code, which can write anything down the pipe, so a
reply is plain data that the grader reads in time linear in its size: a JSON header
holding the outcome and the returned value, followed by the raw bytes of each tensor
and numpy array in it. Nothing in a reply names a type or a function for the grader to
call. Besides tensors and arrays a value holds only None, bools, ints, floats, complex
numbers, strings, torch sizes, dtypes and devices, and lists, tuples, dicts and
SimpleNamespaces of them: a dict's keys are strings (a string's hash is randomised per
process, so no crafted set of keys makes building the dict quadratic, as colliding
integers in a set would), and values nest at most :data:`MAX_DEPTH` deep.

:func:`encode_reply` writes a reply in the worker and refuses one larger than the
limit it is given; :func:`load_reply` reads it in the grader; :func:`check_sendable`
says, in both the worker and the grader's own process, whether a value could be sent.
"""

from __future__ import annotations

import json
import math
import struct
import sys
import typing
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, NamedTuple

from gradcheck_kit.sandbox.outcome import Outcome, ReturnedTensor, Status, TensorInfo

__all__ = ["MAX_DEPTH", "BadReply", "Reply", "Unsendable", "check_sendable", "encode_reply", "load_reply"]

#: How deep lists, tuples and dicts may nest in a returned value.
MAX_DEPTH = 64
#: At most this many dimensions for a returned tensor or array.
_MAX_DIMS = 64
_MAGIC = b"GCK1"
_LENGTH = struct.Struct("<Q")
_STATUSES = frozenset(typing.get_args(Status))
_WHAT_CAN_BE_SENT = (
    "a returned value may hold tensors, numpy arrays, numbers, strings, None, and lists, tuples and dicts "
    "(with string keys) of them"
)


class Reply(NamedTuple):
    """How a call ended, as a worker sends it back."""

    outcome: Outcome
    # False when the call may have left the worker unfit for the next one.
    reusable: bool = True


class Unsendable(Exception):
    """The returned value cannot be sent back: its message says what in it and why."""


class BadReply(ValueError):
    """What a worker sent is not a reply; the worker is not to be trusted again."""


# ----------------------------------------------------------------------------- writing


def check_sendable(value: Any) -> None:
    """Raise :class:`Unsendable` unless ``value`` (its tensors already :class:`ReturnedTensor`) can be sent."""
    _Encoder(materialise=False).encode(value, 0)


def encode_reply(reply: Reply, limit: int) -> bytes:
    """The bytes of ``reply``, at most ``limit`` of them.

    Raises:
        Unsendable: when the value holds something a reply cannot carry, or the reply would be larger.
    """
    encoder = _Encoder(materialise=True)
    outcome = reply.outcome
    header = {
        "status": outcome.status,
        "message": outcome.message,
        "traceback": outcome.traceback,
        "duration": float(outcome.duration),
        "reusable": bool(reply.reusable),
        "value": encoder.encode(outcome.value, 0),
        "buffers": [len(b) for b in encoder.buffers],
    }
    sized = sum(len(b) for b in encoder.buffers)
    if sized > limit:
        raise Unsendable(f"the returned value takes {_size(sized)}; a reply may carry at most {_size(limit)}")
    try:
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    except ValueError as exc:  # e.g. an int past Python's limit on digits
        raise Unsendable(f"the returned value cannot be written out: {exc}") from exc
    total = len(_MAGIC) + _LENGTH.size + len(text) + sized
    if total > limit:
        raise Unsendable(f"the returned value takes {_size(total)}; a reply may carry at most {_size(limit)}")
    return b"".join([_MAGIC, _LENGTH.pack(len(text)), text, *encoder.buffers])


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


class _Encoder:
    """Turns a value into JSON-ready data; with ``materialise``, collects the raw bytes of its tensors and arrays."""

    def __init__(self, materialise: bool) -> None:
        self.materialise = materialise
        self.buffers: list[bytes] = []

    def encode(self, value: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise Unsendable(f"the returned value nests more than {MAX_DEPTH} levels deep")
        kind = type(value)
        if value is None or kind in (bool, int, float, str):
            return value
        if kind is list:
            return [self.encode(v, depth + 1) for v in value]
        if kind is tuple:
            return {"tuple": [self.encode(v, depth + 1) for v in value]}
        if kind is dict:
            return {"dict": self._fields(value, "a dict", depth)}
        if kind is SimpleNamespace:
            return {"namespace": self._fields(vars(value), "a SimpleNamespace", depth)}
        if kind is complex:
            return {"complex": [value.real, value.imag]}
        if kind is ReturnedTensor:
            return {"tensor": self._tensor(value)}
        torch = sys.modules.get("torch")
        if torch is not None:
            if kind is torch.Size:
                return {"size": [int(n) for n in value]}
            if kind is torch.dtype:
                return {"dtype": str(value).removeprefix("torch.")}
            if kind is torch.device:
                return {"device": str(value)}
        numpy = sys.modules.get("numpy")
        if numpy is not None and (kind is numpy.ndarray or isinstance(value, numpy.generic)):
            return self._array(value, numpy)
        raise Unsendable(
            f"returned a {kind.__qualname__}, which cannot be sent back to the grader: {_WHAT_CAN_BE_SENT}"
        )

    def _fields(self, mapping: dict[Any, Any], what: str, depth: int) -> dict[str, Any]:
        for key in mapping:
            if type(key) is not str:
                shown = repr(key)
                shown = shown if len(shown) <= 40 else shown[:37] + "..."
                raise Unsendable(
                    f"returned {what} with a key of type {type(key).__qualname__} ({shown}), which cannot be sent "
                    "back to the grader: keys must be strings"
                )
        return {key: self.encode(v, depth + 1) for key, v in mapping.items()}

    def _buffer(self, make: Callable[[], bytes]) -> int:
        self.buffers.append(make() if self.materialise else b"")
        return len(self.buffers) - 1

    def _tensor(self, returned: ReturnedTensor) -> list[Any]:
        import torch

        tensor = returned.tensor
        if not isinstance(tensor, torch.Tensor) or tensor.device.type != "cpu" or tensor.is_sparse:
            raise Unsendable("a returned tensor must be copied to a dense CPU tensor before it is sent")

        def raw() -> bytes:
            flat = tensor.detach().resolve_conj().resolve_neg().contiguous().reshape(-1)
            return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""

        info = returned.info
        return [
            self._buffer(raw),
            _dtype_name(tensor.dtype),
            list(tensor.shape),
            _dtype_name(info.dtype),
            [int(n) for n in info.shape],
            str(info.device),
        ]

    def _array(self, value: Any, numpy: Any) -> dict[str, Any]:
        array = numpy.asarray(value)
        dtype = array.dtype
        if dtype.kind not in "biufc" or dtype.hasobject or dtype.names is not None:
            raise Unsendable(
                f"returned a numpy array of dtype {dtype}, which cannot be sent back to the grader: only numbers and "
                "bools can"
            )
        index = self._buffer(lambda: numpy.ascontiguousarray(array).tobytes())
        entry = [index, dtype.str, list(array.shape)]
        return {"array": entry} if isinstance(value, numpy.ndarray) else {"scalar": entry}


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


# ----------------------------------------------------------------------------- reading


def load_reply(data: bytes) -> Reply:
    """Read a worker's reply.

    Raises:
        BadReply: when ``data`` is not a reply as :func:`encode_reply` writes them.
    """
    view = memoryview(data)
    start = len(_MAGIC) + _LENGTH.size
    if len(view) < start or bytes(view[: len(_MAGIC)]) != _MAGIC:
        raise BadReply("a worker's reply must start with the reply header")
    (length,) = _LENGTH.unpack(view[len(_MAGIC) : start])
    if length > len(view) - start:
        raise BadReply("a worker's reply is shorter than its header says")
    try:
        header = json.loads(bytes(view[start : start + length]).decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise BadReply(f"a worker's reply header is not valid JSON: {type(exc).__name__}: {exc}") from None
    if not isinstance(header, dict):
        raise BadReply("a worker's reply header must be a JSON object")
    buffers = _buffers(header.get("buffers"), view, start + length)
    status = header.get("status")
    message, trace = header.get("message"), header.get("traceback")
    duration, reusable = header.get("duration"), header.get("reusable")
    if status not in _STATUSES:
        raise BadReply(f"a worker's reply has an unknown status: {str(status)[:40]!r}")
    if not (isinstance(message, str) and isinstance(trace, str)):
        raise BadReply("a worker's reply must have a message and a traceback of text")
    if type(duration) not in (int, float) or type(reusable) is not bool:
        raise BadReply("a worker's reply must have a duration in seconds and say whether the worker is reusable")
    value = _Decoder(buffers).decode(header.get("value"), 0)
    return Reply(Outcome(status, value, message, trace, float(duration)), reusable)


def _buffers(sizes: Any, view: memoryview, start: int) -> list[memoryview]:
    if not isinstance(sizes, list) or not all(type(n) is int and n >= 0 for n in sizes):
        raise BadReply("a worker's reply must list the sizes of its buffers")
    if sum(sizes) != len(view) - start:
        raise BadReply("a worker's reply does not hold the bytes its header lists")
    buffers = []
    for size in sizes:
        buffers.append(view[start : start + size])
        start += size
    return buffers


class _Decoder:
    """Rebuilds a value from its JSON form, taking each buffer once."""

    def __init__(self, buffers: list[memoryview]) -> None:
        self.buffers: list[memoryview | None] = list(buffers)

    def decode(self, data: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise BadReply(f"a worker's reply nests more than {MAX_DEPTH} levels deep")
        if data is None or type(data) in (bool, int, float, str):
            return data
        if type(data) is list:
            return [self.decode(v, depth + 1) for v in data]
        if type(data) is not dict or len(data) != 1:
            raise BadReply("a worker's reply holds a value of no known kind")
        ((tag, body),) = data.items()
        if tag == "tuple" and type(body) is list:
            return tuple(self.decode(v, depth + 1) for v in body)
        if tag == "dict" and type(body) is dict:
            return {k: self.decode(v, depth + 1) for k, v in body.items()}
        if tag == "namespace" and type(body) is dict:
            return SimpleNamespace(**{k: self.decode(v, depth + 1) for k, v in body.items()})
        if tag == "complex" and _numbers(body, 2):
            return complex(*body)
        if tag == "tensor":
            return self._tensor(body)
        if tag in ("array", "scalar"):
            array = self._array(body)
            return array if tag == "array" else array[()]
        if tag == "size" and type(body) is list:
            import torch

            return torch.Size(_shape(body))
        if tag == "dtype":
            return _torch_dtype(body)
        if tag == "device" and type(body) is str:
            import torch

            try:
                return torch.device(body)
            except (RuntimeError, ValueError) as exc:
                raise BadReply(f"a worker's reply holds a device that is none: {body[:40]!r}") from exc
        raise BadReply(f"a worker's reply holds a value of no known kind: {str(tag)[:40]!r}")

    def _take(self, index: Any) -> memoryview:
        if type(index) is not int or not 0 <= index < len(self.buffers) or self.buffers[index] is None:
            raise BadReply("a worker's reply refers to a buffer it does not hold, or to one twice")
        buffer = self.buffers[index]
        self.buffers[index] = None
        assert buffer is not None
        return buffer

    def _tensor(self, body: Any) -> ReturnedTensor:
        import torch

        if type(body) is not list or len(body) != 6 or type(body[5]) is not str or len(body[5]) > 64:
            raise BadReply("a worker's reply holds a tensor that is not described as one")
        index, dtype_name, shape, info_dtype, info_shape, device = body
        dtype, shape = _torch_dtype(dtype_name), _shape(shape)
        raw = self._take(index)
        if len(raw) != math.prod(shape) * dtype.itemsize:
            raise BadReply(f"{len(raw)} bytes do not make a {dtype_name} tensor of shape {tuple(shape)}")
        data = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if len(raw) else torch.empty(0, dtype=torch.uint8)
        info = TensorInfo(_torch_dtype(info_dtype), tuple(_shape(info_shape)), device)
        return ReturnedTensor(data.view(dtype).reshape(shape), info)

    def _array(self, body: Any) -> Any:
        import numpy

        if type(body) is not list or len(body) != 3 or not _numpy_dtype_text(body[1]):
            raise BadReply("a worker's reply holds a numpy array that is not described as one")
        index, dtype_text, shape = body
        dtype, shape = numpy.dtype(dtype_text), _shape(shape)
        raw = self._take(index)
        if len(raw) != math.prod(shape) * dtype.itemsize:
            raise BadReply(f"{len(raw)} bytes do not make a numpy array of {dtype} and shape {tuple(shape)}")
        return numpy.frombuffer(bytearray(raw), dtype=dtype).reshape(shape)


def _numbers(body: Any, count: int) -> bool:
    return type(body) is list and len(body) == count and all(type(v) in (int, float) for v in body)


def _shape(shape: Any) -> list[int]:
    if type(shape) is not list or len(shape) > _MAX_DIMS or not all(type(n) is int and n >= 0 for n in shape):
        raise BadReply("a worker's reply holds a shape that is not a list of sizes")
    return shape


def _torch_dtype(name: Any) -> Any:
    import torch

    kind = getattr(torch, name, None) if type(name) is str and name.isidentifier() else None
    if not isinstance(kind, torch.dtype):
        raise BadReply(f"a worker's reply holds a dtype that is none: {str(name)[:40]!r}")
    return kind


def _numpy_dtype_text(text: Any) -> bool:
    """A plain number or bool dtype as numpy spells it: byte order, kind, item size (``<f4``, ``|b1``)."""
    return (
        type(text) is str
        and len(text) in (3, 4)
        and text[0] in "<>|="
        and text[1] in "biufc"
        and text[2:].isdigit()
        and text[2:] in ("1", "2", "4", "8", "16", "32")
    )
