"""Call a student's function so that whatever it does fails only that call.

:class:`Sandbox` runs each call in a worker process (started on the first
call and kept for the next ones, since importing torch takes seconds) and
turns every way a call can end into an :class:`Outcome`: a result, an
exception with the student's own line, a hang, a dead process, a call to
``sys.exit`` or a use of autograd. ``Sandbox(isolate=False)`` runs the same
steps (load the file, copy the arguments, run under
:func:`~gradcheck_kit.guard.forbid_autograd`, copy the result) in the current
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
"""

from __future__ import annotations

import contextlib
import dataclasses
import dis
import enum
import faulthandler
import inspect
import io
import multiprocessing
import os
import pickle
import signal
import sys
import tempfile
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from gradcheck_kit.loading import load_module

if TYPE_CHECKING:
    from multiprocessing.context import ForkServerContext, SpawnContext

    import torch

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

_GiB = 1024**3


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
    """A tensor a function returned: a CPU copy, and what it was."""

    tensor: torch.Tensor
    info: TensorInfo


@dataclass(frozen=True)
class Outcome:
    """How one call ended.

    ``value`` is the return value for ``"ok"``, with every tensor in it (also
    inside lists, tuples, dicts and SimpleNamespaces) replaced by a
    :class:`ReturnedTensor`, and ``None`` otherwise. ``message`` says what
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


class WorkerStartError(RuntimeError):
    """The worker process could not be started; no student code had run."""


def unwrap(value: Any) -> Any:
    """Replace every :class:`ReturnedTensor` in ``value`` by its CPU tensor."""
    return _map(value, lambda t: t, lambda v: v.tensor if isinstance(v, ReturnedTensor) else v)


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
        self._worker: _Worker | None = None

    def call(
        self,
        path: str | os.PathLike[str],
        func_name: str,
        *args: Any,
        device: str = "cpu",
        timeout: float | None = None,
        guarded: bool = True,
        **kwargs: Any,
    ) -> Outcome:
        """Call ``func_name(*args, **kwargs)`` from the file at ``path``.

        The file is loaded afresh, so edits are seen. Tensors in the
        arguments (also inside lists, tuples, dicts and SimpleNamespaces) are
        handed over as detached copies on ``device``: the caller's tensors
        are never modified. ``device``, ``timeout`` and ``guarded`` are the
        sandbox's own keywords; every other keyword goes to the function.

        Args:
            path: the implementation file.
            func_name: the function to call.
            device: where the tensor arguments go, e.g. ``"cuda"``.
            timeout: this call's limit in seconds, instead of the sandbox's;
                ignored in this process.
            guarded: run under :func:`~gradcheck_kit.guard.forbid_autograd`. A
                grading harness that needs autograd for its references, and
                guards the student's calls itself, passes False.

        Returns:
            The :class:`Outcome`.

        Raises:
            WorkerStartError: when no worker process could be started.
        """
        call = _Call(str(path), func_name, args, kwargs, device, guarded=guarded)
        if not self.isolate:
            return _run_here(call)
        call = dataclasses.replace(
            call,
            # A tensor that requires grad and is not a leaf cannot be pickled.
            args=_map(args, lambda t: t.detach()),
            kwargs=_map(kwargs, lambda t: t.detach()),
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

    def _run_in_worker(self, call: _Call, limit: float) -> Outcome:
        payload = pickle.dumps(call, protocol=pickle.HIGHEST_PROTOCOL)
        if self._worker is not None and not self._worker.process.is_alive():
            self.close()
        if self._worker is None:
            self._worker = _Worker(self.start_timeout)
        worker = self._worker
        started = time.perf_counter()
        try:
            answer = worker.ask(payload, limit)
        except BaseException:  # e.g. Ctrl-C while waiting: leave no worker behind
            self.close()
            raise
        waited = time.perf_counter() - started
        if answer is _Lost.TIMEOUT:
            worker.process.kill()
            worker.process.join(10)
            reply = _Reply(_timeout(limit, waited), reusable=False)
        elif answer is _Lost.DIED:
            worker.process.join(10)  # its exit code, once the process is reaped
            reply = _Reply(_crashed(worker.process.exitcode, call.memory_limit, waited), reusable=False)
        else:
            try:
                reply = pickle.loads(answer)
            except Exception as exc:  # e.g. an instance of a class defined in the student's file
                reply = _Reply(_failure("error", f"the return value could not be received: {_exception_line(exc)}"))
        stdout = worker.output()
        if not reply.reusable:
            self.close()
        return dataclasses.replace(reply.outcome, stdout=stdout)


# ----------------------------------------------------------------------------
# One call: the same steps in the worker and in this process.


@dataclass(frozen=True)
class _Call:
    path: str
    func_name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    device: str
    memory_limit: int | None = None
    guarded: bool = True


class _Reply(NamedTuple):
    outcome: Outcome
    # False when the call may have left the worker unfit for the next one.
    reusable: bool = True


class _Unsendable(Exception):
    pass


def _run_here(call: _Call) -> Outcome:
    parts: list[str] = []
    out = _CappedWriter(parts.append, OUTPUT_LIMIT)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        reply = _execute(call)
    out.finish()
    return dataclasses.replace(reply.outcome, stdout="".join(parts))


def _execute(call: _Call) -> _Reply:
    import torch

    path = Path(call.path).resolve()
    with _torch_settings(torch):
        try:
            module = load_module(path)
        except SystemExit as exc:
            return _Reply(_exited(exc, path))
        except Exception as exc:
            return _Reply(_import_failure(exc, path))
        try:
            reply = _call_function(module, call, path, torch)
        finally:
            # Each call loads the file anew; the persistent worker must not collect them.
            # Gone from sys.modules, the module's own classes also fail the check
            # in _sendable, as they would fail to unpickle in the parent.
            sys.modules.pop(module.__name__, None)
    return _send_back(reply) if reply.outcome.ok else reply


def _call_function(module: ModuleType, call: _Call, path: Path, torch: ModuleType) -> _Reply:
    from gradcheck_kit.guard import forbid_autograd

    func = getattr(module, call.func_name, None)
    if not callable(func):
        return _Reply(_failure("missing_function", _missing(module, call.func_name, path)))
    try:
        on_cuda = torch.device(call.device).type == "cuda"
        args = _map(call.args, lambda t: t.detach().to(call.device, copy=True))
        kwargs = _map(call.kwargs, lambda t: t.detach().to(call.device, copy=True))
    except Exception as exc:
        return _Reply(_failure("error", f"the arguments could not be moved to {call.device}: {_exception_line(exc)}"))
    memory_limit = None if on_cuda else call.memory_limit
    threads = threading.active_count()
    started = time.perf_counter()
    try:
        guard = forbid_autograd() if call.guarded else contextlib.nullcontext()
        with _memory_limit(memory_limit, torch), guard:
            value = func(*args, **kwargs)
            if on_cuda:
                torch.cuda.synchronize(call.device)
    except SystemExit as exc:
        return _Reply(_exited(exc, path, time.perf_counter() - started))
    except Exception as exc:
        outcome = _raised(exc, path, time.perf_counter() - started, memory_limit)
        return _Reply(outcome, reusable=not (on_cuda and _breaks_cuda(exc)))
    outcome = Outcome("ok", value, duration=time.perf_counter() - started)
    # A thread the function left running would go on competing with later calls.
    return _Reply(outcome, reusable=threading.active_count() <= threads)


def _send_back(reply: _Reply) -> _Reply:
    """Replace tensors in the returned value by CPU copies; refuse what cannot be pickled."""
    outcome = reply.outcome
    try:
        value = _map(outcome.value, _returned_tensor, _sendable)
    except _Unsendable as exc:
        return _Reply(_failure("error", str(exc), duration=outcome.duration), reply.reusable)
    except Exception as exc:
        message = f"the return value could not be copied back: {_exception_line(exc)}"
        return _Reply(_failure("error", message, duration=outcome.duration), reply.reusable)
    return _Reply(dataclasses.replace(outcome, value=value), reply.reusable)


@contextlib.contextmanager
def _torch_settings(torch: ModuleType) -> Iterator[None]:
    """Run with TF32 off, and undo the global settings the student's code changes."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (torch.get_default_dtype(), torch.is_grad_enabled(), matmul.allow_tf32, cudnn.allow_tf32)
    # TF32 keeps 10 mantissa bits: errors far above any gradient tolerance.
    matmul.allow_tf32 = False
    cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_default_dtype(saved[0])
        torch.set_grad_enabled(saved[1])
        matmul.allow_tf32, cudnn.allow_tf32 = saved[2], saved[3]


@contextlib.contextmanager
def _memory_limit(limit: int | None, torch: ModuleType) -> Iterator[None]:
    if limit is None or sys.platform == "win32" or torch.cuda.is_initialized():
        yield
        return
    import resource

    # Only the soft limit is lowered, so that it can be raised again afterwards.
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _map(value: Any, on_tensor: Callable[[Any], Any], on_other: Callable[[Any], Any] = lambda v: v) -> Any:
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


def _returned_tensor(tensor: torch.Tensor) -> ReturnedTensor:
    # A copy, so that a view of a large tensor does not drag its whole storage along.
    return ReturnedTensor(tensor.detach().to("cpu", copy=True), TensorInfo.of(tensor))


def _sendable(value: Any) -> Any:
    try:
        pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        name = type(value).__qualname__
        raise _Unsendable(f"returned a {name}, which cannot be sent back to the grader: {exc}") from exc
    return value


# ----------------------------------------------------------------------------
# Saying how a call ended.


def _failure(status: Status, message: str, trace: str = "", duration: float = 0.0) -> Outcome:
    return Outcome(status, None, message, trace, duration)


def _exception_line(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _describe(exc: BaseException, path: Path, headline: str | None = None) -> tuple[str, str]:
    """Return a message ending with the student's last line, and the traceback from the student's first.

    Args:
        exc: the exception.
        path: the student's file.
        headline: the message's first line, instead of the exception's own.
    """
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == str(path):
            frames.append(tb)
        tb = tb.tb_next
    message = _exception_line(exc) if headline is None else headline
    if frames:
        summary = traceback.extract_tb(frames[-1], limit=1)[0]
        message += f"\nat {path.name}:{summary.lineno}: {(summary.line or '').strip()}"
    trace = "".join(traceback.format_exception(type(exc), exc, frames[0] if frames else None))
    return message, trace


def _raised(exc: Exception, path: Path, duration: float, memory_limit: int | None) -> Outcome:
    from gradcheck_kit.guard import AutogradForbidden

    forbidden = next((e for e in _chain(exc) if isinstance(e, AutogradForbidden)), None)
    if forbidden is not None:
        return _failure("forbidden", *_describe(exc, path, _exception_line(forbidden)), duration)
    message, trace = _describe(exc, path)
    if isinstance(exc, NotImplementedError) and _raised_by_student(exc, path):
        return _failure("not_started", str(exc) or "NotImplementedError", trace, duration)
    if memory_limit is not None and (isinstance(exc, MemoryError) or "can't allocate memory" in str(exc)):
        message += f"\n(a call may use at most {memory_limit / _GiB:.3g} GiB of memory)"
    return _failure("error", message, trace, duration)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _raised_by_student(exc: BaseException, path: Path) -> bool:
    """Whether a ``raise`` statement in the student's file raised ``exc``.

    Torch raises NotImplementedError too ("Could not run 'aten::sort' with
    arguments from the 'SparseCPU' backend"), from the student's line that
    called it; that is an error, not an untouched stub.
    """
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None or tb.tb_frame.f_code.co_filename != str(path):
        return False
    for instruction in dis.get_instructions(tb.tb_frame.f_code):
        if instruction.offset == tb.tb_lasti:
            return instruction.opname in ("RAISE_VARARGS", "RERAISE")
    return False


def _breaks_cuda(exc: Exception) -> bool:
    # After a device-side assert every later CUDA call in the process fails.
    return "CUDA error" in str(exc) or type(exc).__name__ == "AcceleratorError"


def _exited(exc: SystemExit, path: Path, duration: float = 0.0) -> Outcome:
    called = "sys.exit()" if exc.code is None else f"sys.exit({exc.code!r})"
    headline = f"the code called {called} (or exit or quit); a graded function must return its result"
    return _failure("exited", *_describe(exc, path, headline), duration)


def _import_failure(exc: Exception, path: Path) -> Outcome:
    if isinstance(exc, SyntaxError) and exc.filename == str(path):
        message = f"{type(exc).__name__}: {exc.msg}\nat {path.name}:{exc.lineno}: {(exc.text or '').strip()}"
        return _failure("import_error", message, "".join(traceback.format_exception_only(type(exc), exc)))
    message, trace = _describe(exc, path)
    return _failure("import_error", f"{path.name} could not be imported: {message}", trace)


def _missing(module: ModuleType, func_name: str, path: Path) -> str:
    if hasattr(module, func_name):
        kind = type(getattr(module, func_name)).__name__
        return f"{path.name} defines {func_name!r} as a {kind}, not a function"
    defined = [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == module.__name__
    ]
    names = ", ".join(defined) if defined else "no functions at all"
    return f"{path.name} has no function {func_name!r}; it defines {names}"


def _timeout(limit: float, waited: float) -> Outcome:
    message = (
        f"the call did not finish within {limit:g} s and was stopped; an infinite loop "
        "or a very slow Python loop (over every element of a tensor, say) is the usual cause"
    )
    return _failure("timeout", message, duration=waited)


# By name: not every platform has every signal.
_SIGNAL_MEANINGS = {
    "SIGKILL": "usually the machine ran out of memory and the kernel's out-of-memory killer stopped it",
    "SIGSEGV": "native code touched invalid memory, often because memory ran out",
    "SIGABRT": "a native library hit a fatal error, often a failed memory allocation",
    "SIGBUS": "native code touched invalid memory",
    "SIGFPE": "an arithmetic fault in native code, such as an integer division by zero",
}


def _crashed(code: int | None, memory_limit: int | None, waited: float) -> Outcome:
    if code is None or code >= 0:
        message = (
            f"the worker process exited with code {code} during the call: the code (or a library it "
            "called) ended the process directly, e.g. with os._exit(), which skips all cleanup"
        )
    else:
        sig = signal.Signals(-code)
        meaning = _SIGNAL_MEANINGS.get(sig.name, "it was stopped from outside or by the operating system")
        message = f"the worker process was killed by {sig.name} during the call: {meaning}"
        if memory_limit is not None:
            message += f" (a call may use at most {memory_limit / _GiB:.3g} GiB of memory)"
    return _failure("crashed", message, duration=waited)


# ----------------------------------------------------------------------------
# The worker process.


class _Lost(enum.Enum):
    """Why a worker sent no reply."""

    TIMEOUT = "timeout"
    DIED = "died"


class _Worker:
    """A child process that runs :func:`_execute` for each request it receives."""

    def __init__(self, start_timeout: float) -> None:
        fd, self.log_path = tempfile.mkstemp(prefix="gradcheck-worker-", suffix=".log")
        os.close(fd)
        context = _context()
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, self.log_path), daemon=True)
        try:
            self.process.start()
        except Exception as exc:
            raise WorkerStartError(f"the sandbox's worker process could not be started: {exc}") from exc
        finally:
            child.close()
            self._finalizer = weakref.finalize(self, _stop, self.process, self.conn, self.log_path)
        if wait([self.conn, self.process.sentinel], start_timeout) and self._ready():
            return
        alive = self.process.is_alive()
        self.process.kill()
        self.process.join(10)
        log = self.output()
        code = self.process.exitcode
        self.stop()
        why = f"was not ready within {start_timeout:g} s" if alive else f"exited with code {code} while starting"
        raise WorkerStartError(f"the sandbox's worker process {why}\n{log}")

    def _ready(self) -> bool:
        try:
            return self.conn.recv_bytes() == b"ready"
        except (EOFError, OSError):
            return False

    def ask(self, payload: bytes, limit: float) -> bytes | _Lost:
        """Send one request; return the reply, or why there is none."""
        try:
            self.conn.send_bytes(payload)
            ready = wait([self.conn, self.process.sentinel], limit)
            if not ready:
                return _Lost.TIMEOUT
            if self.conn not in ready:
                return _Lost.DIED
            return self.conn.recv_bytes()
        except (EOFError, OSError):
            return _Lost.DIED

    def output(self) -> str:
        """What the last request printed, its start and end kept when it is long."""
        limit = 2 * OUTPUT_LIMIT  # room for output of native code and faulthandler
        try:
            with open(self.log_path, "rb") as log:
                data = log.read(8 * limit)
                if log.read(1):
                    log.seek(-4 * limit, os.SEEK_END)
                    data = data[: 4 * limit] + log.read()
        except OSError:
            return ""
        text = data.decode("utf-8", "replace")
        if len(text) > limit:
            text = text[: limit // 2] + "\n[...]\n" + text[-limit // 2 :]
        return text

    def stop(self) -> None:
        self._finalizer()


def _context() -> ForkServerContext | SpawnContext:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # Has no effect once the fork server runs; workers then import torch themselves.
    context.set_forkserver_preload(["gradcheck_kit.guard"])
    return context


def _stop(process: multiprocessing.process.BaseProcess, conn: Connection, log_path: str) -> None:
    if process.pid is not None:
        process.kill()
        process.join(10)
    conn.close()
    with contextlib.suppress(OSError):
        os.unlink(log_path)


def _serve(conn: Connection, log_path: str) -> None:
    """The worker's main loop: run requests until the parent hangs up."""
    # Ctrl-C in a terminal reaches the whole process group; the parent decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = _CappedWriter(lambda text: os.write(1, text.encode("utf-8", "replace")), OUTPUT_LIMIT)
    _redirect_output(log_path, out)
    faulthandler.enable(file=2)
    # Imported before "ready", so that no call's timeout pays for them.
    import torch  # noqa: F401

    import gradcheck_kit.guard  # noqa: F401

    conn.send_bytes(b"ready")
    while True:
        try:
            request = conn.recv_bytes()
        except EOFError:
            return
        _redirect_output(log_path, out)
        try:
            reply = _execute(pickle.loads(request))
        except BaseException as exc:  # e.g. a KeyboardInterrupt the student raised
            reply = _Reply(_failure("error", _exception_line(exc), "".join(traceback.format_exception(exc))), False)
        out.finish()
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            message = f"the return value could not be sent back: {_exception_line(exc)}"
            data = pickle.dumps(_Reply(_failure("error", message)))
        conn.send_bytes(data)


def _redirect_output(log_path: str, out: _CappedWriter) -> None:
    """Send both streams to the emptied log, whatever the last call did to them.

    Output of native code and faulthandler's report go there too, so the
    parent can read all of it after the call, and none reaches its terminal.
    """
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_TRUNC)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    out.reset()
    sys.stdout = sys.stderr = out


class _CappedWriter(io.TextIOBase):
    """A text stream passing on the first ``limit`` characters written after :meth:`reset`."""

    def __init__(self, sink: Callable[[str], object], limit: int) -> None:
        super().__init__()
        self._sink = sink
        self._limit = limit
        self.reset()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def reset(self) -> None:
        self._left, self._dropped = self._limit, 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        kept = text[: self._left]
        if kept:
            self._sink(kept)
            self._left -= len(kept)
        self._dropped += len(text) - len(kept)
        return len(text)

    def finish(self) -> None:
        """Say how much output was left out, if any."""
        if self._dropped:
            self._sink(f"\n[... {self._dropped} more characters of output not shown]\n")
