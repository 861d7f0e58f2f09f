"""How a worker confines itself, once, before it loads any student code.

The grader describes the confinement in a :class:`Confinement`; the worker applies
it with :func:`apply` while it still runs as the user that started it:

1. hard resource limits, which a process can lower but never raise: address space
   (on the CPU), processes and threads of its user, file size, open files, no core dumps;
2. a private temporary folder, and a working directory and ``sys.path`` made of
   the submission's folders and the Python installation only (not the repository
   with the course's solutions);
3. Landlock, where the kernel has it, for calls on the CPU;
4. the switch to the sandbox's user (no supplementary groups), and never again dumpable;
5. the audit hook of :mod:`~gradcheck_kit.sandbox.audit`, last, since it cannot be undone.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from typing import Any

from gradcheck_kit.sandbox import audit, container, landlock

__all__ = ["Confinement", "apply", "python_roots"]

_PR_SET_DUMPABLE, _PR_SET_NO_NEW_PRIVS = 4, 38
# What libraries loaded on demand read, besides the Python installation: the dynamic
# loader's cache and the system's libraries, the CPU's description, the process's own /proc.
_SYSTEM_READ = (
    "/etc/ld.so.cache",
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/sys/devices/system/cpu",
    "/proc/self",
    "/proc/stat",
    "/proc/cpuinfo",
    "/proc/meminfo",
)
# What CUDA's libraries and Triton's compiler may read, which cannot be tried without a GPU.
_SYSTEM_READ_CUDA = ("/usr", "/lib", "/lib64", "/etc", "/opt", "/proc", "/sys", "/dev")


@dataclass(frozen=True)
class Confinement:
    """What a worker does to itself before it is ready (see the module's docstring).

    Attributes:
        uid, gid: the user to switch to; None to stay as the one that started the worker.
        memory_limit: bytes of address space (hard ``RLIMIT_AS``); None for none (CUDA).
        processes: processes and threads the worker's user may have (``RLIMIT_NPROC``);
            only set with a user of its own, as the count is the user's across the machine.
        file_size: the largest file the worker may write (``RLIMIT_FSIZE``).
        open_files: file descriptors the worker may hold (``RLIMIT_NOFILE``).
        temp_dir: the worker's own temporary folder, made by the grader.
        folders: the submission's folders: its working directory and on ``sys.path``.
        spawn: the code may start processes (Triton's compiler does).
        cuda: calls may use CUDA.
        package: the folder of gradcheck_kit, whose files (but for those the worker has loaded) stay out of reach.
        preload: modules to import first, while nothing is confined: those the call's driver imports.
    """

    uid: int | None
    gid: int | None
    memory_limit: int | None
    processes: int | None
    file_size: int
    open_files: int
    temp_dir: str
    folders: tuple[str, ...]
    spawn: bool
    cuda: bool
    package: str
    preload: tuple[str, ...] = ()


def apply(c: Confinement) -> dict[str, Any]:
    """Confine this process as ``c`` says.

    Returns:
        What the grader is told: ``unreadable`` (the folders the worker cannot read, with a
        note for each) and ``landlock`` (the Landlock ABI it is confined with, 0 for none).

    Raises:
        RuntimeError: when the worker could not switch to the sandbox's user, or cannot read the Python installation.
    """
    grader_cwd = os.getcwd()
    for name in c.preload:
        with contextlib.suppress(Exception):  # the driver says so itself when it runs
            importlib.import_module(name)
    _use_temp_dir(c)
    sys.dont_write_bytecode = True  # nothing written beside the submission's files
    roots = python_roots()
    sys.path[:] = [p for p in sys.path if p and _beneath(os.path.realpath(p), roots)] + list(c.folders)
    os.chdir(c.folders[0] if c.folders else c.temp_dir)
    _limit(c)
    locked = _landlock(c, grader_cwd) if not (c.cuda or c.spawn) else 0
    if c.uid is not None and c.gid is not None:
        _rename_paths(_reach(python_roots()))
        _switch_user(c.uid, c.gid)
    _prctl(_PR_SET_DUMPABLE, 0)  # a switch of user does this too, but not without one
    torch = sys.modules.get("torch")
    needed = (os.path.dirname(os.__file__),) + ((os.path.dirname(torch.__file__),) if torch is not None else ())
    _check_readable(needed, fatal=True)
    unreadable = _check_readable(c.folders, fatal=False)
    audit.install(_policy(c, grader_cwd))
    return {"unreadable": unreadable, "landlock": locked}


def python_roots() -> tuple[str, ...]:
    """The folders of the Python installation: the standard library and site-packages, first the standard library's."""
    paths = sysconfig.get_paths()
    found = [paths.get("stdlib"), paths.get("platstdlib"), paths.get("purelib"), paths.get("platlib")]
    found += [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    with contextlib.suppress(Exception):
        import site

        found += site.getsitepackages() + [site.getusersitepackages()]
    roots: list[str] = []
    for path in found:
        if path:
            real = os.path.realpath(path)
            if real not in roots and real != "/":
                roots.append(real)
    return tuple(roots)


def _reach(folders: tuple[str, ...]) -> dict[str, str]:
    """Folders others may read but not reach by their names, each with a name that reaches it: ``/proc/self/fd/N``.

    A Python installed in root's home (``/root/.pyenv``, mode 700) is readable to all
    below ``/root`` but not through it; a descriptor opened while the worker is still
    root leads past it. Without these a worker of the sandbox's user could not import
    a module it has not imported yet.
    """
    reached: dict[str, str] = {}
    for folder in sorted(folders, key=len):
        if any(folder.startswith(done.rstrip("/") + "/") for done in reached):
            continue
        mode = _mode(folder)
        if mode is None or container.searchable(folder) or mode & 0o005 != 0o005:
            continue
        fd = os.open(folder, getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY)
        reached[folder] = f"/proc/self/fd/{fd}"
    return reached


def _mode(path: str) -> int | None:
    try:
        return os.stat(path).st_mode
    except OSError:
        return None


def _rename_paths(reached: dict[str, str]) -> None:
    """Spell paths under the folders of ``reached`` by their reachable names: ``sys.path``, and loaded modules'."""
    if not reached:
        return
    prefixes = sorted(((f.rstrip("/") + "/", r + "/") for f, r in reached.items()), key=lambda p: -len(p[0]))

    def rename(path: Any) -> Any:
        if isinstance(path, str):
            for old, new in prefixes:
                if path.startswith(old) or path + "/" == old:
                    return new + path[len(old) :] if path.startswith(old) else new.rstrip("/")
        return path

    sys.path[:] = [rename(p) for p in sys.path]
    for module in list(sys.modules.values()):
        search = getattr(module, "__path__", None)
        if isinstance(search, list):
            search[:] = [rename(p) for p in search]
        file = getattr(module, "__file__", None)
        if isinstance(file, str):
            with contextlib.suppress(AttributeError, TypeError):
                module.__file__ = rename(file)
    sys.path_importer_cache.clear()
    importlib.invalidate_caches()


def _beneath(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _use_temp_dir(c: Confinement) -> None:
    for name in ("TMPDIR", "TEMP", "TMP"):
        os.environ[name] = c.temp_dir
    tempfile.tempdir = c.temp_dir
    if c.uid is not None:
        # The grader's home is not the sandbox user's: caches (Triton's kernels) go to the temporary folder.
        for name in ("HOME", "XDG_CACHE_HOME", "TRITON_HOME", "TRITON_CACHE_DIR"):
            os.environ[name] = c.temp_dir


def _limit(c: Confinement) -> None:
    import resource

    limits = [
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_FSIZE, c.file_size),
        (resource.RLIMIT_NOFILE, c.open_files),
    ]
    if c.memory_limit is not None:
        limits.append((resource.RLIMIT_AS, c.memory_limit))
    if c.processes is not None and c.uid is not None:
        limits.append((resource.RLIMIT_NPROC, c.processes))
    for which, value in limits:
        _, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        with contextlib.suppress(ValueError, OSError):  # a system that will not set it (some macOS versions)
            resource.setrlimit(which, (value, value))


def _landlock(c: Confinement, grader_cwd: str) -> int:
    hide = [c.package] + ([grader_cwd] if grader_cwd not in ("/", "") else [])
    read = list(c.folders) + list(python_roots()) + list(_SYSTEM_READ)
    try:
        return landlock.restrict(
            read=read, write=[c.temp_dir, *audit.DEVICES], hide=hide, read_files=_loaded_package_files(c.package)
        )
    except OSError:  # a kernel that has Landlock but refuses this ruleset: the other protections stand
        return 0


def _switch_user(uid: int, gid: int) -> None:
    try:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise RuntimeError(f"the worker could not switch to uid {uid}, gid {gid}: {exc}") from exc
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
        raise RuntimeError(f"the worker did not fully switch to uid {uid}, gid {gid}")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise RuntimeError("the worker could switch back to root after switching users")


def _prctl(option: int, value: int) -> None:
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def _check_readable(folders: tuple[str, ...], fatal: bool) -> dict[str, str]:
    """The folders of ``folders`` this process cannot read, each with what to say about it."""
    notes = {}
    for folder in folders:
        if not os.access(folder, os.R_OK | os.X_OK):
            note = (
                f"the folder {folder} cannot be read by the sandbox's user (uid {os.getuid()}); the graded files "
                f"are handed to it, but nothing else in that folder can be opened: make it readable to all "
                f"(chmod -R a+rX), or set GRADCHECK_SANDBOX_USER"
            )
            if fatal:
                raise RuntimeError(note.replace("the graded files are handed to it, but nothing else", "nothing"))
            notes[folder] = note
    return notes


def _loaded_package_files(package: str) -> list[str]:
    """The source files of gradcheck_kit's modules this worker has loaded: its tracebacks quote them."""
    files = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None) if name.partition(".")[0] == "gradcheck_kit" else None
        if isinstance(file, str) and os.path.realpath(file).startswith(package.rstrip("/") + "/"):
            files.append(os.path.realpath(file))
    return files


def _policy(c: Confinement, grader_cwd: str) -> audit.Policy:
    read: list[tuple[str, bool]] = [(f, True) for f in (*c.folders, c.temp_dir, *_loaded_package_files(c.package))]
    read.append((c.package, False))
    read += [(root, True) for root in (*python_roots(), *audit.DEVICES)]
    if grader_cwd not in ("/", ""):
        read.append((grader_cwd, False))
    if c.cuda or c.spawn:
        read += [(root, True) for root in _SYSTEM_READ_CUDA]
    return audit.Policy(read=tuple(read), write=(c.temp_dir, *audit.DEVICES), files=True, processes=c.spawn)
