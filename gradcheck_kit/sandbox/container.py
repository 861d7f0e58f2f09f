"""The workers' fork server started inside bubblewrap, where it is installed and can run.

Workers are forked from multiprocessing's fork server, which imports torch once. When
the grader runs as root and `bubblewrap <https://github.com/containers/bubblewrap>`_
(``bwrap``) is on ``PATH``, the fork server itself is started through it, so every
worker forked from it inherits:

- a read-only view of the whole file system: the grader's files, ``exercises/``, the
  results, other submissions and the submission's own folder cannot be written, even
  by a process that somehow kept root;
- one writable folder, :func:`scratch_root`, which holds the workers' temporary
  folders (each private to its worker's user), and a private ``/dev/shm``;
- no network (a network namespace of its own, with only a loopback device) and no
  System V IPC shared with the machine;
- its end when the grading process ends (``--die-with-parent``).

The process-ID namespace is left shared on purpose: the grader signals and sweeps
workers by their process IDs. Capabilities are kept, since a worker switches to the
sandbox's user itself (:mod:`~gradcheck_kit.sandbox.confine`) and loses them then.

``GRADCHECK_BUBBLEWRAP=0`` turns this off; without root, or where bubblewrap cannot
create namespaces (a container without the privilege), the fork server starts as
before and the run's header says so.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile

__all__ = ["ENVIRONMENT", "bubblewrap_error", "describe", "executable", "scratch_root", "searchable", "shared_temp_dir"]

#: The environment variable that turns bubblewrap off when set to 0.
ENVIRONMENT = "GRADCHECK_BUBBLEWRAP"


@functools.cache
def scratch_root() -> str:
    """The folder holding the workers' temporary folders, the only one they may write (but /dev/shm).

    One folder of root's for every grader of the machine, so that a grader killed
    before it could tidy up leaves nothing behind: each worker removes its own folder.
    """
    base = shared_temp_dir()
    folder = os.path.join(base, "gradcheck-sandboxes")
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, 0o700)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        # Made by someone else to be shared with them: a folder of this grader's own instead.
        folder = tempfile.mkdtemp(prefix="gradcheck-sandboxes-", dir=base)
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    # Like /tmp, but that none lists it: a worker removes its own folder when its grader is gone.
    os.chmod(folder, 0o1733)
    return os.path.realpath(folder)


def _arguments(scratch: str) -> list[str]:
    return [
        "--ro-bind", "/", "/",
        "--dev-bind", "/dev", "/dev",
        "--tmpfs", "/dev/shm",
        "--bind", scratch, scratch,
        "--unshare-net",
        "--unshare-ipc",
        "--die-with-parent",
    ]  # fmt: skip


@functools.cache
def bubblewrap_error() -> str | None:
    """Why the fork server is not started in bubblewrap here; None when it is."""
    if os.environ.get(ENVIRONMENT, "1") == "0":
        return f"turned off by {ENVIRONMENT}=0"
    if not sys.platform.startswith("linux"):
        return "not Linux"
    if os.geteuid() != 0:
        # Without root it would need unprivileged user namespaces, and the worker could
        # not switch users anyway: a self-check keeps the plain worker.
        return "the grader is not root"
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    try:
        probe = subprocess.run(
            [bwrap, *_arguments(scratch_root()), "--", sys.executable, "-c", "pass"],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap cannot run here: {exc}"
    if probe.returncode != 0:
        said = probe.stderr.decode("utf-8", "replace").strip().splitlines()
        return "bubblewrap cannot run here: " + (said[-1] if said else f"exit code {probe.returncode}")
    return None


@functools.cache
def executable() -> str | None:
    """A program that runs this Python inside bubblewrap, for the fork server; None where bubblewrap is not used.

    multiprocessing starts its fork server as ``EXECUTABLE [flags] -c CODE`` with the
    file descriptors it shares passed along, which bubblewrap keeps open; a script
    in a folder of the grader's own puts ``bwrap ... --`` in front.
    """
    if bubblewrap_error() is not None:
        return None
    bwrap = shutil.which("bwrap")
    assert bwrap is not None
    folder = tempfile.mkdtemp(prefix="gradcheck-bwrap-")  # 0700, the grader's
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    script = os.path.join(folder, "python-in-bubblewrap")
    command = shlex.join([bwrap, *_arguments(scratch_root()), "--", sys.executable])
    with open(script, "w", encoding="utf-8") as file:
        file.write(f'#!/bin/sh\nexec {command} "$@"\n')
    os.chmod(script, 0o700)
    return script


def describe() -> str:
    """Part of the run's header: whether workers run in bubblewrap, or why not."""
    why = bubblewrap_error()
    if why is None:
        return ", bubblewrap (read-only file system, no network)"
    if shutil.which("bwrap") or why.startswith("turned off"):
        return f", not in bubblewrap ({why})"
    return ""


def shared_temp_dir() -> str:
    """The grader's temporary folder if every user may enter it, else the first such of the system's."""
    base = tempfile.gettempdir()
    if searchable(base):
        return base
    # gradcheck-kit grade's temporary folder is private to the grader: one every user may enter.
    return next((b for b in ("/tmp", "/var/tmp", "/dev/shm") if searchable(b)), base)


def searchable(folder: str) -> bool:
    """Whether every user may enter ``folder``: it and every folder above it."""
    path = os.path.realpath(folder)
    while True:
        try:
            if not os.stat(path).st_mode & 0o001:
                return False
        except OSError:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent
