"""The most memory a call has allocated at once, on top of what existed before it.

On CUDA the caching allocator keeps the statistic. The CPU allocator keeps
none, so :class:`AllocationTracker` watches every aten operation and counts the
bytes of each new storage until that storage is freed.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["AllocationTracker", "peak_bytes"]


class AllocationTracker(TorchDispatchMode):
    """Count the bytes of the storages created while active: now live, at the peak, and in all.

    A storage counts from the operation that creates it until it is freed, however
    many tensors view it. Outputs that share a storage with an input (views and
    in-place operations) allocate nothing. Scratch memory a kernel frees before it
    returns is not seen.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.total = 0
        self._tracked: set[int] = set()

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Skipping Dynamo wraps __torch_dispatch__ in torch._dynamo.disable, whose first
        # call imports torch._dynamo: seconds, for a mode that never runs under compile.
        return False

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs: set[int] | None = None
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            if id(storage) in self._tracked:
                continue
            if inputs is None:
                inputs = {
                    a.untyped_storage().data_ptr()
                    for a in tree_flatten((args, kwargs))[0]
                    if isinstance(a, torch.Tensor)
                }
            if storage.data_ptr() in inputs:
                continue
            self._allocated(storage)
        return out

    def _allocated(self, storage: torch.UntypedStorage) -> None:
        # torch keeps one Python object per storage for as long as the storage
        # lives, so its finaliser runs exactly when the memory is released.
        key, nbytes = id(storage), storage.nbytes()
        self._tracked.add(key)
        self.live += nbytes
        self.total += nbytes
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._freed, key, nbytes)

    def _freed(self, key: int, nbytes: int) -> None:
        self._tracked.discard(key)
        self.live -= nbytes


def peak_bytes(call: Callable[[], object], device: torch.device) -> int:
    """The peak bytes allocated by one ``call``, its result included.

    Args:
        call: runs the work once.
        device: where it runs; CUDA reads the allocator's own peak.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = call()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        del result
        return peak
    with AllocationTracker() as tracker:
        result = call()
        del result
    return tracker.peak
