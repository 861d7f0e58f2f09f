"""The worker's side of the speed line: run a student's chunked and fused passes, then time them round by round.

A sandboxed worker loads this file as the driver of the student's exercise
files, and imports before confining itself every module of gradcheck_kit the
file names, and the modules those name. So it names only what it runs: the
chain the three fused functions plug into (:mod:`gradcheck_kit.bench.mlp_chain`)
and the stopping rule (:mod:`gradcheck_kit.bench.ratio`), and no module that
holds a reference solution.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from types import ModuleType, SimpleNamespace
from typing import Any

__all__ = ["BLOCK_SECONDS", "time_passes"]

#: Seconds each pass is timed for in a round: long enough for the clock, short enough for many rounds.
BLOCK_SECONDS = 0.01


def time_passes(
    ex1: ModuleType,
    ex2: ModuleType,
    ex3: ModuleType,
    ex4: ModuleType,
    f: dict[str, Any],
    names: Sequence[str],
    seconds: float,
) -> dict[str, Any]:
    """Run each pass once, then time both in rounds until their ratio is known or ``seconds`` have passed.

    Args:
        ex1, ex2, ex3, ex4: the student's exercise modules.
        f: the forward pass at the notebook's size, by the notebook's names.
        names: the parameters whose gradients are sent back.
        seconds: the time allowed for the rounds, once :data:`~gradcheck_kit.bench.ratio.MIN_ROUNDS` are done.

    Returns:
        ``{"grads": {pass: {name: gradient}}, "seconds": {pass: [seconds a call, per round]},
        "elapsed": seconds the rounds took}``, for ``pass`` in ``chunked`` and ``fused``.
    """
    # torch.utils.benchmark's Timer times each block: it warms the call up, pins the thread
    # count and waits for an accelerator around the clock. Its blocked_autorange would pick
    # the block size anew for each pass in each round; the rounds here need the two passes
    # timed back to back, so the block size is picked once and each round is one timeit().
    import torch
    from torch.utils.benchmark import Timer

    from gradcheck_kit.bench.mlp_chain import fused_backward
    from gradcheck_kit.bench.ratio import MIN_ROUNDS, RatioEstimate

    # Each pass gets inputs of its own: a student's code may write into what it is given.
    own = {"chunked": SimpleNamespace(**f), "fused": SimpleNamespace(**{k: _copy(v) for k, v in f.items()})}
    calls = {
        "chunked": lambda: ex1.chunked_backward(own["chunked"]),
        "fused": lambda: fused_backward(
            own["fused"], ex2.cross_entropy_backward, ex3.batchnorm_backward, ex4.embedding_backward
        ),
    }
    grads = {}
    for key, call in calls.items():
        out = call()
        grads[key] = {k: out[k] for k in names if isinstance(out, dict) and k in out}
    # One thread: at the notebook's size no op has enough work to split, and on a busy
    # machine a second thread waiting for a core costs more than the whole op.
    # On the CPU the clock is this thread's CPU time: with one thread every op runs in it, and
    # the time it spends preempted by other processes is left out. With the wall clock, a busy
    # two-core machine gave 21x where it otherwise gives 5.5x, with an interval as narrow as a
    # right one's: load that comes in spells longer than a round makes the rounds' ratios move
    # together, which no interval from the rounds alone can see. On a GPU the work runs
    # elsewhere, so there it is the Timer's own clock: the wall clock, synchronised.
    on_cuda = any(isinstance(v, torch.Tensor) and v.is_cuda for v in f.values())
    clock = {} if on_cuda else {"timer": time.thread_time}
    timers = {key: Timer("call()", globals={"call": call}, num_threads=1, **clock) for key, call in calls.items()}
    number = {key: max(1, round(BLOCK_SECONDS / timer.timeit(1).mean)) for key, timer in timers.items()}
    times: dict[str, list[float]] = {key: [] for key in calls}
    started = time.perf_counter()
    while True:
        # Each pass goes first in every other round, so neither always runs on what the other left in the cache.
        order = list(calls) if len(times["chunked"]) % 2 == 0 else list(reversed(calls))
        for key in order:
            times[key].append(timers[key].timeit(number[key]).mean)
        if len(times["chunked"]) < MIN_ROUNDS:
            continue
        if time.perf_counter() - started > seconds or RatioEstimate.of(times["chunked"], times["fused"]).precise:
            break
    return {"grads": grads, "seconds": times, "elapsed": time.perf_counter() - started}


def _copy(value: Any) -> Any:
    return value.clone() if hasattr(value, "clone") else value
