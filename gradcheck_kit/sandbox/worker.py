"""Where a call runs: a worker process kept between calls, or, without isolation, this process.

A worker runs :func:`~gradcheck_kit.sandbox.call.execute` for each pickled
:class:`~gradcheck_kit.sandbox.call.Call` it receives, with both output streams sent
to a log file that the parent reads after the call. When no reply comes, the
parent says why: the call ran past its time limit, or the process died. What
does come back is read by :func:`~gradcheck_kit.sandbox.reply.load_reply`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import faulthandler
import io
import multiprocessing
import os
import pickle
import signal
import sys
import tempfile
import threading
import traceback
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING

from gradcheck_kit.sandbox.call import Call, exception_line, execute, failure
from gradcheck_kit.sandbox.outcome import OUTPUT_LIMIT, Outcome
from gradcheck_kit.sandbox.reply import Reply, load_reply

if TYPE_CHECKING:
    from multiprocessing.context import ForkServerContext, SpawnContext

__all__ = ["Lost", "Worker", "WorkerStartError", "run_here"]

_GiB = 1024**3


class WorkerStartError(RuntimeError):
    """The worker process could not be started; no student code had run."""


def run_here(call: Call) -> Outcome:
    """Run ``call`` in this process, its output captured and capped as in a worker."""
    parts: list[str] = []
    out = _CappedWriter(parts.append, OUTPUT_LIMIT)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        reply = execute(call)
    out.finish()
    return dataclasses.replace(reply.outcome, stdout="".join(parts))


class Lost(enum.Enum):
    """Why a worker sent no reply."""

    TIMEOUT = "timeout"
    DIED = "died"


class Worker:
    """A child process that runs :func:`execute` for each request it receives."""

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
        answered = wait([self.conn, self.process.sentinel], start_timeout)
        if answered and self._ready():
            return
        if answered:  # it hung up while starting: reaped, for its exit code
            self.process.join(10)
            why = f"exited with code {self.process.exitcode} while starting{_main_script_hint()}"
        else:
            why = f"was not ready within {start_timeout:g} s"
        self.process.kill()
        self.process.join(10)
        log = self.output()
        self.stop()
        raise WorkerStartError(f"the sandbox's worker process {why}\n{log}")

    def _ready(self) -> bool:
        try:
            return self.conn.recv_bytes() == b"ready"
        except (EOFError, OSError):
            return False

    def ask(self, payload: bytes, limit: float) -> bytes | Lost:
        """Send one request; return the reply, or why there is none."""
        try:
            self.conn.send_bytes(payload)
            ready = wait([self.conn, self.process.sentinel], limit)
            if not ready:
                return Lost.TIMEOUT
            if self.conn not in ready:
                return Lost.DIED
            return self.conn.recv_bytes()
        except (EOFError, OSError):
            return Lost.DIED

    def reply(self, answer: bytes | Lost, limit: float, waited: float, memory_limit: int | None) -> Reply:
        """The call's reply, from what :meth:`ask` returned, with what the call printed.

        A worker that did not answer in time is killed first; one that died is
        reaped, for its exit code.
        """
        if answer is Lost.TIMEOUT:
            self.process.kill()
            self.process.join(10)
            reply = Reply(_timeout(limit, waited), reusable=False)
        elif answer is Lost.DIED:
            self.process.join(10)  # its exit code, once the process is reaped
            reply = Reply(_crashed(self.process.exitcode, memory_limit, waited), reusable=False)
        else:
            try:
                reply = load_reply(answer)
            except Exception as exc:  # e.g. an instance of a class defined in the student's file
                reply = Reply(failure("error", f"the return value could not be received: {exception_line(exc)}"))
        return Reply(dataclasses.replace(reply.outcome, stdout=self.output()), reply.reusable)

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


def _main_script_hint() -> str:
    """Why a worker started from a script may die at once: the script is imported again in it."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None or getattr(main, "__spec__", None) is not None:
        return ""
    return (
        f"; a new process imports the script that started it ({path}) again, so put the code "
        'that grades under `if __name__ == "__main__":`'
    )


def _context() -> ForkServerContext | SpawnContext:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # Workers forked from the fork server start with these (and torch) imported: a restart takes milliseconds.
    # Has no effect once the fork server runs; workers then import torch themselves.
    context.set_forkserver_preload(
        ["gradcheck_kit.sandbox.guard", "gradcheck_kit.sandbox.call", "gradcheck_kit.sandbox.worker"]
    )
    return context


def _stop(process: multiprocessing.process.BaseProcess, conn: Connection, log_path: str) -> None:
    if process.pid is not None:
        process.kill()
        process.join(10)
    conn.close()
    _remove(log_path)


def _serve(conn: Connection, log_path: str) -> None:
    """The worker's main loop: run requests until the parent hangs up."""
    # Ctrl-C in a terminal reaches the whole process group; the parent decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent(log_path)
    out = _CappedWriter(lambda text: os.write(1, text.encode("utf-8", "replace")), OUTPUT_LIMIT)
    _redirect_output(log_path, out)
    faulthandler.enable(file=2)
    # Imported before "ready", so that no call's timeout pays for them.
    import torch  # noqa: F401

    import gradcheck_kit.sandbox.guard  # noqa: F401

    conn.send_bytes(b"ready")
    while True:
        try:
            request = conn.recv_bytes()
        except (EOFError, OSError):  # the parent is gone
            _remove(log_path)
            return
        _redirect_output(log_path, out)
        try:
            reply = execute(pickle.loads(request))
        except BaseException as exc:  # e.g. a KeyboardInterrupt the student raised
            reply = Reply(failure("error", exception_line(exc), "".join(traceback.format_exception(exc))), False)
        out.finish()
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            message = f"the return value could not be sent back: {exception_line(exc)}"
            data = pickle.dumps(Reply(failure("error", message)))
        try:
            conn.send_bytes(data)
        except OSError:  # the parent is gone
            _remove(log_path)
            return


def _exit_with_parent(log_path: str) -> None:
    """End this worker as soon as the process that started it ends, in the middle of a call too.

    A forked worker's own parent is multiprocessing's fork server, which lives
    on while any worker does: without this, a grader killed with SIGKILL would
    leave a student's endless loop running, and its log file behind. The
    sentinel of ``parent_process()`` is made for this: it becomes ready when the
    process that asked for the worker is gone.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        _remove(log_path)
        os._exit(1)

    threading.Thread(target=watch, name="gradcheck-exit-with-parent", daemon=True).start()


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


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


def _timeout(limit: float, waited: float) -> Outcome:
    message = (
        f"the call did not finish within {limit:g} s and was stopped; an infinite loop "
        "or a very slow Python loop (over every element of a tensor, say) is the usual cause"
    )
    return failure("timeout", message, duration=waited)


# By name: not every platform has every signal.
_SIGNAL_MEANINGS = {
    "SIGKILL": "usually the machine ran out of memory and the kernel's out-of-memory killer stopped it",
    "SIGSEGV": "native code touched invalid memory, often because memory ran out",
    "SIGABRT": "a native library hit a fatal error, often a failed memory allocation",
    "SIGBUS": "native code touched invalid memory",
    "SIGFPE": "an arithmetic fault in native code, such as an integer division by zero",
}


#: The signals that running out of memory ends a process with.
_OUT_OF_MEMORY_SIGNALS = ("SIGKILL", "SIGSEGV", "SIGABRT")


def _crashed(code: int | None, memory_limit: int | None, waited: float) -> Outcome:
    """Why the worker died during a call; ``memory_limit`` is the limit the call ran under, if any."""
    if code is None or code >= 0:
        message = (
            f"the worker process exited with code {code} during the call: the code (or a library it "
            "called) ended the process directly, e.g. with os._exit(), which skips all cleanup"
        )
    else:
        try:
            name = signal.Signals(-code).name
        except ValueError:  # a signal with no name, such as a real-time one
            name = f"signal {-code}"
        meaning = _SIGNAL_MEANINGS.get(name, "it was stopped from outside or by the operating system")
        message = f"the worker process was killed by {name} during the call: {meaning}"
        if memory_limit is not None and name in _OUT_OF_MEMORY_SIGNALS:
            message += f" (a call on the CPU may use at most {memory_limit / _GiB:.3g} GiB of memory)"
    return failure("crashed", message, duration=waited)
