"""One call of a student's function: the same steps in a worker process and in this one.

:func:`execute` loads the file afresh (from the source the grader read, when it
sent one), hands the function copies of the arguments on the requested device, runs
it under :func:`~gradcheck_kit.sandbox.guard.forbid_autograd`, and copies the tensors
it returned to the CPU. In a worker all of it runs under the worker's hard limits. Every way this can end becomes an
:class:`~gradcheck_kit.sandbox.outcome.Outcome`: an exception's message names the
student's own line, and an untouched stub's ``NotImplementedError`` is "not
started" rather than an error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import dis
import inspect
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from gradcheck_kit.sandbox.audit import Refused
from gradcheck_kit.sandbox.loading import load_module
from gradcheck_kit.sandbox.outcome import Outcome, ReturnedTensor, Status, TensorInfo, map_tensors
from gradcheck_kit.sandbox.reply import Reply, Unsendable, check_sendable

if TYPE_CHECKING:
    import torch

__all__ = ["Call", "MissingName", "Reply", "exception_line", "execute", "failure", "map_tensors"]

_GiB = 1024**3
#: The most bytes of tensors a function that raised sends back of what it had computed.
_HELD_LIMIT = 64 * 1024**2


@dataclass(frozen=True)
class Call:
    """Which function of which file to call, with what, and where."""

    path: str
    func_name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    device: str
    # The limit the call runs under, for messages: the worker sets its own when it starts.
    memory_limit: int | None = None
    # The student's files, loaded and handed to the function (a course's driver) as its first
    # arguments. Empty: the file at ``path`` is the student's, and its function is called.
    student_files: tuple[str, ...] = ()
    # The files' contents as the grader read them, by resolved path: a worker that may not
    # read the submission's folder still runs it. A file without one is read from disk.
    sources: tuple[tuple[str, bytes], ...] = ()


class MissingName(Exception):
    """A driver's way of saying that a student's file lacks a class or function the exercise needs."""


def execute(call: Call) -> Reply:
    """Load the files and run ``call``; never raises for what the student's code does."""
    import torch

    path = Path(call.path).resolve()
    files = tuple(Path(f).resolve() for f in call.student_files) or (path,)
    from gradcheck_kit.sandbox.guard import forbid_autograd

    # Top-level code runs on import: under the same guard as the call.
    sources = dict(call.sources)
    loaded: list[ModuleType] = []
    restored: list[bool] = []
    with _process_settings(torch, restored):
        try:
            for file in files:
                guard = forbid_autograd()
                try:
                    with guard:
                        loaded.append(load_module(file, sources.get(str(file))))
                except SystemExit as exc:
                    reply = Reply(_exited(exc, files))
                    break
                except Exception as exc:
                    reply = Reply(_import_failure(exc, file, call.memory_limit))
                    break
            else:
                module = load_module(path, sources.get(str(path))) if call.student_files else loaded[0]
                if call.student_files:
                    loaded.append(module)
                modules = tuple(loaded[:-1]) if call.student_files else ()
                reply = _call_function(module, modules, call, files, torch)
        finally:
            # Each call loads the files anew; the persistent worker must not collect them.
            for each in loaded:
                sys.modules.pop(each.__name__, None)
    if not all(restored):  # a setting that could not be put back would change every later call
        reply = Reply(reply.outcome, reusable=False)
    if reply.outcome.ok:
        return _send_back(reply, call.memory_limit)
    if reply.outcome.value is not None:  # what a function that raised had computed: sent when it can be
        sent = _send_back(reply, call.memory_limit)
        if sent.outcome.message == reply.outcome.message:
            return sent
        return reply._replace(outcome=dataclasses.replace(reply.outcome, value=None))
    return reply


def _held_at_failure(exc: BaseException, func: Any) -> dict[str, Any] | None:
    """The tensors the called function's own frame held when it raised, by variable name, for partial credit.

    Its local tensors, and the tensors in its local dicts keyed by strings (``g["probs"]``),
    as ``{"dprobs": ..., "g": {"probs": ...}}``; None when it held none, or more than
    :data:`_HELD_LIMIT` bytes of them (a driver's frame holding a training set, say).
    """
    import torch

    code = getattr(func, "__code__", None)
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code is not code:
        tb = tb.tb_next
    if tb is None:
        return None
    held: dict[str, Any] = {}
    for name, value in tb.tb_frame.f_locals.items():
        if isinstance(value, torch.Tensor):
            held[name] = value
        elif type(value) is dict:
            tensors = {k: v for k, v in value.items() if type(k) is str and isinstance(v, torch.Tensor)}
            if tensors:
                held[name] = tensors
    tensors = [t for v in held.values() for t in (v.values() if isinstance(v, dict) else (v,))]
    if sum(t.numel() * t.element_size() for t in tensors) > _HELD_LIMIT:
        return None
    return held or None


def _call_function(
    module: ModuleType, modules: tuple[ModuleType, ...], call: Call, files: tuple[Path, ...], torch: ModuleType
) -> Reply:
    from gradcheck_kit.sandbox.guard import forbid_autograd

    func = getattr(module, call.func_name, None)
    if not callable(func):
        return Reply(failure("missing_function", _missing(module, call.func_name, files[0])))
    try:
        on_cuda = torch.device(call.device).type == "cuda"
        args = map_tensors(call.args, lambda t: t.detach().to(call.device, copy=True))
        kwargs = map_tensors(call.kwargs, lambda t: t.detach().to(call.device, copy=True))
    except Exception as exc:
        return Reply(failure("error", f"the arguments could not be moved to {call.device}: {exception_line(exc)}"))
    memory_limit = call.memory_limit
    threads = threading.active_count()
    started = time.perf_counter()
    try:
        guard = forbid_autograd()
        with guard:
            value = func(*modules, *args, **kwargs)
            if on_cuda:
                torch.cuda.synchronize(call.device)
    except SystemExit as exc:
        return Reply(_exited(exc, files, time.perf_counter() - started))
    except MissingName as exc:
        return Reply(failure("missing_function", str(exc), duration=time.perf_counter() - started))
    except Exception as exc:
        outcome = _raised(exc, files, time.perf_counter() - started, memory_limit)
        if outcome.status == "error":
            outcome = dataclasses.replace(outcome, value=_held_at_failure(exc, func))
        return Reply(outcome, reusable=not (on_cuda and _breaks_cuda(exc)))
    outcome = Outcome("ok", value, duration=time.perf_counter() - started)
    # A thread the function left running would go on competing with later calls.
    return Reply(outcome, reusable=threading.active_count() <= threads)


def _send_back(reply: Reply, memory_limit: int | None) -> Reply:
    """Replace tensors in the returned value by CPU copies; refuse what a reply cannot carry."""
    outcome = reply.outcome
    try:
        value = map_tensors(outcome.value, _returned_tensor)
        check_sendable(value)
    except Unsendable as exc:
        return Reply(failure("error", str(exc), duration=outcome.duration), reply.reusable)
    except Exception as exc:
        message = f"the return value could not be copied back: {exception_line(exc)}"
        message += _memory_note(exc, memory_limit)
        return Reply(failure("error", message, duration=outcome.duration), reply.reusable)
    return Reply(dataclasses.replace(outcome, value=value), reply.reusable)


@contextlib.contextmanager
def _process_settings(torch: ModuleType, restored: list[bool]) -> Iterator[None]:
    """Run with TF32 off, and undo the process-wide settings the student's code changes.

    The worker outlives the call: a default dtype, a thread count or a working
    directory left behind would change every later call. ``restored`` gets False
    when one could not be put back (a worker of the sandbox's user cannot enter a
    folder only its grader may, once it has left it).
    """
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (torch.get_default_dtype(), torch.is_grad_enabled(), matmul.allow_tf32, cudnn.allow_tf32)
    threads, cwd = torch.get_num_threads(), os.getcwd()
    # TF32 keeps 10 mantissa bits: errors far above any gradient tolerance.
    matmul.allow_tf32 = False
    cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_default_dtype(saved[0])
        torch.set_grad_enabled(saved[1])
        matmul.allow_tf32, cudnn.allow_tf32 = saved[2], saved[3]
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        try:
            if os.getcwd() != cwd:
                os.chdir(cwd)
        except OSError:  # a folder removed since, or one it may not enter again
            restored.append(False)


def _returned_tensor(tensor: torch.Tensor) -> ReturnedTensor:
    # A copy, so that a view of a large tensor does not drag its whole storage along.
    return ReturnedTensor(tensor.detach().to("cpu", copy=True), TensorInfo.of(tensor))


# ----------------------------------------------------------------------------
# Saying how a call ended.


def failure(status: Status, message: str, trace: str = "", duration: float = 0.0) -> Outcome:
    """The outcome of a call that returned nothing."""
    return Outcome(status, None, message, trace, duration)


def exception_line(exc: BaseException) -> str:
    """``Type: message``, or the type alone when the message is empty."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _describe(exc: BaseException, files: tuple[Path, ...], headline: str | None = None) -> tuple[str, str]:
    """Return a message ending with the student's last line, and the traceback from the student's first.

    Args:
        exc: the exception.
        files: the student's files.
        headline: the message's first line, instead of the exception's own.
    """
    names = {str(f) for f in files}
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename in names:
            frames.append(tb)
        tb = tb.tb_next
    message = exception_line(exc) if headline is None else headline
    if frames:
        summary = traceback.extract_tb(frames[-1], limit=1)[0]
        message += f"\nat {Path(summary.filename).name}:{summary.lineno}: {(summary.line or '').strip()}"
    trace = "".join(traceback.format_exception(type(exc), exc, frames[0] if frames else None))
    return message, trace


def _raised(exc: Exception, files: tuple[Path, ...], duration: float, memory_limit: int | None) -> Outcome:
    forbidden = _forbidden(exc, files, duration)
    if forbidden is not None:
        return forbidden
    message, trace = _describe(exc, files)
    if isinstance(exc, NotImplementedError) and _raised_by_student(exc, files):
        return failure("not_started", str(exc) or "NotImplementedError", trace, duration)
    message += _memory_note(exc, memory_limit)
    return failure("error", message, trace, duration)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _raised_by_student(exc: BaseException, files: tuple[Path, ...]) -> bool:
    """Whether a ``raise`` statement in the student's file raised ``exc``.

    Torch raises NotImplementedError too ("Could not run 'aten::sort' with
    arguments from the 'SparseCPU' backend"), from the student's line that
    called it; that is an error, not an untouched stub.
    """
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None or tb.tb_frame.f_code.co_filename not in {str(f) for f in files}:
        return False
    for instruction in dis.get_instructions(tb.tb_frame.f_code):
        if instruction.offset == tb.tb_lasti:
            return instruction.opname in ("RAISE_VARARGS", "RERAISE")
    return False


def _breaks_cuda(exc: Exception) -> bool:
    # After a device-side assert every later CUDA call in the process fails.
    return "CUDA error" in str(exc) or type(exc).__name__ == "AcceleratorError"


def _exited(exc: SystemExit, files: tuple[Path, ...], duration: float = 0.0) -> Outcome:
    called = "sys.exit()" if exc.code is None else f"sys.exit({exc.code!r})"
    headline = f"the code called {called} (or exit or quit); a graded function must return its result"
    return failure("exited", *_describe(exc, files, headline), duration)


def _forbidden(exc: Exception, files: tuple[Path, ...], duration: float = 0.0) -> Outcome | None:
    """The "forbidden" outcome, when the guard or the worker's audit hook refused ``exc``'s code.

    Whatever it was wrapped in: the refusal is found in the exception's chain.
    """
    from gradcheck_kit.sandbox.guard import AutogradForbidden

    forbidden = next((e for e in _chain(exc) if isinstance(e, (AutogradForbidden, Refused))), None)
    if forbidden is None:
        return None
    headline = str(forbidden) if isinstance(forbidden, Refused) else exception_line(forbidden)
    return failure("forbidden", *_describe(exc, files, headline), duration)


def _memory_note(exc: BaseException, memory_limit: int | None) -> str:
    """The limit, when ``exc`` says memory ran out under it."""
    if memory_limit is not None and (isinstance(exc, MemoryError) or "can't allocate memory" in str(exc)):
        return f"\n(a call may use at most {memory_limit / _GiB:.3g} GiB of memory)"
    return ""


def _import_failure(exc: Exception, path: Path, memory_limit: int | None) -> Outcome:
    forbidden = _forbidden(exc, (path,))  # the file's top-level code used autograd
    if forbidden is not None:
        return forbidden
    if isinstance(exc, SyntaxError) and exc.filename == str(path):
        message = f"{type(exc).__name__}: {exc.msg}\nat {path.name}:{exc.lineno}: {(exc.text or '').strip()}"
        return failure("import_error", message, "".join(traceback.format_exception_only(type(exc), exc)))
    message, trace = _describe(exc, (path,))
    message += _memory_note(exc, memory_limit)
    return failure("import_error", f"{path.name} could not be imported: {message}", trace)


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
