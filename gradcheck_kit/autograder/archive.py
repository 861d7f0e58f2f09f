"""Unpack a submissions zip (a Gradescope or LMS export, or one student's upload) without trusting it.

A member may not name an absolute path, a drive, or a path with ``..`` in it, nor be
a symbolic link; the bytes written, counted as they are written rather than taken
from the headers, may not pass a cap. Any of these rejects the whole archive before
grading starts, with a message that names the member: an export is made by a tool,
and one that holds such a member has been tampered with.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

__all__ = ["MAX_BYTES", "MAX_MEMBERS", "UnsafeArchive", "unpack"]

#: The most bytes an archive may unpack to: a class of a thousand submissions of the exercises is a few MiB.
MAX_BYTES = 512 * 1024**2
#: The most members an archive may hold.
MAX_MEMBERS = 100_000
_CHUNK = 1024**2


class UnsafeArchive(ValueError):
    """The archive cannot be unpacked safely, or is not a zip archive; the message says which member and why."""


def unpack(archive: Path, dest: Path, *, max_bytes: int = MAX_BYTES, max_members: int = MAX_MEMBERS) -> Path:
    """Unpack ``archive`` into the folder ``dest`` (created) and return ``dest``.

    Raises:
        UnsafeArchive: when a member would land outside ``dest``, is a link, or the archive
            unpacks to more than ``max_bytes`` or ``max_members``; nothing is left in ``dest`` then.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            if len(members) > max_members:
                raise UnsafeArchive(f"{archive}: {len(members)} members, more than the {max_members} allowed")
            for member in members:
                _check_member(archive, member)
            dest.mkdir(parents=True, exist_ok=True)
            try:
                written = 0
                for member in members:
                    written = _extract(zf, member, dest, written, max_bytes, archive)
            except BaseException:
                shutil.rmtree(dest, ignore_errors=True)
                raise
    except zipfile.BadZipFile as exc:
        raise UnsafeArchive(f"{archive}: not a zip archive ({exc})") from None
    except FileExistsError as exc:
        raise UnsafeArchive(f"{archive}: {Path(exc.filename).name!r} is in it twice; refusing to unpack it") from None
    except OSError as exc:
        raise UnsafeArchive(f"{archive}: cannot be unpacked: {exc}") from None
    return dest


def _check_member(archive: Path, member: zipfile.ZipInfo) -> None:
    name = member.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if path.is_absolute() or (path.parts and path.parts[0].endswith(":")):
        raise UnsafeArchive(f"{archive}: member {member.filename!r} is an absolute path; refusing to unpack it")
    if ".." in path.parts:
        raise UnsafeArchive(
            f"{archive}: member {member.filename!r} leads out of its folder (..); refusing to unpack it"
        )
    mode = member.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise UnsafeArchive(f"{archive}: member {member.filename!r} is a symbolic link; refusing to unpack it")
    if "\0" in name:
        raise UnsafeArchive(f"{archive}: member {member.filename!r} has a NUL byte in its name")


def _extract(zf: zipfile.ZipFile, member: zipfile.ZipInfo, dest: Path, written: int, cap: int, archive: Path) -> int:
    target = dest.joinpath(*PurePosixPath(member.filename.replace("\\", "/")).parts)
    if member.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return written
    target.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(member) as source, open(target, "xb") as out:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            if written > cap:
                raise UnsafeArchive(
                    f"{archive}: unpacks to more than {cap // 1024**2} MiB (at {member.filename!r}); "
                    "refusing to unpack it"
                )
            out.write(chunk)
    return written
