"""Exercise 4 trying to kill the process that grades it: refused, and the grading goes on."""

import multiprocessing
import os
import signal


def embedding_backward(demb, Xb, vocab_size):
    grader = multiprocessing.parent_process()
    if grader is not None:  # only from inside a sandbox worker, never the test run itself
        os.kill(grader.pid, signal.SIGKILL)
    raise RuntimeError("still alive")
