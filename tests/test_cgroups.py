"""A worker's control groups: one memory and process budget for it and its children, where the grader may make them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gradcheck_kit.sandbox import cgroups
from gradcheck_kit.sandbox.box import Sandbox

pytestmark = pytest.mark.skipif(cgroups.available() is not None, reason=f"no cgroups here: {cgroups.available()}")

_MiB = 1 << 20

# Waits for a line on stdin (it is in its group by then); three children then hold 96 MiB each,
# touched, for two seconds; it prints how many of them were killed.
CHILDREN = textwrap.dedent(
    """
    import os, signal, sys, time
    sys.stdin.readline()
    for _ in range(3):
        if os.fork() == 0:
            block = bytearray(96 << 20)
            for i in range(0, len(block), 4096):
                block[i] = 1
            time.sleep(2)
            os._exit(0)
    statuses = [os.wait()[1] for _ in range(3)]
    print(sum(os.WIFSIGNALED(s) and os.WTERMSIG(s) == signal.SIGKILL for s in statuses))
    """
)


def killed_children(memory: int) -> int:
    """How many of the three children a group with a budget of ``memory`` bytes saw killed."""
    group = cgroups.create(f"gradcheck-kit-test-{os.getpid()}-{memory}", memory=memory, processes=64)
    assert group is not None and "memory" in group.folders
    process = subprocess.Popen(
        [sys.executable, "-c", CHILDREN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        group.add(process.pid)
        out, _ = process.communicate("go\n", timeout=120)
    finally:
        process.kill()
        process.wait()
        group.remove()
    assert not Path(group.folders["memory"]).exists()  # removed once its processes were gone
    return int(out)


def test_children_that_together_pass_the_memory_budget_are_ended():
    # 3 x 96 MiB: each process is far below any per-process limit of 200 MiB, the three together are not.
    assert killed_children(200 * _MiB) >= 1


def test_children_within_the_budget_run_to_their_end():
    assert killed_children(1024 * _MiB) == 0


def test_a_worker_runs_in_a_group_of_its_own(tmp_path: Path):
    path = tmp_path / "student.py"
    path.write_text("import os\n\ndef pid():\n    return os.getpid()\n")
    sandbox = Sandbox(timeout=60)
    outcome = sandbox.call(path, "pid")
    assert outcome.ok, outcome.message
    groups = Path(f"/proc/{outcome.value}/cgroup").read_text()  # the worker is kept for the next call
    assert f"gradcheck-kit-{os.getpid()}-gradcheck-sandbox-" in groups
