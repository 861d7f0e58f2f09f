"""Exercise 2 planting files where the grader will run or read them.

A conftest.py next to exercises/ (pytest would import it into the next grading run), a
module in gradcheck_kit/, a .pth file in site-packages (run by every Python that starts),
a change to exercises/points.toml, a file in another student's submission, and the
grader's memory through /proc/<pid>/mem. Each by Python's own calls and, where it can,
from C (a shared mapping of an existing file). It returns nothing, so it earns nothing
even where every attempt fails.
"""

import multiprocessing
import os
import site
import sys

import torch

PLANTED = b"raise SystemExit('planted by a submission')\n"


def _write(path):
    for how in ("python", "c"):
        try:
            if how == "python":
                with open(path, "ab") as file:
                    file.write(b"")  # opened for writing is enough; nothing changes if it succeeds
            elif os.path.exists(path):
                mapped = torch.from_file(path, shared=True, size=1, dtype=torch.uint8)
                mapped[0] = mapped[0]
        except (OSError, RuntimeError):
            pass


def _create(path):
    try:
        with open(path, "xb") as file:
            file.write(PLANTED)
    except OSError:
        pass


def cross_entropy_backward(logits, Yb):
    repo = os.path.dirname(os.path.dirname(sys.modules["gradcheck_kit"].__file__))
    _create(os.path.join(repo, "conftest.py"))
    _create(os.path.join(repo, "gradcheck_kit", "_planted.py"))
    for folder in site.getsitepackages():
        _create(os.path.join(folder, "gradcheck_hostile_planted.pth"))
    _write(os.path.join(repo, "exercises", "points.toml"))
    _write(os.path.join(os.getcwd(), "..", "other", "ex2_cross_entropy.py"))
    _create(os.path.join(os.getcwd(), "..", "other", "planted.py"))
    grader = multiprocessing.parent_process().pid
    for mode in ("rb", "r+b"):
        try:
            with open(f"/proc/{grader}/mem", mode) as memory:
                memory.read(1)
        except (OSError, ValueError):
            pass
    return None
