"""Confine a worker's file system access with Landlock, where the kernel has it (Linux 5.13 and later).

Landlock lets a process restrict itself, for good and with its future children,
without privileges and without starting anything afresh, so it fits workers forked
from the fork server. :func:`restrict` allows reading only beneath the folders it is
given (files and folders it is told to hide stay out of reach even below those),
writing only beneath others, and, where the kernel's Landlock is recent enough, no
TCP connections (ABI 4) and no signals to processes outside the worker's own
(ABI 6). Unlike the worker's audit hook it also holds for reads that C code makes
(``torch.from_file``), and against a path swapped for a symbolic link after it was
checked.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterable, Sequence
from functools import cache

__all__ = ["abi", "describe", "restrict"]

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446  # the same number on every architecture
_VERSION_FLAG = 1
_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_MAKE_AND_REMOVE = sum(1 << bit for bit in range(4, 13))  # remove and make directories, files, links, devices
_REFER, _TRUNCATE = 1 << 13, 1 << 14
_FILE_ONLY = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


@cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    libc.syscall.restype = ctypes.c_long
    return libc


@cache
def abi() -> int:
    """The kernel's Landlock ABI version; 0 when it has none, or has it switched off."""
    libc = _libc()
    if libc is None:
        return 0
    version = libc.syscall(ctypes.c_long(_CREATE_RULESET), None, ctypes.c_size_t(0), ctypes.c_uint32(_VERSION_FLAG))
    return max(int(version), 0)


def describe() -> str:
    """``", Landlock on the CPU (...)"`` for the run's header: what the kernel's Landlock confines, if any."""
    version = abi()
    if version == 0:
        return ""
    what = ["files"] + (["network"] if version >= 4 else []) + (["signals"] if version >= 6 else [])
    return f", Landlock on the CPU ({', '.join(what)})"


def _handled(version: int) -> int:
    access = _EXECUTE | _WRITE_FILE | _READ_FILE | _READ_DIR | _MAKE_AND_REMOVE
    if version >= 2:
        access |= _REFER
    if version >= 3:
        access |= _TRUNCATE
    return access


def restrict(
    read: Iterable[str], write: Iterable[str], hide: Sequence[str] = (), read_files: Iterable[str] = ()
) -> int:
    """Restrict this process, for good, to reading beneath ``read`` and writing beneath ``write``.

    Args:
        read: folders (or files) whose contents may be read.
        write: folders (or files) in which anything may be read, written, created and removed.
        hide: folders to keep out of reach even where they lie beneath a folder of ``read``.
        read_files: files that may be read even where they lie in a hidden folder.

    Returns:
        The Landlock ABI used; 0 when the kernel has none, and nothing was restricted.

    Raises:
        OSError: when the kernel refused the restriction.
    """
    version = abi()
    libc = _libc()
    if version == 0 or libc is None:
        return 0
    handled = _handled(version)
    attr = _RulesetAttr(handled, _NET_BIND_TCP | _NET_CONNECT_TCP if version >= 4 else 0, 0)
    if version >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL
    size = 8 if version < 4 else 16 if version < 6 else 24
    ruleset = libc.syscall(
        ctypes.c_long(_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)
    )
    if ruleset < 0:
        raise _error("landlock_create_ruleset")
    try:
        hidden = [os.path.realpath(h) for h in hide]
        for path in read:
            for part in _beneath_except(os.path.realpath(path), hidden):
                _add(libc, ruleset, part, _READ_FILE | _READ_DIR)
        for path in read_files:
            _add(libc, ruleset, path, _READ_FILE)
        for path in write:
            _add(libc, ruleset, path, handled)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise _error("prctl(PR_SET_NO_NEW_PRIVS)")
        if libc.syscall(ctypes.c_long(_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            raise _error("landlock_restrict_self")
    finally:
        os.close(ruleset)
    return version


def _beneath_except(root: str, hidden: Sequence[str]) -> list[str]:
    """``root``, or, when a hidden folder lies beneath it, every entry on the way down but the hidden ones."""
    inside = [h for h in hidden if h == root or h.startswith(root.rstrip("/") + "/")]
    if not inside:
        return [root]
    if root in inside or not os.path.isdir(root):
        return []
    parts = []
    with contextlib.suppress(OSError):
        for name in os.listdir(root):
            parts += _beneath_except(os.path.realpath(os.path.join(root, name)), hidden)
    return parts


def _add(libc: ctypes.CDLL, ruleset: int, path: str, access: int) -> None:
    try:
        fd = os.open(path, getattr(os, "O_PATH", os.O_RDONLY) | os.O_CLOEXEC)
    except OSError:  # gone, or never there: nothing to allow
        return
    try:
        if not os.path.isdir(f"/proc/self/fd/{fd}"):
            access &= _FILE_ONLY
        rule = _PathBeneathAttr(access, fd)
        if libc.syscall(ctypes.c_long(_ADD_RULE), ctypes.c_int(ruleset), ctypes.c_int(_PATH_BENEATH),
                        ctypes.byref(rule), ctypes.c_uint32(0)) != 0:  # fmt: skip
            raise _error(f"landlock_add_rule({path})")
    finally:
        os.close(fd)


def _error(what: str) -> OSError:
    errno = ctypes.get_errno()
    return OSError(errno, f"{what}: {os.strerror(errno)}")
