"""Refuse, from inside a worker, what a graded function has no reason to do (a PEP 578 audit hook).

:func:`install` adds a hook to the worker before any student code runs; a hook
cannot be removed. Under a :class:`Policy` it refuses

* reaching the references: importing ``solutions`` or a module of gradcheck_kit that
  the worker has not loaded already, and opening a file that no rule of the policy
  lets it read (the submission's folders, the Python installation without
  gradcheck_kit, the worker's temporary folder, ``/dev/null`` and its kind) or write
  (the temporary folder and those devices);
* starting a process (``os.system``, ``subprocess``, ``os.exec*``, ``os.fork``,
  ``os.posix_spawn``), calling into C through ctypes, signalling another process,
  opening a network connection;
* reaching the hook itself: walking every object with ``gc``, tracing or profiling
  (a tracer can rewrite a running function's variables), replacing a function's code.

Each refusal raises :class:`Refused`, a PermissionError whose message says what was
refused, so that the call fails with that message.

The hook is a second line. It sees what Python code does, not what C code does:
``torch.from_file`` reads a file without an audit event. The operating system's
protections (the worker's own user, Landlock where the kernel has it) are the first
line; this one names what was refused, and holds where those are not available.
"""

from __future__ import annotations

import _thread
import os
import sys
from dataclasses import dataclass

__all__ = ["DEVICES", "Policy", "Refused", "install"]

#: Devices any code may open, for reading and writing.
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")

_PROCESS_EVENTS = frozenset(
    {"os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty", "subprocess.Popen", "os.startfile"}
)
_CTYPES_EVENTS = frozenset(
    {
        "ctypes.dlopen",
        "ctypes.dlsym",
        "ctypes.dlsym/handle",
        "ctypes.call_function",
        "ctypes.cdata",
        "ctypes.string_at",
        "ctypes.wstring_at",
    }
)
_NETWORK_EVENTS = frozenset({"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"})
_HOOK_EVENTS = frozenset(
    {"gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys.settrace", "sys.setprofile", "object.__setattr__"}
)
# Events that change a file by its path, with the positions of the path arguments and of their dir_fd arguments.
_PATH_EVENTS = {
    "os.remove": ((0, 1),),
    "os.rmdir": ((0, 1),),
    "os.mkdir": ((0, 2),),
    "os.mkfifo": ((0, 2),),
    "os.mknod": ((0, 3),),
    "os.rename": ((0, 2), (1, 3)),
    "os.link": ((0, 2), (1, 3)),
    "os.symlink": ((1, 2),),
    "os.truncate": ((0, None),),
    "os.chmod": ((0, 2),),
    "os.chown": ((0, 3),),
    "os.utime": ((0, 3),),
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_PREFIX = "gradcheck-kit: your code may not"


class Refused(PermissionError):
    """Raised by the worker's audit hook for what a graded function may not do."""


@dataclass(frozen=True)
class Policy:
    """What the hook lets a worker's code do.

    Args:
        read: ``(path, allowed)`` rules in order; the first whose path is the file
            or a folder above it decides whether the file may be read. A file no
            rule covers may not.
        write: folders (and files) in which files may be created, written and removed.
        files: whether files and imports are checked at all.
        processes: whether the code may start processes and use ctypes (Triton's
            compiler runs ``ptxas``).
    """

    read: tuple[tuple[str, bool], ...] = ()
    write: tuple[str, ...] = ()
    files: bool = True
    processes: bool = False


def install(policy: Policy) -> None:
    """Add the worker's audit hook for ``policy``; it stays for the life of the process."""
    # Everything the hook uses is bound here, never looked up in a module or in builtins
    # when it runs: the student's code could replace those.
    _type, _str, _bytes, _int, _tuple, _set = type, str, bytes, int, tuple, set
    os_open, os_close, os_readlink, os_getcwd, os_getpid = os.open, os.close, os.readlink, os.getcwd, os.getpid
    os_fspath, get_ident, refused_class = os.fspath, _thread.get_ident, Refused
    path_flags = getattr(os, "O_PATH", os.O_RDONLY) | os.O_CLOEXEC
    encoding, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
    read_rules = _tuple((root, root.rstrip("/") + "/", allowed) for root, allowed in policy.read)
    write_roots = _tuple((root, root.rstrip("/") + "/") for root in policy.write)
    check_files, allow_processes = policy.files, policy.processes
    watched = _HOOK_EVENTS | _NETWORK_EVENTS | {"os.kill", "os.killpg"}
    if not allow_processes:
        watched |= _PROCESS_EVENTS | _CTYPES_EVENTS
    if check_files:
        watched |= {"open", "import"} | _PATH_EVENTS.keys()
    watched = frozenset(watched)
    path_events, process_events, ctypes_events = _PATH_EVENTS, _PROCESS_EVENTS, _CTYPES_EVENTS
    network_events, hook_events = _NETWORK_EVENTS, _HOOK_EVENTS
    busy: set[int] = _set()  # threads inside real(), whose own file calls raise events too

    def text(path: object) -> str | None:
        kind = _type(path)
        if kind is _str:
            return path  # type: ignore[return-value]
        if kind is _bytes:
            return path.decode(encoding, errors)  # type: ignore[union-attr]
        if kind is _int or path is None:
            return None  # an open file descriptor, or no path at all
        return text(os_fspath(path))

    def real(path: str, dir_fd: int | None) -> str:
        """The path the kernel resolves ``path`` to, symbolic links followed; its folder's, for a new file."""
        head, _, name = path.rstrip("/").rpartition("/")
        me = get_ident()
        busy.add(me)
        try:
            for candidate, tail in ((path, ""), (head or ("/" if path.startswith("/") else "."), "/" + name)):
                fd = -1
                try:
                    fd = os_open(candidate, path_flags, dir_fd=dir_fd)
                    return os_readlink(f"/proc/self/fd/{fd}") + tail
                except OSError:
                    continue
                finally:
                    if fd >= 0:
                        os_close(fd)
        finally:
            busy.discard(me)
        return path if path.startswith("/") else os_getcwd() + "/" + path

    def readable(path: str) -> bool:
        for root, below, allowed in read_rules:
            if path == root or path.startswith(below):
                return allowed
        return False

    def writable(path: str) -> bool:
        for root, below in write_roots:
            if path == root or path.startswith(below):
                return True
        return False

    def check_path(path: object, flags: object, dir_fd: object = None, write: bool = False) -> None:
        given = text(path)
        if given is None:
            return
        where = real(given, dir_fd if _type(dir_fd) is _int else None)  # type: ignore[arg-type]
        if _type(flags) is _int and flags & _WRITE_FLAGS:  # type: ignore[operator]
            write = True
        if write and not writable(where):
            raise refused_class(
                f"{_PREFIX} write {where}: a graded function may write only in its temporary folder "
                f"({write_roots[0][0] if write_roots else 'none'})"
            )
        if not write and not readable(where):
            raise refused_class(
                f"{_PREFIX} open {where}: a graded function may read only its own folder, the Python installation "
                "and its temporary folder"
            )

    def check_import(module: object) -> None:
        if _type(module) is _str and (
            module in ("solutions", "gradcheck_kit")
            or module.startswith("solutions.")  # type: ignore[union-attr]
            or module.startswith("gradcheck_kit.")  # type: ignore[union-attr]
        ):
            raise refused_class(
                f"{_PREFIX} import {module}: the course's solutions and the grader's own modules are out of reach "
                "of graded code"
            )

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event not in watched or get_ident() in busy:
            return
        if event == "open":
            check_path(args[0], args[2])
        elif event == "import":
            check_import(args[0])
        elif event in path_events:
            for at, fd_at in path_events[event]:
                check_path(args[at], None, args[fd_at] if fd_at is not None else None, write=True)
        elif event == "object.__setattr__":
            if args[1] == "__code__" or args[0] is refused_class:
                raise refused_class(
                    f"{_PREFIX} replace {args[1]} of {_type(args[0]).__name__}: it would reach the grader's own checks"
                )
        elif event in process_events:
            raise refused_class(f"{_PREFIX} start a process ({event}): a graded function has no reason to")
        elif event in ctypes_events:
            raise refused_class(f"{_PREFIX} use ctypes ({event}): it reaches past Python into the process")
        elif event == "os.kill":
            if args[0] != os_getpid():
                raise refused_class(f"{_PREFIX} send a signal to process {args[0]}: a graded function has no reason to")
        elif event == "os.killpg":
            raise refused_class(f"{_PREFIX} send a signal to process group {args[0]}")
        elif event in network_events:
            raise refused_class(f"{_PREFIX} use the network ({event})")
        elif event in hook_events:
            raise refused_class(f"{_PREFIX} use {event}: it would reach the grader's own checks")

    sys.addaudithook(hook)
