"""Exercise 2 leaving a process behind to act after its check is over.

fork(), setsid(), fork(): the grandchild is in a session of its own, out of reach of a
kill of the grader's process group. os.fork is refused, so the fork is made the way
subprocess makes it, with a function to run in the child before its exec (which then
fails). The grandchild waits two seconds, then writes a marker file and writes into the
grader's own output through /proc/<pid>/fd/1. The call fails naming the grandchild, so
that a test can look for it.
"""

import multiprocessing
import os
import select
import time

import _posixsubprocess

TEXT = "gradcheck-hostile: this process outlived its check"


def _fork(body, keep):
    err_read, err_write = os.pipe()
    return _posixsubprocess.fork_exec(
        [b"/nonexistent"], [b"/nonexistent"], True, tuple(sorted((err_write, *keep))), None, None,
        -1, -1, -1, -1, -1, -1, err_read, err_write, False, False, -1, None, None, -1, -1, body, False,
    )  # fmt: skip


def cross_entropy_backward(logits, Yb):
    grader = multiprocessing.parent_process().pid  # the process that asked for this worker
    pid_read, pid_write = os.pipe()

    def grandchild():
        os.write(pid_write, str(os.getpid()).encode())
        time.sleep(2)
        for marker in (f"/tmp/gradcheck-hostile-outlived-{os.getpid()}", "outlived-marker"):
            try:
                with open(marker, "w") as file:
                    file.write(TEXT)
            except OSError:
                pass
        try:
            with open(f"/proc/{grader}/fd/1", "w") as out:
                out.write(TEXT + "\n")
        except OSError:
            pass
        os._exit(0)

    def child():
        os.setsid()
        _fork(grandchild, (pid_write,))

    _fork(child, (pid_write,))
    ready, _, _ = select.select([pid_read], [], [], 5)
    left = os.read(pid_read, 32).decode() if ready else "none"
    raise RuntimeError(f"left process {left} behind")
