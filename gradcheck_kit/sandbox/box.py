"""Call a student's function so that whatever it does fails only that call.

:class:`Sandbox` runs each call in a worker process (started on the first
call and kept for the next ones, since importing torch takes seconds) and
turns every way a call can end into an :class:`Outcome`: a result, an
exception with the student's own line, a hang, a dead process, a call to
``sys.exit`` or a use of autograd. ``Sandbox(isolate=False)`` runs the same
steps (load the file, copy the arguments, run under
:func:`~gradcheck_kit.sandbox.guard.forbid_autograd`, copy the result) in the current
process, for speed and debugging, where nothing stops a hang or an exit.

Returned tensors come back as :class:`ReturnedTensor`, a CPU copy together
with the :class:`TensorInfo` (dtype, shape, device) of what the function
returned, so that a grader can say "returned on cpu, expected cuda:0".

Workers are forked from multiprocessing's fork server, which imports torch
once and then never runs anything, so they start in milliseconds and, unlike
forks of a process that has used CUDA, can use CUDA (where there is no fork
server, they are spawned). The fork server stays for the life of the process.
As with any such child process, a script that uses a Sandbox needs the usual
``if __name__ == "__main__":`` guard; pytest and console scripts have it.

The rest is private, each module below the one before:
:mod:`gradcheck_kit.sandbox.worker` runs a call in the worker process (starting,
asking and stopping it) or in this one; :mod:`gradcheck_kit.sandbox.call` holds the
steps of one call and says how it ended; :mod:`gradcheck_kit.sandbox.reply` reads
what a worker sends back; :mod:`gradcheck_kit.sandbox.outcome` holds the types they
share, which this module re-exports.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import time
from collections.abc import Sequence
from typing import Any

from gradcheck_kit.sandbox.call import Call
from gradcheck_kit.sandbox.outcome import (
    OUTPUT_LIMIT,
    Outcome,
    ReturnedTensor,
    Status,
    TensorInfo,
    map_tensors,
    unwrap,
)
from gradcheck_kit.sandbox.worker import Worker, WorkerStartError, run_here

__all__ = [
    "OUTPUT_LIMIT",
    "Outcome",
    "ReturnedTensor",
    "Sandbox",
    "Status",
    "TensorInfo",
    "WorkerStartError",
    "unwrap",
]

_GiB = 1024**3


class Sandbox:
    """Runs functions from implementation files, one :class:`Outcome` per call.

    Calls run one at a time: a Sandbox is not to be shared between threads.

    Args:
        timeout: seconds a call may take before its worker is killed.
        memory_limit: bytes of address space the worker may hold during a
            call on the CPU (``RLIMIT_AS``; the worker takes about 0.7 GiB
            once torch is imported), so that a blow-up fails with a
            MemoryError instead of exhausting the machine. ``None`` for no
            limit. Calls on CUDA, and every call once CUDA is initialised,
            run without it: CUDA reserves far more address space than it uses.
        isolate: ``False`` runs calls in this process: same loading, guard
            and copying, but no timeout, no memory limit, and an exit or a
            crash takes the caller down with it.
        start_timeout: seconds to wait for a new worker to be ready; not
            counted against any call's ``timeout``.
    """

    def __init__(
        self,
        *,
        timeout: float = 20.0,
        memory_limit: int | None = 8 * _GiB,
        isolate: bool = True,
        start_timeout: float = 120.0,
    ) -> None:
        self.timeout = timeout
        self.memory_limit = memory_limit
        self.isolate = isolate
        self.start_timeout = start_timeout
        self._worker: Worker | None = None

    def call(
        self,
        path: str | os.PathLike[str],
        func_name: str,
        *args: Any,
        device: str = "cpu",
        timeout: float | None = None,
        guarded: bool = True,
        student_files: Sequence[str | os.PathLike[str]] = (),
        **kwargs: Any,
    ) -> Outcome:
        """Call ``func_name(*args, **kwargs)`` from the file at ``path``.

        The file is loaded afresh, so edits are seen. Tensors in the
        arguments (also inside lists, tuples, dicts and SimpleNamespaces) are
        handed over as detached copies on ``device``: the caller's tensors
        are never modified. ``device``, ``timeout``, ``guarded`` and
        ``student_files`` are the sandbox's own keywords; every other keyword
        goes to the function.

        Args:
            path: the implementation file.
            func_name: the function to call.
            device: where the tensor arguments go, e.g. ``"cuda"``.
            timeout: this call's limit in seconds, instead of the sandbox's;
                ignored in this process.
            guarded: run under :func:`~gradcheck_kit.sandbox.guard.forbid_autograd`. A
                grading harness that needs autograd for its references, and
                guards the student's calls itself, passes False.
            student_files: the student's files, when the file at ``path`` is a
                driver of the course rather than the student's: each is loaded
                (its top-level code under the guard and limits, failures told
                as that file's) and the loaded modules are passed to
                ``func_name`` before ``args``. An exception is then told at the
                student's line, whatever driver frames lie between.

        Returns:
            The :class:`Outcome`.

        Raises:
            WorkerStartError: when no worker process could be started.
        """
        # Resolved here: the worker's working directory is not necessarily this one.
        files = tuple(os.path.abspath(f) for f in student_files)
        call = Call(os.path.abspath(path), func_name, args, kwargs, device, guarded=guarded, student_files=files)
        if not self.isolate:
            return run_here(call)
        call = dataclasses.replace(
            call,
            # A tensor that requires grad and is not a leaf cannot be pickled.
            args=map_tensors(args, lambda t: t.detach()),
            kwargs=map_tensors(kwargs, lambda t: t.detach()),
            memory_limit=self.memory_limit,
        )
        return self._run_in_worker(call, self.timeout if timeout is None else timeout)

    def close(self) -> None:
        """Stop the worker process, if one is running."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run_in_worker(self, call: Call, limit: float) -> Outcome:
        payload = pickle.dumps(call, protocol=pickle.HIGHEST_PROTOCOL)
        if self._worker is not None and not self._worker.process.is_alive():
            self.close()
        if self._worker is None:
            self._worker = Worker(self.start_timeout)
        worker = self._worker
        started = time.perf_counter()
        try:
            answer = worker.ask(payload, limit)
        except BaseException:  # e.g. Ctrl-C while waiting: leave no worker behind
            self.close()
            raise
        # A call on CUDA runs without the limit: the CUDA driver maps far more address space than it uses.
        memory_limit = None if call.device.startswith("cuda") else call.memory_limit
        reply = worker.reply(answer, limit, time.perf_counter() - started, memory_limit)
        if not reply.reusable:
            self.close()
        return reply.outcome
