"""Exercise 4 killing the process that grades it: the grading stops, and results.json must still say why."""

import multiprocessing
import os
import signal


def embedding_backward(demb, Xb, vocab_size):
    grader = multiprocessing.parent_process()
    if grader is not None:  # only from inside a sandbox worker, never the test run itself
        os.kill(grader.pid, signal.SIGKILL)
    raise RuntimeError("still alive")
