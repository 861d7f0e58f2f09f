"""One memory and process budget for a worker and everything it starts: a control group, where the grader may make one.

Hard rlimits bound each process of a worker on its own; a control group bounds them
together. Where the grader may create control groups below its own (cgroup v1's
``memory`` and ``pids`` hierarchies, writable by root, as on many virtual machines
and CI runners), each worker is put in a group of its own, made below the grader's so
that the machine's own accounting still covers it: ``memory.limit_in_bytes`` (and the
same for memory plus swap, where it is accounted) and ``pids.max`` then hold for the
worker and all its children and threads at once, and the kernel ends the worker when
they are spent. The group is removed with the worker.

Where the groups are cgroup v2 (Docker, Gradescope), a child group needs a delegated
subtree with no process of the grader's in it, which a grader cannot arrange for
itself; the workers then keep their per-process limits, and the run's header says so.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time

__all__ = ["Group", "available", "create", "describe"]

_ROOT = "/sys/fs/cgroup"
#: hierarchy -> the file holding its limit
_LIMITS = {"memory": "memory.limit_in_bytes", "pids": "pids.max"}


class Group:
    """A worker's control groups, one per hierarchy, made by :func:`create`."""

    def __init__(self, folders: dict[str, str]) -> None:
        self.folders = folders

    def add(self, pid: int) -> None:
        """Move process ``pid``, all its threads, into the groups; its children are born there."""
        for folder in self.folders.values():
            _write(os.path.join(folder, "cgroup.procs"), str(pid))

    def remove(self, timeout: float = 5.0) -> None:
        """Remove the groups once their processes are gone (an exiting process still counts for a moment)."""
        deadline = time.monotonic() + timeout
        for folder in self.folders.values():
            while True:
                try:
                    os.rmdir(folder)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.02)


def create(name: str, memory: int | None, processes: int | None) -> Group | None:
    """Control groups called ``name`` below the grader's, with these limits; None where they cannot be made.

    Args:
        memory: bytes the worker and its children may use together; None for no memory group.
        processes: processes and threads they may be together; None for no pids group.
    """
    wanted = {"memory": memory, "pids": processes}
    mine = _own_groups()
    folders: dict[str, str] = {}
    try:
        for hierarchy, limit in wanted.items():
            if limit is None or hierarchy not in mine:
                continue
            folder = os.path.join(_ROOT, hierarchy, mine[hierarchy].lstrip("/"), name)
            os.mkdir(folder, 0o700)
            folders[hierarchy] = folder
            _write(os.path.join(folder, _LIMITS[hierarchy]), str(limit))
            swap = os.path.join(folder, "memory.memsw.limit_in_bytes")
            if hierarchy == "memory" and os.path.exists(swap):
                _write(swap, str(limit))
    except OSError:
        Group(folders).remove(timeout=0)
        return None
    return Group(folders) if folders else None


@functools.cache
def available() -> str | None:
    """Why workers get no control group here; None when they do."""
    if os.geteuid() != 0:
        return "the grader is not root"
    mine = _own_groups()
    if not {"memory", "pids"} & mine.keys():
        return "no cgroup v1 memory or pids hierarchy"
    probe = create(f"gradcheck-kit-probe-{os.getpid()}", memory=1 << 40, processes=1 << 20)
    if probe is None:
        return "the grader may not create control groups"
    probe.remove(timeout=0)
    return None


def describe() -> str:
    """Part of the run's header: whether a worker's processes share one memory and process budget."""
    why = available()
    return ", one memory and process budget for each worker and its children (cgroup)" if why is None else ""


def _own_groups() -> dict[str, str]:
    """The grader's own cgroup v1 groups by hierarchy, those of them mounted where they are expected."""
    groups: dict[str, str] = {}
    with contextlib.suppress(OSError):
        with open("/proc/self/cgroup", encoding="utf-8") as file:
            for line in file:
                _, names, path = line.rstrip("\n").split(":", 2)
                for hierarchy in names.split(","):
                    if hierarchy in _LIMITS and os.path.isfile(os.path.join(_ROOT, hierarchy, "cgroup.procs")):
                        groups[hierarchy] = path
    return groups


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="ascii") as file:
        file.write(text)
