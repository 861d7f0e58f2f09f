"""Where a call runs: a worker process kept between calls, or, without isolation, this process.

A worker confines itself (:mod:`~gradcheck_kit.sandbox.confine`: hard limits, a
private temporary folder, its own user, the audit hook) before it says it is ready,
then runs :func:`~gradcheck_kit.sandbox.call.execute` for each pickled
:class:`~gradcheck_kit.sandbox.call.Call` it receives, with both output streams sent
to a file that the parent reads after the call. When no reply comes, the parent says
why: the call ran past its time limit, or the process died. A reply is read with a
deadline and a cap on its size, both checked before it is read in full, and decoded
by :func:`~gradcheck_kit.sandbox.reply.load_reply`, which trusts nothing in it. After
each call every other process of the worker's user is ended
(:func:`~gradcheck_kit.sandbox.isolation.sweep`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import faulthandler
import io
import json
import multiprocessing
import os
import pickle
import shutil
import signal
import struct
import sys
import tempfile
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

from gradcheck_kit.sandbox import cgroups, confine, container
from gradcheck_kit.sandbox.call import Call, exception_line, execute, failure
from gradcheck_kit.sandbox.isolation import SandboxUser, sweep
from gradcheck_kit.sandbox.outcome import OUTPUT_LIMIT, Outcome
from gradcheck_kit.sandbox.reply import BadReply, Reply, Unsendable, encode_reply, load_reply

if TYPE_CHECKING:
    from multiprocessing.context import ForkServerContext, SpawnContext

__all__ = ["Lost", "Worker", "WorkerStartError", "run_here"]

_GiB = 1024**3
#: The workers of this process that are running: every Sandbox of a process has the same user, and one's
#: sweep must not end another's worker.
_KEPT: set[int] = set()
#: Seconds a reply may take to arrive once the worker has started sending it, beyond the call's limit,
#: and bytes a second it is expected to arrive at: a worker that stops halfway is not waited for long.
_TRANSFER_GRACE = 5.0
_TRANSFER_RATE = 100e6


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
    TOO_LARGE = "too large"


class Worker:
    """A child process, confined as ``confinement`` says, that runs :func:`execute` for each request it receives.

    Args:
        start_timeout: seconds to wait for it to be ready.
        confinement: how it confines itself; its ``temp_dir`` is made here, and removed with the worker.
        user: the sandbox's user, when it switches to one: every other process of that user is
            ended after each call and when the worker stops.
        reply_limit: the most bytes a reply may take.
    """

    def __init__(
        self,
        start_timeout: float,
        confinement: confine.Confinement,
        user: SandboxUser | None = None,
        reply_limit: int = _GiB,
    ) -> None:
        self.user = user
        self.reply_limit = reply_limit
        self.temp_dir = _make_temp_dir(user)
        self.confinement = dataclasses.replace(confinement, temp_dir=self.temp_dir)
        #: Folders of the submission the worker cannot read, with a note for each.
        self.unreadable: dict[str, str] = {}
        self.landlock = 0
        self._log = _anonymous_file()
        context = _context()
        self.conn, child = context.Pipe()
        own_uid = user.uid if user is not None and user.dedicated else None
        self.process = context.Process(
            target=_serve, args=(child, _SharedFd(self._log), self.confinement, reply_limit, own_uid), daemon=True
        )
        # One budget for the worker and whatever it starts, where the grader may make control groups.
        group = None
        if cgroups.available() is None:
            name = f"gradcheck-kit-{os.getpid()}-{os.path.basename(self.temp_dir)}"
            group = cgroups.create(name, memory=confinement.memory_limit, processes=confinement.processes)
        self._finalizer = weakref.finalize(self, _stop, self.process, self.conn, self._log, self.temp_dir, user, group)
        try:
            self.process.start()
            if group is not None and self.process.pid is not None:
                group.add(self.process.pid)  # before it is ready, so before any student code
        except Exception as exc:
            self.stop()
            raise WorkerStartError(f"the sandbox's worker process could not be started: {exc}") from exc
        finally:
            child.close()
        if self.process.pid is not None:
            _KEPT.add(self.process.pid)
        answer = self._receive(time.monotonic() + start_timeout, 1024**2, start=True)
        if isinstance(answer, (bytes, bytearray)) and answer.startswith(b"ready\n"):
            started = json.loads(bytes(answer[6:]).decode("utf-8"))
            self.unreadable, self.landlock = dict(started["unreadable"]), int(started["landlock"])
            return
        if isinstance(answer, (bytes, bytearray)):  # it refused to run as it was asked to
            why = bytes(answer).decode("utf-8", "replace").removeprefix("refused\n")
        elif answer is Lost.TIMEOUT:
            why = f"was not ready within {start_timeout:g} s"
        else:  # it hung up while starting: reaped, for its exit code
            self.process.join(10)
            why = f"exited with code {self.process.exitcode} while starting{_main_script_hint()}"
        self.process.kill()
        self.process.join(10)
        log = self.output()
        self.stop()
        raise WorkerStartError(f"the sandbox's worker process {why}\n{log}")

    def ask(self, payload: bytes, limit: float) -> bytearray | Lost:
        """Send one request; return the reply, or why there is none."""
        started = time.monotonic()
        try:
            self.conn.send_bytes(payload)
        except OSError:
            return Lost.DIED
        ready = wait([self.conn, self.process.sentinel], limit)
        if not ready:
            return Lost.TIMEOUT
        if self.conn not in ready:
            return Lost.DIED
        # Once it has started to answer: what is left of the limit, and a grace for the transfer.
        return self._receive(started + limit + _TRANSFER_GRACE, self.reply_limit)

    def _receive(self, deadline: float, limit: int, start: bool = False) -> bytearray | Lost:
        """One message as ``Connection.send_bytes`` frames it, read by ``deadline``, refused past ``limit`` bytes.

        The deadline grows with the size the message announces, at the rate a pipe carries it easily.
        """
        fd = self.conn.fileno()
        try:
            (size,) = struct.unpack("!i", _read(fd, 4, deadline, self.process.sentinel if start else None))
            if size == -1:  # a message of 2 GiB or more
                (size,) = struct.unpack("!Q", _read(fd, 8, deadline))
            if size > limit:
                return Lost.TOO_LARGE
            return _read(fd, size, deadline + size / _TRANSFER_RATE)
        except TimeoutError:
            return Lost.TIMEOUT
        except (EOFError, OSError):
            return Lost.DIED

    def reply(self, answer: bytearray | Lost, limit: float, waited: float, memory_limit: int | None) -> Reply:
        """The call's reply, from what :meth:`ask` returned, with what the call printed.

        A worker that did not answer in time, answered too much or answered what is
        not a reply is killed first; one that died is reaped, for its exit code.
        """
        if answer is Lost.TIMEOUT:
            self.process.kill()
            self.process.join(10)
            reply = Reply(_timeout(limit, waited), reusable=False)
        elif answer is Lost.DIED:
            self.process.join(10)  # its exit code, once the process is reaped
            reply = Reply(_crashed(self.process.exitcode, memory_limit, waited), reusable=False)
        elif answer is Lost.TOO_LARGE:
            self.process.kill()
            self.process.join(10)
            message = f"the reply was larger than the {_size(self.reply_limit)} a reply may carry, and was not read"
            reply = Reply(failure("error", message, duration=waited), reusable=False)
        else:
            try:
                reply = load_reply(answer)
            except BadReply as exc:
                self.process.kill()
                self.process.join(10)
                reply = Reply(failure("error", f"the worker's reply could not be read: {exc}"), reusable=False)
        return Reply(dataclasses.replace(reply.outcome, stdout=self.output()), reply.reusable)

    def end_strays(self) -> list[int]:
        """End every process of the sandbox's user but the workers this process keeps; the processes ended."""
        if self.user is None:
            return []
        try:
            return sweep(self.user.uid, keep=_KEPT)
        except TimeoutError:  # stuck in the kernel past SIGKILL: it dies when it leaves
            return []

    def output(self) -> str:
        """What the last request printed, its start and end kept when it is long."""
        limit = 2 * OUTPUT_LIMIT  # room for output of native code and faulthandler
        try:
            size = os.fstat(self._log).st_size
            if size <= 8 * limit:
                data = os.pread(self._log, size, 0)
            else:
                data = os.pread(self._log, 4 * limit, 0) + os.pread(self._log, 4 * limit, size - 4 * limit)
        except OSError:
            return ""
        text = data.decode("utf-8", "replace")
        if len(text) > limit:
            text = text[: limit // 2] + "\n[...]\n" + text[-limit // 2 :]
        return text

    def stop(self) -> None:
        self._finalizer()


def _read(fd: int, size: int, deadline: float, sentinel: int | None = None) -> bytearray:
    """Exactly ``size`` bytes from ``fd`` by ``deadline``.

    Raises:
        TimeoutError: past the deadline.
        EOFError: when the other end hung up first.
    """
    buffer = bytearray(size)
    view = memoryview(buffer)
    done = 0
    while done < size:
        left = deadline - time.monotonic()
        ready = wait([fd] if sentinel is None else [fd, sentinel], max(left, 0))
        if not ready:
            raise TimeoutError
        if fd not in ready:
            raise EOFError
        count = os.readv(fd, [view[done : done + (1 << 22)]])
        if count == 0:
            raise EOFError
        done += count
    return buffer


def _size(n: int) -> str:
    return f"{n / _GiB:.3g} GiB" if n >= _GiB else f"{n / 1024**2:.3g} MiB"


class _SharedFd:
    """A file descriptor handed to the worker: multiprocessing sends it along, as it does a Connection's."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        from multiprocessing import reduction

        return (_received_fd, (reduction.DupFd(self.fd),))


def _received_fd(dup: Any) -> _SharedFd:
    return _SharedFd(dup.detach())


def _anonymous_file() -> int:
    """A file with no name, for the worker's output: nothing to remove, nothing to swap for a link."""
    folder = tempfile.gettempdir()
    try:
        fd = os.open(folder, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        fd, path = tempfile.mkstemp(prefix="gradcheck-worker-", suffix=".log")
        os.unlink(path)
    import fcntl

    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
    return fd


def _make_temp_dir(user: SandboxUser | None) -> str:
    """The worker's own temporary folder, which only it (its user) can enter and write."""
    # In bubblewrap, the one folder the workers may write; else the grader's temporary folder,
    # or one the worker may enter when it has a user of its own.
    if container.executable():
        base = container.scratch_root()
    else:
        base = container.shared_temp_dir() if user is not None else tempfile.gettempdir()
    folder = os.path.realpath(tempfile.mkdtemp(prefix="gradcheck-sandbox-", dir=base))
    if user is not None:
        os.chown(folder, user.uid, user.gid)
    return folder


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
    wrapped = container.executable()
    if wrapped is not None:
        # Has no effect once the fork server runs, as for the preload below; it is started in bubblewrap.
        context.set_executable(wrapped)
    # Workers forked from the fork server start with these (and torch) imported: a restart takes milliseconds.
    # Has no effect once the fork server runs; workers then import torch themselves.
    context.set_forkserver_preload(
        ["gradcheck_kit.sandbox.guard", "gradcheck_kit.sandbox.call", "gradcheck_kit.sandbox.worker"]
    )
    return context


def _stop(
    process: multiprocessing.process.BaseProcess,
    conn: Connection,
    log: int,
    temp_dir: str,
    user: SandboxUser | None,
    group: cgroups.Group | None,
) -> None:
    if process.pid is not None:
        process.kill()
        process.join(10)
        _KEPT.discard(process.pid)
    conn.close()
    with contextlib.suppress(OSError):
        os.close(log)
    if user is not None:
        with contextlib.suppress(TimeoutError):
            sweep(user.uid, keep=_KEPT)
    shutil.rmtree(temp_dir, ignore_errors=True)
    if group is not None:
        group.remove()


def _serve(
    conn: Connection, log: _SharedFd, confinement: confine.Confinement, reply_limit: int, own_uid: int | None
) -> None:
    """The worker's main loop: confine itself, then run requests until the parent hangs up."""
    # Ctrl-C in a terminal reaches the whole process group; the parent decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A file past RLIMIT_FSIZE fails to grow (EFBIG) instead of killing the worker.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    out = _CappedWriter(lambda text: os.write(1, text.encode("utf-8", "replace")), OUTPUT_LIMIT)
    _redirect_output(log.fd, out)
    faulthandler.enable(file=2)
    # Imported before "ready", so that no call's timeout pays for them, and before the audit hook.
    import torch

    import gradcheck_kit.sandbox.guard  # noqa: F401

    # One thread: a graded call's tensors are small, and on a busy machine a second thread
    # waiting for a core costs more than it saves (exercise 6's training runs several times
    # faster). Each call's own change of the thread count is undone after it.
    torch.set_num_threads(1)

    _exit_with_parent(confinement.temp_dir, own_uid)
    try:
        started = confine.apply(confinement)
    except Exception as exc:
        conn.send_bytes(b"refused\n" + f"could not confine itself: {exception_line(exc)}".encode())
        return
    conn.send_bytes(b"ready\n" + json.dumps(started).encode())
    while True:
        try:
            request = conn.recv_bytes()
        except (EOFError, OSError):  # the parent is gone
            return
        _redirect_output(log.fd, out)
        try:
            call = pickle.loads(request)
            reply = execute(call)
        except BaseException as exc:  # e.g. a KeyboardInterrupt the student raised
            reply = Reply(failure("error", exception_line(exc), "".join(traceback.format_exception(exc))), False)
        out.finish()
        try:
            conn.send_bytes(_encode(reply, reply_limit))
        except OSError:  # the parent is gone
            return


def _encode(reply: Reply, limit: int) -> bytes:
    """The reply's bytes, or those of a failure that says why the value cannot be sent."""
    outcome = reply.outcome
    if not outcome.ok and outcome.value is not None:
        try:
            return encode_reply(reply, limit)
        except Exception:  # a failed call's partial results are a bonus: the failure goes without them
            reply = Reply(dataclasses.replace(outcome, value=None), reply.reusable)
    try:
        return encode_reply(reply, limit)
    except Unsendable as exc:
        message = str(exc)
    except Exception as exc:  # e.g. memory ran out copying a large value
        message = f"the return value could not be sent back: {exception_line(exc)}"
    return encode_reply(Reply(failure("error", message, duration=outcome.duration), reply.reusable), limit)


def _exit_with_parent(temp_dir: str, own_uid: int | None) -> None:
    """End this worker as soon as the process that started it ends, in the middle of a call too.

    A forked worker's own parent is multiprocessing's fork server, which lives
    on while any worker does: without this, a grader killed with SIGKILL would
    leave a student's endless loop running. The sentinel of ``parent_process()`` is
    made for this: it becomes ready when the process that asked for the worker is
    gone. A worker running as a uid of its own (``own_uid``) first ends every
    other process of that uid, which a grader killed with SIGKILL cannot do, then
    removes its temporary folder.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        if own_uid is not None and own_uid != 0 and os.getuid() == own_uid:  # never as root: -1 is everyone
            with contextlib.suppress(OSError):
                os.kill(-1, signal.SIGKILL)  # every process this user may signal but this one: its own
        shutil.rmtree(temp_dir, ignore_errors=True)
        os._exit(1)

    threading.Thread(target=watch, name="gradcheck-exit-with-parent", daemon=True).start()


def _redirect_output(log: int, out: _CappedWriter) -> None:
    """Send both streams to the emptied log, whatever the last call did to them.

    Output of native code and faulthandler's report go there too, so the
    parent can read all of it after the call, and none reaches its terminal.
    """
    os.ftruncate(log, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
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
