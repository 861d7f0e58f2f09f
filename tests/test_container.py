"""The fork server in bubblewrap: what a process started as it is cannot reach, and where bubblewrap is left out."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from gradcheck_kit.sandbox import container, isolation

needs_bubblewrap = pytest.mark.skipif(
    container.bubblewrap_error() is not None, reason=f"not in bubblewrap here: {container.bubblewrap_error()}"
)


def run_wrapped(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with the program the fork server is started with."""
    wrapped = container.executable()
    assert wrapped is not None
    return subprocess.run([wrapped, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


@needs_bubblewrap
def test_a_folder_every_user_may_write_is_read_only_inside() -> None:
    shared = Path(tempfile.mkdtemp(dir="/tmp"))
    shared.chmod(0o1777)
    try:
        ran = run_wrapped(
            f"""
            import errno
            try:
                open({str(shared / "planted.py")!r}, "w")
            except OSError as exc:
                print(errno.errorcode[exc.errno])
            """
        )
        assert ran.stdout.strip() == "EROFS", ran.stderr
        assert not (shared / "planted.py").exists()
    finally:
        shared.rmdir()


@needs_bubblewrap
def test_the_scratch_folder_is_writable_inside() -> None:
    target = Path(container.scratch_root()) / f"probe-{os.getpid()}"
    try:
        ran = run_wrapped(f"open({str(target)!r}, 'w').write('ok')")
        assert ran.returncode == 0, ran.stderr
        assert target.read_text() == "ok"
    finally:
        target.unlink(missing_ok=True)


@needs_bubblewrap
def test_a_server_of_the_machine_cannot_be_reached_from_inside() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        ran = run_wrapped(
            f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=5)
                print("connected")
            except OSError as exc:
                print("refused", exc)
            """
        )
    assert ran.stdout.startswith("refused"), ran.stdout + ran.stderr


@needs_bubblewrap
def test_the_run_header_says_the_workers_are_in_bubblewrap() -> None:
    assert "bubblewrap (read-only file system, no network)" in isolation.describe()


def test_turned_off_by_its_environment_variable() -> None:
    probe = subprocess.run(
        [sys.executable, "-c", "from gradcheck_kit.sandbox import container as c; print(c.bubblewrap_error())"],
        env={**os.environ, container.ENVIRONMENT: "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.stdout.strip() == f"turned off by {container.ENVIRONMENT}=0", probe.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the scratch folder's owner is checked as root")
def test_a_scratch_folder_planted_by_another_user_is_not_used(monkeypatch) -> None:
    base = Path(tempfile.mkdtemp(dir="/tmp"))  # a temporary folder every user may enter, as /tmp
    base.chmod(0o1777)
    planted = base / "gradcheck-sandboxes"
    planted.mkdir()
    os.chown(planted, 65000, 65000)
    monkeypatch.setenv("TMPDIR", str(base))
    monkeypatch.setattr(tempfile, "tempdir", None)
    container.scratch_root.cache_clear()
    try:
        chosen = Path(container.scratch_root())
        assert chosen != planted.resolve()
        assert chosen.parent == base.resolve() and chosen.stat().st_uid == 0
    finally:
        container.scratch_root.cache_clear()
        shutil.rmtree(base, ignore_errors=True)
