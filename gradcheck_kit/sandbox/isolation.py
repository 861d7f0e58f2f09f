"""Which user a worker runs as, ending every process of that user, and the line that says what isolation is in force.

A grader that runs as root (as Gradescope, Docker and CI graders do) starts each
worker as root, and the worker switches to an unprivileged user before it loads any
student code: it then cannot write the grader's files, signal or trace the grader
or the fork server, or read their memory. By default that user is a numeric uid
(and gid) that no account and no process on the machine uses, claimed by this
process alone, so that :func:`sweep`, which ends every process of the sandbox's
user after each call, can never end anything else. ``GRADCHECK_SANDBOX_USER`` (or
the ``user`` argument of :class:`~gradcheck_kit.sandbox.box.Sandbox`) names another
user, by name or number; nothing else may run as it.

A grader that is not root cannot switch users: its workers run as itself, and grades
are for self-checking only. :func:`describe` says which of the two is in force.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import signal
import socket
import time
from collections.abc import Collection
from dataclasses import dataclass

from gradcheck_kit.sandbox import cgroups, container, landlock

__all__ = ["ENVIRONMENT", "FIRST_UID", "SandboxUser", "describe", "processes_of", "sandbox_user", "sweep"]

#: The environment variable that names the sandbox's user: a user name or a numeric uid.
ENVIRONMENT = "GRADCHECK_SANDBOX_USER"
#: Dedicated uids are taken from here up to 65533: within the 65536 ids a container's user namespace maps.
FIRST_UID = 64000
_LAST_UID = 65533
# What giving the worker its temporary folder, ending the sandbox's processes and switching to its user take.
_CAPABILITIES = {"CAP_CHOWN": 0, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7}


class SandboxUserError(RuntimeError):
    """The configured sandbox user cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class SandboxUser:
    """The user a worker switches to.

    Attributes:
        uid, gid: the ids it runs as; it has no supplementary groups.
        name: how messages name it.
        dedicated: whether this process chose it for itself (no account has it, and no other grader
            may take it); only then may a worker end every process of the user when its grader dies.
    """

    uid: int
    gid: int
    name: str
    dedicated: bool


_claimed: dict[str, SandboxUser] = {}
_locks: list[socket.socket] = []


def sandbox_user(setting: str | int | None = None) -> SandboxUser | None:
    """The user this process's workers switch to; None when it cannot switch users (it is not root).

    Args:
        setting: a user name or uid; None for ``GRADCHECK_SANDBOX_USER``, and when that is
            unset, a dedicated uid.

    Raises:
        SandboxUserError: when the user named cannot be used.
    """
    if _not_root_because() is not None:
        return None
    if setting is None:
        setting = os.environ.get(ENVIRONMENT, "").strip() or None
    key = "" if setting is None else str(setting)
    if key not in _claimed:
        _claimed[key] = _dedicated() if setting is None else _named(key)
    return _claimed[key]


def _not_root_because() -> str | None:
    """Why workers cannot switch users, or None when they can."""
    if not hasattr(os, "setresuid"):
        return "this system cannot switch users"
    if os.geteuid() != 0:
        return "not root"
    missing = [name for name, bit in _CAPABILITIES.items() if not _effective_capability(bit)]
    if missing:
        return f"root without {', '.join(missing)}"
    return None


def _effective_capability(bit: int) -> bool:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> bit & 1)
    except (OSError, ValueError):
        pass
    return True  # no /proc to ask: root is taken to hold them


def _named(setting: str) -> SandboxUser:
    import pwd

    try:
        entry = pwd.getpwuid(int(setting)) if setting.isdigit() else pwd.getpwnam(setting)
    except KeyError:
        if not setting.isdigit():
            raise SandboxUserError(f"{ENVIRONMENT}={setting}: there is no such user") from None
        uid, gid, name = int(setting), int(setting), f"uid {setting}"
    else:
        uid, gid, name = entry.pw_uid, entry.pw_gid, f"{entry.pw_name} (uid {entry.pw_uid})"
    if uid == 0 or gid == 0:
        raise SandboxUserError(f"{ENVIRONMENT}={setting}: the sandbox's user must not be root or in group root")
    running = processes_of(uid)
    if running:
        raise SandboxUserError(
            f"{ENVIRONMENT}={setting}: processes of {name} are running ({_pids(running)}); the grader ends every "
            "process of its sandbox's user after each call, so choose a user that nothing else runs as"
        )
    if not _lock(uid):
        raise SandboxUserError(f"{ENVIRONMENT}={setting}: another grading process on this machine uses {name}")
    return SandboxUser(uid, gid, name, dedicated=False)


def _dedicated() -> SandboxUser:
    import grp
    import pwd

    # A random start: graders in separate containers on one host share the kernel's count of a
    # uid's processes (RLIMIT_NPROC), and would otherwise all take the first uid.
    start = FIRST_UID + secrets.randbelow(1024)
    for uid in [*range(start, _LAST_UID + 1), *range(FIRST_UID, start)]:
        try:
            pwd.getpwuid(uid)
            continue
        except KeyError:
            pass
        try:
            grp.getgrgid(uid)
            continue
        except KeyError:
            pass
        if not processes_of(uid) and _lock(uid):
            return SandboxUser(uid, uid, f"uid {uid}", dedicated=True)
    raise SandboxUserError(
        f"no free uid between {FIRST_UID} and {_LAST_UID} for the sandbox; set {ENVIRONMENT} to a user nothing runs as"
    )


def _lock(uid: int) -> bool:
    """Claim ``uid`` for this process's life, against other graders on the machine (an abstract socket's name)."""
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        lock.bind(f"\0gradcheck-kit-sandbox-uid-{uid}")
    except OSError:
        lock.close()
        return False
    if not _locks:
        atexit.register(_release)
    _locks.append(lock)
    return True


def _release() -> None:
    for lock in _locks:
        lock.close()


def _pids(pids: Collection[int]) -> str:
    shown = sorted(pids)
    return ", ".join(map(str, shown[:5])) + (", ..." if len(shown) > 5 else "")


# ----------------------------------------------------------------------------- ending processes


def processes_of(uid: int) -> list[int]:
    """The processes running as ``uid`` (by any of their uids), but those dead already and waiting to be reaped."""
    found = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as file:
                status = file.read()
        except OSError:  # gone meanwhile
            continue
        state, uids, threads = b"", [], 1
        for line in status.splitlines():
            if line.startswith(b"State:"):
                state = line.split()[1]
            elif line.startswith(b"Uid:"):
                uids = [int(x) for x in line.split()[1:]]
            elif line.startswith(b"Threads:"):
                threads = int(line.split()[1])
        # A zombie is dead already, unless it is a thread group's leader whose other threads still run.
        if uid in uids and (state not in (b"Z", b"X") or threads > 1):
            found.append(int(name))
    return found


def sweep(uid: int, keep: Collection[int] = (), timeout: float = 10.0) -> list[int]:
    """End every process of ``uid`` but those in ``keep``, with SIGKILL, until none is left.

    Stopped processes die to SIGKILL too. A process that forks while this runs is
    found on the next pass.

    Returns:
        The processes it killed.

    Raises:
        TimeoutError: when some are still running after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    killed: list[int] = []
    while True:
        left = [pid for pid in processes_of(uid) if pid not in keep]
        if not left:
            return killed
        if time.monotonic() > deadline:
            raise TimeoutError(f"processes of uid {uid} still run after SIGKILL: {_pids(left)}")
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed += [pid for pid in left if pid not in killed]
        time.sleep(0.002)


# ----------------------------------------------------------------------------- the run's header


def describe(setting: str | int | None = None) -> str:
    """One line saying which isolation workers get on this machine, for the grading run's header."""
    why = _not_root_because()
    confined = landlock.describe() + container.describe() + cgroups.describe()
    if why is None:
        try:
            user = sandbox_user(setting)
        except SandboxUserError as exc:
            return f"isolation: workers cannot start: {exc}"
        assert user is not None
        access = "no access to the grader's files or processes"
        return f"isolation: worker runs as {user.name} ({access}), hard limits{confined}"
    me = _user_name()
    if why != "not root":
        me += f", {why}"
    if not confined:
        return f"isolation: none beyond a worker process (running as user {me}): grades are for self-checking only"
    return (
        f"isolation: a worker process running as user {me}, with hard limits{confined} but no user of its own: "
        "grades are for self-checking only"
    )


def _user_name() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no name for this uid
        return f"uid {os.geteuid()}"
