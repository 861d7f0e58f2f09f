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

Each worker confines itself before it runs anything of the student's
(:mod:`~gradcheck_kit.sandbox.confine`): hard limits on memory, processes, file
sizes and open files, a private temporary folder, its own user when the grader is
root (:mod:`~gradcheck_kit.sandbox.isolation`), the submission's folders as its
working directory and ``sys.path``, Landlock where the kernel has it, and an audit
hook that refuses the course's solutions, the grader's modules, other files,
processes, signals and the network (:mod:`~gradcheck_kit.sandbox.audit`). A worker
is confined for the folders, device and permissions of the call that started it;
a call that needs others gets a new worker. After each call every other process of
the worker's user is ended.

The rest is private, each module below the one before:
:mod:`gradcheck_kit.sandbox.worker` runs a call in the worker process (starting,
asking and stopping it) or in this one; :mod:`gradcheck_kit.sandbox.call` holds the
steps of one call and says how it ended; :mod:`gradcheck_kit.sandbox.reply` writes
and reads what a worker sends back; :mod:`gradcheck_kit.sandbox.outcome` holds the
types they share, which this module re-exports.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import os
import pickle
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradcheck_kit.sandbox.call import Call
from gradcheck_kit.sandbox.confine import Confinement
from gradcheck_kit.sandbox.isolation import SandboxUser, SandboxUserError, sandbox_user
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
_MiB = 1024**2
#: gradcheck_kit's own folder: never a submission's, and out of reach of student code.
PACKAGE = str(Path(__file__).resolve().parent.parent)


@dataclass(frozen=True)
class _Scope:
    """What a worker is confined for: a call with another scope gets a worker of its own."""

    folders: tuple[str, ...]
    processes: bool
    cuda: bool
    # Modules of gradcheck_kit the call's driver imports, loaded before the worker is confined.
    preload: tuple[str, ...] = ()

    def serves(self, other: _Scope) -> bool:
        # A worker that may use CUDA also serves calls on the CPU, as before it had workers per device.
        same = (self.folders, self.processes, self.preload)
        return same == (other.folders, other.processes, other.preload) and (self.cuda or not other.cuda)


class Sandbox:
    """Runs functions from implementation files, one :class:`Outcome` per call.

    Calls run one at a time: a Sandbox is not to be shared between threads.

    Args:
        timeout: seconds a call may take before its worker is killed.
        memory_limit: bytes of address space a worker for calls on the CPU
            may hold (a hard ``RLIMIT_AS``, set before any student code runs;
            the worker takes about 0.7 GiB once torch is imported), so that a
            blow-up fails with a MemoryError instead of exhausting the
            machine. ``None`` for no limit. A worker for calls on CUDA runs
            without it, also for its calls on the CPU: CUDA reserves far more
            address space than it uses.
        isolate: ``False`` runs calls in this process: same loading, guard
            and copying, but no timeout, no limits, no audit hook, and an exit
            or a crash takes the caller down with it.
        start_timeout: seconds to wait for a new worker to be ready; not
            counted against any call's ``timeout``.
        user: the user workers switch to when this process is root: a name or
            uid; None for ``GRADCHECK_SANDBOX_USER``, and when that is unset, a
            uid of its own (see :mod:`~gradcheck_kit.sandbox.isolation`).
        reply_limit: the most bytes a call's reply may take, checked before it is read.
        process_limit: processes and threads the worker's user may have
            (``RLIMIT_NPROC``); torch's thread pools need some. None: 256, or two a
            core and 64 more on a machine with more than 96 cores.
        file_size_limit: the largest file a worker may write (``RLIMIT_FSIZE``).
        open_files_limit: file descriptors a worker may hold (``RLIMIT_NOFILE``).
    """

    def __init__(
        self,
        *,
        timeout: float = 20.0,
        memory_limit: int | None = 8 * _GiB,
        isolate: bool = True,
        start_timeout: float = 120.0,
        user: str | int | None = None,
        reply_limit: int = _GiB,
        process_limit: int | None = None,
        file_size_limit: int = 256 * _MiB,
        open_files_limit: int = 1024,
    ) -> None:
        self.timeout = timeout
        self.memory_limit = memory_limit
        self.isolate = isolate
        self.start_timeout = start_timeout
        self.user = user
        self.reply_limit = reply_limit
        self.process_limit = process_limit
        self.file_size_limit = file_size_limit
        self.open_files_limit = open_files_limit
        self._worker: Worker | None = None
        self._scope: _Scope | None = None
        #: Processes of the sandbox's user ended after calls, as (function, pids): none, unless code escaped.
        self.ended: list[tuple[str, list[int]]] = []

    def call(
        self,
        path: str | os.PathLike[str],
        func_name: str,
        *args: Any,
        device: str = "cpu",
        timeout: float | None = None,
        student_files: Sequence[str | os.PathLike[str]] = (),
        processes: bool = False,
        **kwargs: Any,
    ) -> Outcome:
        """Call ``func_name(*args, **kwargs)`` from the file at ``path``.

        The file is loaded afresh, so edits are seen. Tensors in the
        arguments (also inside lists, tuples, dicts and SimpleNamespaces) are
        handed over as detached copies on ``device``: the caller's tensors
        are never modified. Every call runs under
        :func:`~gradcheck_kit.sandbox.guard.forbid_autograd`, with the references out
        of reach (the folders the code may read, its ``sys.path`` and working
        directory, the modules it may import). ``device``, ``timeout``,
        ``student_files`` and ``processes`` are the sandbox's own keywords; every
        other keyword goes to the function.

        Args:
            path: the implementation file.
            func_name: the function to call.
            device: where the tensor arguments go, e.g. ``"cuda"``.
            timeout: this call's limit in seconds, instead of the sandbox's;
                ignored in this process.
            student_files: the student's files, when the file at ``path`` is a
                driver of the course rather than the student's: each is loaded
                (its top-level code under the guard and limits, failures told
                as that file's) and the loaded modules are passed to
                ``func_name`` before ``args``. An exception is then told at the
                student's line, whatever driver frames lie between.
            processes: the code may start processes and use ctypes (Triton's
                compiler runs ``ptxas``); refused otherwise.

        Returns:
            The :class:`Outcome`.

        Raises:
            WorkerStartError: when no worker process could be started.
        """
        # Resolved here: the worker's working directory is not necessarily this one.
        files = tuple(os.path.abspath(f) for f in student_files)
        path = os.path.abspath(path)
        sources = _read_sources((path, *files))
        call = Call(path, func_name, args, kwargs, device, student_files=files, sources=sources)
        if not self.isolate:
            return run_here(call)
        preload = _imported_by(path, _mtime(path)) if files else ()
        scope = _Scope(_folders(files or (path,)), processes, _on_cuda(device), preload)
        call = dataclasses.replace(
            call,
            # A tensor that requires grad and is not a leaf cannot be pickled.
            args=map_tensors(args, lambda t: t.detach()),
            kwargs=map_tensors(kwargs, lambda t: t.detach()),
        )
        return self._run_in_worker(call, scope, self.timeout if timeout is None else timeout)

    def close(self) -> None:
        """Stop the worker process, if one is running, and every process of its user."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
            self._scope = None

    def user_in_force(self) -> SandboxUser | None:
        """The user workers switch to; None when this process cannot switch users (it is not root).

        Raises:
            SandboxUserError: when the user configured cannot be used.
        """
        return sandbox_user(self.user)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run_in_worker(self, call: Call, scope: _Scope, limit: float) -> Outcome:
        if self._worker is not None and not (self._worker.process.is_alive() and self._scope.serves(scope)):
            self.close()
        if self._worker is None:
            self._worker, self._scope = self._start(scope), scope
        worker = self._worker
        # A worker for CUDA runs without a memory limit: the CUDA driver maps far more address space than it uses.
        memory_limit = worker.confinement.memory_limit
        payload = pickle.dumps(dataclasses.replace(call, memory_limit=memory_limit), protocol=pickle.HIGHEST_PROTOCOL)
        started = time.perf_counter()
        try:
            answer = worker.ask(payload, limit)
        except BaseException:  # e.g. Ctrl-C while waiting: leave no worker behind
            self.close()
            raise
        reply = worker.reply(answer, limit, time.perf_counter() - started, memory_limit)
        notes = [note for folder, note in worker.unreadable.items() if _unreadable_mattered(reply.outcome, folder)]
        if notes:
            message = reply.outcome.message + "".join(f"\n({note})" for note in notes)
            reply = reply._replace(outcome=dataclasses.replace(reply.outcome, message=message))
        if not reply.reusable:
            self.close()
        else:
            ended = worker.end_strays()
            if ended:
                self.ended.append((call.func_name, ended))
                note = f"(the call left {len(ended)} process(es) running; the grader ended them)"
                return dataclasses.replace(reply.outcome, message=f"{reply.outcome.message}\n{note}".lstrip())
        return reply.outcome

    def _start(self, scope: _Scope) -> Worker:
        try:
            user = sandbox_user(self.user)
        except SandboxUserError as exc:
            raise WorkerStartError(f"the sandbox's worker process could not be started: {exc}") from exc
        confinement = Confinement(
            uid=None if user is None else user.uid,
            gid=None if user is None else user.gid,
            memory_limit=None if scope.cuda else self.memory_limit,
            processes=self.process_limit or max(256, 2 * (os.cpu_count() or 1) + 64),
            file_size=self.file_size_limit,
            open_files=self.open_files_limit,
            temp_dir="",
            folders=scope.folders,
            spawn=scope.processes,
            cuda=scope.cuda,
            package=PACKAGE,
            preload=scope.preload,
        )
        return Worker(self.start_timeout, confinement, user, self.reply_limit)


def _unreadable_mattered(outcome: Outcome, folder: str) -> bool:
    """Whether a failed call may have failed because the worker could not read ``folder``: a module of it, a file."""
    if outcome.ok:
        return False
    if "Permission denied" in outcome.message or "PermissionError" in outcome.message:
        return True
    missing = re.search(r"No module named '([\w.]+)'", outcome.message)
    if missing is None:
        return False
    top = missing[1].partition(".")[0]
    return os.path.exists(os.path.join(folder, top + ".py")) or os.path.isdir(os.path.join(folder, top))


def _on_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


def _folders(files: Sequence[str]) -> tuple[str, ...]:
    """The submission's folders: those of its files, but for files of gradcheck_kit (a driver, the reference layers)."""
    folders: list[str] = []
    for file in files:
        folder = os.path.dirname(os.path.realpath(file))
        if folder != PACKAGE and not folder.startswith(PACKAGE + os.sep) and folder not in folders:
            folders.append(folder)
    return tuple(folders)


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


@functools.lru_cache(maxsize=64)
def _imported_by(driver: str, mtime: int) -> tuple[str, ...]:
    """The modules of gradcheck_kit a driver imports, anywhere in its file, and those they import in turn.

    A confined worker refuses to import gradcheck_kit's modules (they hold the references) or
    to read their files, for the driver as for the student's code, which runs in the same
    process: what the driver needs is imported before the worker is confined. ``mtime`` keys
    the cache: an edited driver is read again.
    """
    found: list[str] = []
    todo = [(driver, None)]
    while todo:
        file, package = todo.pop()
        try:
            tree = ast.parse(Path(file).read_bytes())
        except (OSError, SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node.module, node.level, package)
                names = [base] + [f"{base}.{alias.name}" for alias in node.names] if base else []
            else:
                continue
            for name in names:
                if name.partition(".")[0] != "gradcheck_kit" or name in found:
                    continue
                origin = _module_file(name)
                if origin is not None:
                    found.append(name)
                    is_package = os.path.basename(origin) == "__init__.py"
                    todo.append((origin, name if is_package else name.rpartition(".")[0]))
    return tuple(sorted(found))


def _absolute(module: str | None, level: int, package: str | None) -> str | None:
    if level == 0:
        return module
    if package is None:
        return None
    parts = package.split(".")
    if level - 1 > len(parts) - 1:
        return None
    base = ".".join(parts[: len(parts) - (level - 1)])
    return f"{base}.{module}" if module else base


def _module_file(name: str) -> str | None:
    """The source file of module ``name`` of gradcheck_kit, without importing it; None for a name that is no module."""
    relative = name.split(".")[1:]
    for candidate in (Path(PACKAGE, *relative).with_suffix(".py"), Path(PACKAGE, *relative, "__init__.py")):
        if candidate.is_file():
            return str(candidate)
    return None


def _read_sources(files: Sequence[str]) -> tuple[tuple[str, bytes], ...]:
    """The files' contents by resolved path, read here: the worker's user may not be able to read them."""
    sources = []
    for file in files:
        real = str(Path(file).resolve())
        try:
            with open(real, "rb") as handle:
                sources.append((real, handle.read()))
        except OSError:  # no such file: the worker says so, as it says any failure to load
            continue
    return tuple(sources)
