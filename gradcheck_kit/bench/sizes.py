"""The sizes each op is timed at: the notebook's, memory-bound ones, and sweeps over each axis.

The notebook's sizes are overhead-bound: a few kilobytes, where launching the
kernels costs more than running them. The memory-bound sizes are large enough
that the time is the bytes moved over the bandwidth. The sweeps between them
show where each variant stops being dominated by its overhead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["MEMORY_BOUND", "NOTEBOOK", "OP_NAMES", "Size", "plan", "sweep_tag"]

#: The ops, in the order they are run and shown.
OP_NAMES = ("cross_entropy", "batchnorm", "embedding", "mlp")

NOTEBOOK = "notebook"
MEMORY_BOUND = "memory-bound"
LARGE = "large"


def sweep_tag(axis: str) -> str:
    return f"sweep:{axis}"


@dataclass(frozen=True)
class Size:
    """One set of sizes of an op, with the tags of every list it belongs to."""

    params: tuple[tuple[str, int], ...]
    tags: frozenset[str]

    @property
    def values(self) -> dict[str, int]:
        return dict(self.params)


_Entry = tuple[str, Mapping[str, int]]


def _sweep(axis: str, points: Iterable[int], **fixed: int) -> list[_Entry]:
    return [(sweep_tag(axis), {**fixed, axis: point}) for point in points]


def _one(tag: str, **params: int) -> list[_Entry]:
    return [(tag, params)]


# (op, device type, quick) -> sizes. CPU sizes keep the full run to a few minutes on two cores.
_PLANS: dict[tuple[str, str, bool], list[_Entry]] = {
    ("cross_entropy", "any", True): _one(NOTEBOOK, n=32, v=27)
    + _sweep("n", [32, 512], v=27)
    + _sweep("v", [27, 2048], n=32),
    ("cross_entropy", "cpu", False): _one(NOTEBOOK, n=32, v=27)
    + _one(MEMORY_BOUND, n=4096, v=8192)
    + _sweep("n", [64, 512, 4096], v=8192)
    + _sweep("v", [27, 256, 2048, 8192], n=4096),
    ("cross_entropy", "cuda", False): _one(NOTEBOOK, n=32, v=27)
    + _one(MEMORY_BOUND, n=8192, v=32768)
    + _one(MEMORY_BOUND, n=8192, v=50257)
    + _sweep("n", [128, 1024, 8192], v=32768)
    + _sweep("v", [256, 2048, 32768, 50257], n=8192),
    ("batchnorm", "any", True): _one(NOTEBOOK, n=32, c=64)
    + _sweep("n", [32, 512], c=64)
    + _sweep("c", [64, 1024], n=32),
    ("batchnorm", "cpu", False): _one(NOTEBOOK, n=32, c=64)
    + _one(MEMORY_BOUND, n=4096, c=1024)
    + _sweep("n", [64, 512, 4096], c=1024)
    + _sweep("c", [64, 256, 1024], n=4096),
    ("batchnorm", "cuda", False): _one(NOTEBOOK, n=32, c=64)
    + _one(MEMORY_BOUND, n=16384, c=4096)
    + _sweep("n", [256, 2048, 16384], c=4096)
    + _sweep("c", [256, 1024, 4096], n=16384),
    ("embedding", "any", True): _one(NOTEBOOK, n=32, block=3, d=10, v=27) + _sweep("n", [32, 128], block=3, d=10, v=27),
    ("embedding", "cpu", False): _one(NOTEBOOK, n=32, block=3, d=10, v=27)
    + _sweep("n", [32, 256, 2048], block=3, d=10, v=27)
    + _one(LARGE, n=1024, block=8, d=64, v=1024),
    ("embedding", "cuda", False): _one(NOTEBOOK, n=32, block=3, d=10, v=27)
    + _sweep("n", [32, 256, 2048], block=3, d=10, v=27)
    + _one(LARGE, n=16384, block=8, d=256, v=8192),
    ("mlp", "any", True): _one(NOTEBOOK, n=32, h=64, v=27) + _sweep("n", [32, 128], h=64, v=27),
    ("mlp", "cpu", False): _one(NOTEBOOK, n=32, h=64, v=27)
    + _sweep("n", [32, 256, 2048], h=64, v=27)
    + _one(LARGE, n=2048, h=1024, v=4096),
    ("mlp", "cuda", False): _one(NOTEBOOK, n=32, h=64, v=27)
    + _sweep("n", [32, 256, 2048], h=64, v=27)
    + _one(LARGE, n=2048, h=4096, v=32768),
}


def plan(op: str, device_type: str, quick: bool) -> tuple[Size, ...]:
    """The sizes ``op`` is timed at on ``device_type``, each once, smallest first.

    Args:
        op: an op's name (``"cross_entropy"``).
        device_type: ``"cpu"`` or ``"cuda"``; other accelerators get the CPU's sizes.
        quick: only the small sizes, which run in seconds.
    """
    key = (op, "any", True) if quick else (op, "cuda" if device_type == "cuda" else "cpu", False)
    merged: dict[tuple[tuple[str, int], ...], set[str]] = {}
    for tag, params in _PLANS[key]:
        merged.setdefault(tuple(sorted(params.items())), set()).add(tag)
    sizes = [Size(params, frozenset(tags)) for params, tags in merged.items()]
    return tuple(sorted(sizes, key=lambda s: _volume(s.values)))


def _volume(params: Mapping[str, int]) -> int:
    volume = 1
    for value in params.values():
        volume *= value
    return volume
