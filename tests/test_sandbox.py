from __future__ import annotations

import errno
import functools
import json
import os
import pickle
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gradcheck_kit.sandbox.box import OUTPUT_LIMIT, Outcome, ReturnedTensor, Sandbox, TensorInfo, unwrap
from gradcheck_kit.sandbox.isolation import describe, sandbox_user
from gradcheck_kit.sandbox.reply import BadReply, Reply, Unsendable, check_sendable, encode_reply, load_reply

GiB = 1024**3


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    # 3 GiB leaves the worker (about 0.7 GiB with torch) room for every test here.
    with Sandbox(memory_limit=3 * GiB) as box:
        yield box


@pytest.fixture(params=["worker", "in-process"])
def either(request: pytest.FixtureRequest, sandbox: Sandbox) -> Sandbox:
    """Both modes, for behaviour that must not depend on isolation."""
    return sandbox if request.param == "worker" else Sandbox(isolate=False)


def student(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "ex2_cross_entropy.py"
    path.write_text("import os, sys\nimport torch\n\n" + textwrap.dedent(source))
    return path


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


CROSS_ENTROPY = """
    import torch.nn.functional as F

    def cross_entropy_backward(logits, Yb):
        n = logits.shape[0]
        dlogits = F.softmax(logits, 1)
        dlogits[range(n), Yb] -= 1
        dlogits /= n
        return dlogits
"""


def test_a_returned_tensor_comes_back_with_its_dtype_shape_and_device(either: Sandbox, tmp_path: Path) -> None:
    path = student(tmp_path, CROSS_ENTROPY)
    logits = torch.randn(5, 27, dtype=torch.float64)
    Yb = torch.randint(0, 27, (5,))
    outcome = either.call(path, "cross_entropy_backward", logits, Yb)
    assert outcome.status == "ok", outcome.message
    assert outcome.ok
    assert isinstance(outcome.value, ReturnedTensor)
    assert outcome.value.info == TensorInfo(torch.float64, (5, 27), "cpu")
    leaf = logits.clone().requires_grad_()
    torch.nn.functional.cross_entropy(leaf, Yb).backward()
    torch.testing.assert_close(outcome.value.tensor, leaf.grad)
    assert outcome.duration > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tensors_on_cuda_come_back_as_cpu_copies_that_remember_the_device(sandbox: Sandbox, tmp_path: Path) -> None:
    path = student(tmp_path, "def f(x):\n    return [x * 2, (x * 2).cpu()]\n")
    outcome = sandbox.call(path, "f", torch.ones(3), device="cuda")
    assert outcome.ok, outcome.message
    on_cuda, on_cpu = outcome.value
    assert on_cuda.info == TensorInfo(torch.float32, (3,), "cuda:0")
    assert on_cuda.tensor.device == torch.device("cpu")
    assert on_cpu.info.device == "cpu"
    torch.testing.assert_close(on_cuda.tensor, torch.full((3,), 2.0))


def test_tensor_info_reads_like_a_declaration() -> None:
    assert str(TensorInfo(torch.float64, (32, 27), "cuda:0")) == "float64[32, 27] on cuda:0"
    assert str(TensorInfo.of(torch.zeros((), dtype=torch.int64))) == "int64[] on cpu"


def test_containers_and_other_values_come_back_as_they_are(either: Sandbox, tmp_path: Path) -> None:
    path = student(
        tmp_path,
        """
        import numpy as np

        def grads(x):
            return {"dx": x * 2, "parts": [x.sum(), 1.5, None, "text", (x[0], np.arange(3))]}
        """,
    )
    outcome = either.call(path, "grads", torch.arange(3.0))
    assert outcome.ok, outcome.message
    value = outcome.value
    assert isinstance(value["dx"], ReturnedTensor)
    assert value["parts"][1:4] == [1.5, None, "text"]
    assert isinstance(value["parts"][4], tuple)
    assert isinstance(value["parts"][4][1], np.ndarray)
    np.testing.assert_array_equal(value["parts"][4][1], np.arange(3))
    plain = unwrap(value)
    torch.testing.assert_close(plain["dx"], torch.tensor([0.0, 2.0, 4.0]))
    torch.testing.assert_close(plain["parts"][4][0], torch.tensor(0.0))


def test_a_numpy_return_comes_back_as_numpy(either: Sandbox, tmp_path: Path) -> None:
    path = student(tmp_path, "def f(x):\n    return (x * 3).numpy()\n")
    outcome = either.call(path, "f", torch.ones(2, dtype=torch.float64))
    assert outcome.ok, outcome.message
    assert isinstance(outcome.value, np.ndarray)
    assert outcome.value.dtype == np.float64
    np.testing.assert_array_equal(outcome.value, [3.0, 3.0])


def test_an_untouched_stub_is_not_started(either: Sandbox, tmp_path: Path) -> None:
    path = student(
        tmp_path,
        """
        def cross_entropy_backward(logits, Yb):
            raise NotImplementedError("Exercise 2: dlogits in one expression")
        """,
    )
    outcome = either.call(path, "cross_entropy_backward", torch.randn(2, 3), torch.tensor([0, 1]))
    assert outcome.status == "not_started"
    assert outcome.message == "Exercise 2: dlogits in one expression"
    assert outcome.value is None


@pytest.mark.parametrize(
    "call, text",
    [
        ("x.to_sparse().sort()", "Could not run 'aten::sort.stable' with arguments from the 'SparseCPU' backend"),
        # Raised by torch's C++ code with no Python frame of torch's own in between.
        ("x.to_sparse().untyped_storage()", "Cannot access storage of SparseTensorImpl"),
    ],
    ids=["kernel", "tensor method"],
)
def test_a_not_implemented_error_from_torch_is_an_error_not_a_stub(
    either: Sandbox, tmp_path: Path, call: str, text: str
) -> None:
    path = student(tmp_path, f"def f(x):\n    return {call}\n")
    outcome = either.call(path, "f", torch.zeros(3))
    assert outcome.status == "error"
    assert outcome.message.startswith(f"NotImplementedError: {text}")
    assert outcome.message.endswith(f"at ex2_cross_entropy.py:{line_of(path, call)}: return {call}")


def test_an_exception_names_the_students_own_line(either: Sandbox, tmp_path: Path) -> None:
    path = student(
        tmp_path,
        """
        def helper(d, Yb):
            d[range(d.shape[0]), Yb] -= 1
            return d

        def cross_entropy_backward(logits, Yb):
            dlogits = logits.softmax(1)
            return helper(dlogits, Yb)
        """,
    )
    outcome = either.call(path, "cross_entropy_backward", torch.randn(2, 3), torch.tensor([0, 7]))
    assert outcome.status == "error"
    first, where = outcome.message.split("\n")
    assert first.startswith("IndexError: index 7 is out of bounds")
    assert where == f"at ex2_cross_entropy.py:{line_of(path, '-= 1')}: d[range(d.shape[0]), Yb] -= 1"
    assert outcome.traceback.startswith("Traceback (most recent call last):")
    assert "in cross_entropy_backward" in outcome.traceback
    assert "sandbox.py" not in outcome.traceback and "_call.py" not in outcome.traceback


def test_a_syntax_error_is_an_import_error_with_its_line(either: Sandbox, tmp_path: Path) -> None:
    path = student(tmp_path, "def f(x):\n    return x +\n")
    outcome = either.call(path, "f", torch.ones(1))
    assert outcome.status == "import_error"
    assert outcome.message.startswith("SyntaxError: invalid syntax")
    assert outcome.message.endswith(f"at ex2_cross_entropy.py:{line_of(path, 'x +')}: return x +")


def test_a_failing_import_is_an_import_error_with_its_line(either: Sandbox, tmp_path: Path) -> None:
    path = student(tmp_path, "import no_such_module_here\n\ndef f(x):\n    return x\n")
    outcome = either.call(path, "f", torch.ones(1))
    assert outcome.status == "import_error"
    assert "ModuleNotFoundError: No module named 'no_such_module_here'" in outcome.message
    assert outcome.message.endswith(f"ex2_cross_entropy.py:{line_of(path, 'no_such')}: import no_such_module_here")


def test_a_missing_function_lists_the_names_the_file_defines(either: Sandbox, tmp_path: Path) -> None:
    path = student(tmp_path, "def cross_entropy_backwards(x):\n    pass\n\ndef helper():\n    pass\n\nN = 3\n")
    outcome = either.call(path, "cross_entropy_backward", torch.ones(1))
    assert outcome.status == "missing_function"
    assert outcome.message == (
        "ex2_cross_entropy.py has no function 'cross_entropy_backward'; it defines cross_entropy_backwards, helper"
    )


def test_a_name_that_is_not_a_function_is_missing(either: Sandbox, tmp_path: Path) -> None:
    path = student(tmp_path, "f = 3\n")
    outcome = either.call(path, "f")
    assert outcome.status == "missing_function"
    assert outcome.message == "ex2_cross_entropy.py defines 'f' as a int, not a function"


@pytest.mark.parametrize(
    "cheat, name",
    [
        (
            "logits.requires_grad_()\n    F.cross_entropy(logits, Yb).backward()\n    return logits.grad",
            "torch.Tensor.backward()",
        ),
        (
            "x = logits.clone().requires_grad_()\n    return torch.autograd.grad(F.cross_entropy(x, Yb), x)[0]",
            "torch.autograd.grad()",
        ),
        ("return torch.func.grad(lambda x: F.cross_entropy(x, Yb))(logits)", "torch.func.grad()"),
    ],
    ids=["backward", "autograd.grad", "func.grad"],
)
def test_using_autograd_is_forbidden(either: Sandbox, tmp_path: Path, cheat: str, name: str) -> None:
    source = f"import torch.nn.functional as F\n\ndef cross_entropy_backward(logits, Yb):\n    {cheat}\n"
    path = student(tmp_path, source)
    outcome = either.call(path, "cross_entropy_backward", torch.randn(4, 5), torch.tensor([0, 1, 2, 3]))
    assert outcome.status == "forbidden"
    assert outcome.message.startswith(f"AutogradForbidden: manual backward must not use autograd: {name} was called")
    assert "\nat ex2_cross_entropy.py:" in outcome.message
    assert outcome.value is None


def test_every_call_is_guarded_there_is_no_way_around_it(either: Sandbox, tmp_path: Path) -> None:
    source = "import torch.nn.functional as F\n\ndef reference(logits, Yb):\n    x = logits.requires_grad_()\n"
    source += "    F.cross_entropy(x, Yb).backward()\n    return x.grad\n"
    path = student(tmp_path, source)
    args = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    assert either.call(path, "reference", *args).status == "forbidden"
    # There is no sandbox keyword to turn the guard off: `guarded` goes to the function, which has none.
    outcome = either.call(path, "reference", *args, guarded=False)
    assert outcome.status == "error"
    assert "unexpected keyword argument 'guarded'" in outcome.message


def test_sys_exit_is_reported_as_exited(either: Sandbox, tmp_path: Path) -> None:
    path = student(tmp_path, "def f(x):\n    sys.exit(3)\n")
    outcome = either.call(path, "f", torch.ones(1))
    assert outcome.status == "exited"
    assert outcome.message.startswith("the code called sys.exit(3) (or exit or quit); a graded function must return")
    assert outcome.message.endswith(f"at ex2_cross_entropy.py:{line_of(path, 'sys.exit')}: sys.exit(3)")


def test_in_place_changes_do_not_reach_the_callers_tensors(either: Sandbox, tmp_path: Path) -> None:
    path = student(
        tmp_path,
        """
        def f(x, parts, f):
            x.zero_()
            parts["w"].fill_(7)
            f.h.add_(1)
            return x
        """,
    )
    x = torch.arange(4.0)
    w = torch.ones(2)
    forward = SimpleNamespace(h=torch.zeros(3), n=3)
    outcome = either.call(path, "f", x, {"w": w}, f=forward)
    assert outcome.ok, outcome.message
    torch.testing.assert_close(outcome.value.tensor, torch.zeros(4))
    torch.testing.assert_close(x, torch.arange(4.0))
    torch.testing.assert_close(w, torch.ones(2))
    torch.testing.assert_close(forward.h, torch.zeros(3))


def test_arguments_arrive_detached_even_when_the_caller_tracks_grad(either: Sandbox, tmp_path: Path) -> None:
    path = student(tmp_path, "def f(x):\n    return [x.requires_grad, x.grad_fn is None, x * 1]\n")
    x = torch.ones(3, requires_grad=True) * 2  # a non-leaf: it cannot even be pickled as it is
    outcome = either.call(path, "f", x)
    assert outcome.ok, outcome.message
    assert outcome.value[:2] == [False, True]


def test_global_settings_the_student_changes_are_undone(either: Sandbox, tmp_path: Path) -> None:
    path = student(
        tmp_path,
        """
        def change(x):
            torch.set_default_dtype(torch.float64)
            torch.set_grad_enabled(False)
            return x

        def look():
            return [str(torch.get_default_dtype()), torch.is_grad_enabled()]
        """,
    )
    assert either.call(path, "change", torch.ones(1)).ok
    assert torch.get_default_dtype() == torch.float32
    assert torch.is_grad_enabled()
    assert either.call(path, "look").value == ["torch.float32", True]


def test_prints_are_captured_for_their_call_only(
    either: Sandbox, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = student(
        tmp_path,
        """
        print("at import")

        def noisy(x):
            print("dlogits", x.shape)
            print("careful", file=sys.stderr)
            return x

        def quiet(x):
            return x
        """,
    )
    noisy = either.call(path, "noisy", torch.ones(2))
    quiet = either.call(path, "quiet", torch.ones(2))
    assert noisy.stdout == "at import\ndlogits torch.Size([2])\ncareful\n"
    assert quiet.stdout == "at import\n"
    assert capfd.readouterr() == ("", "")


def test_output_written_below_python_is_captured_in_the_worker(
    sandbox: Sandbox, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = student(tmp_path, "def f():\n    os.write(1, b'raw out\\n')\n    os.write(2, b'raw err\\n')\n")
    outcome = sandbox.call(path, "f")
    assert outcome.stdout == "raw out\nraw err\n"
    assert capfd.readouterr() == ("", "")


def test_long_output_is_cut(either: Sandbox, tmp_path: Path) -> None:
    path = student(tmp_path, "def f():\n    for i in range(10_000):\n        print('line', i)\n")
    outcome = either.call(path, "f")
    assert outcome.ok
    assert outcome.stdout.startswith("line 0\nline 1\n")
    assert len(outcome.stdout) < OUTPUT_LIMIT + 100
    assert "more characters of output not shown" in outcome.stdout


def test_an_unpicklable_return_is_an_error_naming_its_type(either: Sandbox, tmp_path: Path) -> None:
    path = student(tmp_path, "def f(x):\n    return {'g': (i for i in range(3))}\n")
    outcome = either.call(path, "f", torch.ones(1))
    assert outcome.status == "error"
    assert outcome.message.startswith("returned a generator, which cannot be sent back to the grader")


def test_an_instance_of_the_students_own_class_is_refused_alike_in_both_modes(either: Sandbox, tmp_path: Path) -> None:
    # The grader's process cannot import the student's module to unpickle it.
    path = student(tmp_path, "class Grads:\n    pass\n\ndef f():\n    return Grads()\n")
    outcome = either.call(path, "f")
    assert outcome.status == "error"
    assert outcome.message.startswith("returned a Grads, which cannot be sent back to the grader")


def test_edits_to_the_file_are_seen_by_the_next_call(either: Sandbox, tmp_path: Path) -> None:
    path = student(tmp_path, "def f():\n    return 1\n")
    assert either.call(path, "f").value == 1
    path.write_text("def f():\n    return 2\n")
    assert either.call(path, "f").value == 2


def test_the_worker_is_a_separate_process_kept_between_calls(sandbox: Sandbox, tmp_path: Path) -> None:
    path = student(tmp_path, "def pid():\n    return os.getpid()\n")
    first, second = sandbox.call(path, "pid"), sandbox.call(path, "pid")
    assert first.value == second.value != os.getpid()


def test_a_call_that_redirects_the_streams_does_not_silence_the_next(sandbox: Sandbox, tmp_path: Path) -> None:
    path = student(
        tmp_path,
        """
        def hide():
            sys.stdout = open(os.devnull, "w")
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)

        def speak():
            print("heard")
        """,
    )
    assert sandbox.call(path, "hide").ok
    assert sandbox.call(path, "speak").stdout == "heard\n"


def test_a_thread_left_running_gets_the_worker_replaced(sandbox: Sandbox, tmp_path: Path) -> None:
    path = student(
        tmp_path,
        """
        import threading, time

        def spin():
            threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
            return os.getpid()

        def pid():
            return os.getpid()
        """,
    )
    spun = sandbox.call(path, "spin")
    assert spun.ok
    assert sandbox.call(path, "pid").value != spun.value


def test_a_memory_blow_up_fails_only_its_call(sandbox: Sandbox, tmp_path: Path) -> None:
    # 4 GiB of address space: granted lazily without a limit, refused under 3 GiB.
    path = student(tmp_path, "def f():\n    return torch.empty(2**30).shape\n\ndef g():\n    return 1\n")
    outcome = sandbox.call(path, "f")
    assert outcome.status == "error"
    assert "can't allocate memory" in outcome.message
    assert outcome.message.endswith("(a call may use at most 3 GiB of memory)")
    assert sandbox.call(path, "g").value == 1
    assert Sandbox(isolate=False).call(path, "f").value == (2**30,)


def test_an_infinite_loop_times_out_and_the_next_call_works(sandbox: Sandbox, tmp_path: Path) -> None:
    path = student(
        tmp_path,
        "def f(x):\n    print('started')\n    while True:\n        x = x + 1\n\ndef g():\n    return os.getpid()\n",
    )
    before = sandbox.call(path, "g").value
    outcome = sandbox.call(path, "f", torch.ones(1), timeout=1.5)
    assert outcome.status == "timeout"
    assert outcome.message.startswith("the call did not finish within 1.5 s and was stopped; an infinite loop")
    assert 1.5 <= outcome.duration < 10
    assert outcome.stdout == "started\n"
    after = sandbox.call(path, "g")
    assert after.ok
    assert after.value != before


def test_os_exit_is_a_crash_and_the_next_call_works(sandbox: Sandbox, tmp_path: Path) -> None:
    path = student(tmp_path, "def f():\n    print('bye')\n    os._exit(0)\n\ndef g():\n    return 1\n")
    outcome = sandbox.call(path, "f")
    assert outcome.status == "crashed"
    assert outcome.message.startswith("the worker process exited with code 0 during the call")
    assert "os._exit()" in outcome.message
    assert outcome.stdout == "bye\n"
    assert sandbox.call(path, "g").value == 1


def test_a_worker_killed_by_a_signal_is_a_crash_naming_it(sandbox: Sandbox, tmp_path: Path) -> None:
    path = student(tmp_path, "import signal\n\ndef f():\n    os.kill(os.getpid(), signal.SIGSEGV)\n")
    outcome = sandbox.call(path, "f")
    assert outcome.status == "crashed"
    assert outcome.message.startswith("the worker process was killed by SIGSEGV during the call")
    assert "Fatal Python error: Segmentation fault" in outcome.stdout  # faulthandler's report


@pytest.mark.skipif(not hasattr(signal, "SIGRTMIN"), reason="real-time signals are POSIX")
def test_a_worker_killed_by_a_signal_with_no_name_is_a_crash_too(sandbox: Sandbox, tmp_path: Path) -> None:
    number = signal.SIGRTMIN + 6
    path = student(tmp_path, f"def f():\n    os.kill(os.getpid(), {number})\n\ndef g():\n    return 1\n")
    outcome = sandbox.call(path, "f")
    assert outcome.status == "crashed"
    assert outcome.message.startswith(f"the worker process was killed by signal {number} during the call")
    assert "GiB of memory" not in outcome.message  # not a signal that running out of memory sends
    assert sandbox.call(path, "g").value == 1


def test_the_thread_count_and_working_directory_a_call_changes_are_restored(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = student(
        tmp_path,
        """
        def change():
            torch.set_num_threads(1)
            os.chdir("/")

        def state():
            return torch.get_num_threads(), os.getcwd()
        """,
    )
    monkeypatch.chdir(tmp_path)
    before = sandbox.call(path.name, "state").value  # a path relative to the caller's directory
    assert sandbox.call(path.name, "change").ok
    assert sandbox.call(path.name, "state").value == before


def test_the_memory_limit_covers_the_files_top_level_code(sandbox: Sandbox, tmp_path: Path) -> None:
    path = student(tmp_path, "X = torch.empty(2**30)\n\ndef f():\n    return 1\n")
    outcome = sandbox.call(path, "f")
    assert outcome.status == "import_error"
    assert "can't allocate memory" in outcome.message
    assert outcome.message.endswith("(a call may use at most 3 GiB of memory)")


def test_close_stops_the_worker(sandbox: Sandbox, tmp_path: Path) -> None:
    # Last of the worker's tests: a call after close() would start a new worker,
    # as the tests of timeouts and crashes already show.
    path = student(tmp_path, "def pid():\n    return os.getpid()\n")
    pid = sandbox.call(path, "pid").value
    os.kill(pid, 0)
    sandbox.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_grader_killed_mid_call_takes_its_worker_and_its_temporary_folder_with_it(
    tmp_path: Path, ends_within
) -> None:
    # The worker's parent is the fork server, which outlives the grader while the worker runs.
    path = student(
        tmp_path,
        """
        import tempfile
        from pathlib import Path

        def spin():
            Path(tempfile.gettempdir(), "worker.pid").write_text(str(os.getpid()))
            while True:
                pass
        """,
    )
    # A folder like /tmp, so that a worker of another user makes its temporary folder here, and may remove it.
    scratch = Path(tempfile.mkdtemp(dir="/tmp"))
    scratch.chmod(0o1777)
    grader = textwrap.dedent(
        f"""
        from pathlib import Path
        from gradcheck_kit.sandbox.box import Sandbox

        if __name__ == "__main__":
            Sandbox(timeout=600).call(Path({str(path)!r}), "spin")
        """
    )
    process = subprocess.Popen([sys.executable, "-c", grader], env={**os.environ, "TMPDIR": str(scratch)})
    try:
        deadline = time.monotonic() + 120
        while not list(scratch.glob("**/gradcheck-sandbox-*/worker.pid")) and time.monotonic() < deadline:
            assert process.poll() is None, "the grader ended before the call started"
            time.sleep(0.1)
        (pid_file,) = scratch.glob("**/gradcheck-sandbox-*/worker.pid")
        worker = int(pid_file.read_text())
    finally:
        process.kill()
        process.wait()
    try:
        assert ends_within(worker, 30), "the worker went on looping after its grader was killed"
        assert ends_within_seconds(lambda: not list(scratch.glob("**/gradcheck-sandbox-*")), 10)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def ends_within_seconds(done, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_script_without_a_main_guard_is_told_to_add_one(tmp_path: Path) -> None:
    path = student(tmp_path, "def f():\n    return 1\n")
    script = tmp_path / "grade_it.py"
    script.write_text(
        f"from pathlib import Path\nfrom gradcheck_kit.sandbox.box import Sandbox\n"
        f"print(Sandbox().call(Path({str(path)!r}), 'f'))\n"
    )
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "gradcheck_kit.sandbox.worker.WorkerStartError: the sandbox's worker process exited with code"
    )
    assert f"imports the script that started it ({script}) again" in last
    assert 'under `if __name__ == "__main__":`' in last


def test_outcomes_are_frozen() -> None:
    outcome = Outcome("ok", 1)
    with pytest.raises(AttributeError):
        outcome.status = "error"  # type: ignore[misc]
    assert outcome.ok and not Outcome("timeout").ok


def test_a_system_that_refuses_a_limit_still_starts_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    from gradcheck_kit.sandbox.confine import Confinement, _limit

    set_to = []

    def refuse(which: int, limits: tuple[int, int]) -> None:
        set_to.append(which)
        raise ValueError("not allowed to raise maximum limit")

    monkeypatch.setattr(resource, "setrlimit", refuse)
    confinement = Confinement(
        uid=None, gid=None, memory_limit=GiB, processes=256, file_size=GiB, open_files=1024, temp_dir="/tmp",
        folders=(), spawn=False, cuda=False, package="/nowhere",
    )  # fmt: skip
    _limit(confinement)  # raised ValueError before, without the fallback
    assert resource.RLIMIT_AS in set_to and resource.RLIMIT_CORE in set_to


# ----------------------------------------------------------------- what a reply may carry


@pytest.mark.parametrize(
    "tensor",
    [
        torch.randn(3, 4),
        torch.randn(3, 4, dtype=torch.float64).t(),  # not contiguous
        torch.randn(5).to(torch.bfloat16),
        torch.randn(2, 2, dtype=torch.complex64).conj(),
        torch.tensor(3.5, dtype=torch.float16),  # no dimensions
        torch.empty(0, 7),
        torch.tensor([True, False]),
        torch.arange(6).reshape(2, 3),
    ],
    ids=["float32", "transposed", "bfloat16", "conj", "scalar", "empty", "bool", "int64"],
)
def test_a_returned_tensor_crosses_as_its_bytes_unchanged(tensor: torch.Tensor) -> None:
    sent = Reply(Outcome("ok", {"t": ReturnedTensor(tensor, TensorInfo.of(tensor))}))
    received = load_reply(encode_reply(sent, GiB)).outcome.value["t"]
    assert received.info == TensorInfo.of(tensor)
    assert received.tensor.dtype == tensor.dtype and torch.equal(received.tensor, tensor.resolve_conj())


def test_numpy_values_and_containers_cross_too() -> None:
    value = {
        "a": np.arange(4.0),
        "b": [np.float32(2.0), (1, "x", None, 2.5j, float("inf"))],
        "c": SimpleNamespace(d=[3, 4]),
        "shape": torch.Size([2, 3]),
        "kind": [torch.float64, torch.device("cpu")],
    }
    received = load_reply(encode_reply(Reply(Outcome("ok", value)), GiB)).outcome.value
    assert np.array_equal(received["a"], value["a"]) and received["a"].dtype == np.float64
    assert received["b"] == value["b"] and type(received["b"][0]) is np.float32
    assert received["c"] == value["c"]
    assert type(received["shape"]) is torch.Size and received["shape"] == value["shape"]
    assert received["kind"] == value["kind"]


def test_the_outcome_crosses_with_every_field() -> None:
    sent = Reply(Outcome("forbidden", None, "no", "Traceback ...", 1.5), reusable=False)
    assert load_reply(encode_reply(sent, GiB)) == sent


@pytest.mark.parametrize(
    ("value", "refusal"),
    [
        ({1, 2}, "returned a set, which cannot be sent back to the grader"),
        ({1: "one"}, "returned a dict with a key of type int (1), which cannot be sent back to the grader: keys must"),
        ([np.array(["a"], dtype=object)], "returned a numpy array of dtype object"),
        (functools.reduce(lambda inner, _: [inner], range(100), []), "nests more than 64 levels deep"),
    ],
    ids=["set", "int key", "object array", "deep"],
)
def test_what_a_reply_cannot_carry_is_refused_by_name(value: object, refusal: str) -> None:
    with pytest.raises(Unsendable, match=re.escape(refusal)):
        check_sendable(value)


def test_a_set_of_colliding_integers_is_refused_at_once() -> None:
    # Each hashes to the same slot: building the set in the grader would take quadratic time.
    colliding = {i * (2**61 - 1) for i in range(2000)}
    started = time.perf_counter()
    with pytest.raises(Unsendable, match="returned a set"):
        check_sendable({"grads": colliding})
    assert time.perf_counter() - started < 0.1


def crafted(header: dict, *buffers: bytes) -> bytes:
    text = json.dumps(header).encode()
    return b"GCK1" + struct.pack("<Q", len(text)) + text + b"".join(buffers)


OUTCOME = {"status": "ok", "message": "", "traceback": "", "duration": 0.0, "reusable": True}


@pytest.mark.parametrize(
    ("data", "refusal"),
    [
        (pickle.dumps(Outcome("ok", 1)), "must start with the reply header"),
        (crafted({**OUTCOME, "value": {"set": [1, 2]}, "buffers": []}), "no known kind: 'set'"),
        (crafted({**OUTCOME, "value": {"exec": "print(1)"}, "buffers": []}), "no known kind: 'exec'"),
        (crafted({**OUTCOME, "status": "full marks", "value": None, "buffers": []}), "unknown status"),
        (crafted({**OUTCOME, "value": None, "buffers": [4]}, b"abc"), "does not hold the bytes its header lists"),
        (
            crafted(
                {**OUTCOME, "value": [{"tensor": [0, "float32", [2], "float32", [2], "cpu"]}] * 2, "buffers": [8]},
                bytes(8),
            ),
            "refers to a buffer it does not hold, or to one twice",
        ),
        (
            crafted(
                {**OUTCOME, "value": {"tensor": [0, "float32", [3], "float32", [3], "cpu"]}, "buffers": [8]}, bytes(8)
            ),
            "8 bytes do not make a float32 tensor of shape (3,)",
        ),
        (crafted({**OUTCOME, "value": {"array": [0, "|O8", [1]]}, "buffers": [8]}, bytes(8)), "not described as one"),
        (crafted({**OUTCOME, "value": {"dtype": "__class__"}, "buffers": []}), "a dtype that is none"),
    ],
    ids=["pickle", "set", "exec", "status", "short", "buffer twice", "bytes", "object array", "dtype"],
)
def test_a_reply_that_is_not_one_is_refused_without_running_anything(data: bytes, refusal: str) -> None:
    with pytest.raises(BadReply, match=re.escape(refusal)):
        load_reply(data)


def test_a_reply_that_would_run_code_in_the_grader_is_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    import gradcheck_kit.report as report

    path = student(
        tmp_path,
        """
        class Payload:
            def __reduce__(self):
                return (exec, ("import gradcheck_kit.report as r; r.Row.passed = property(lambda self: True)",))

        def f():
            return {"note": Payload()}
        """,
    )
    passed = report.Row.passed
    outcome = sandbox.call(path, "f")
    assert report.Row.passed is passed
    assert outcome.status == "error"
    assert outcome.message.startswith("returned a Payload, which cannot be sent back to the grader")


def test_a_reply_larger_than_the_limit_is_refused_before_it_is_sent(tmp_path: Path) -> None:
    path = student(tmp_path, "def f():\n    return torch.zeros(2**19)\n\ndef g():\n    return 1\n")
    with Sandbox(reply_limit=2**20) as box:
        outcome = box.call(path, "f")
        assert outcome.status == "error"
        assert outcome.message == "the returned value takes 2 MiB; a reply may carry at most 1 MiB"
        assert box.call(path, "g").value == 1


def test_a_worker_that_announces_a_reply_and_stalls_does_not_hold_up_the_grader(tmp_path: Path) -> None:
    # Written to every socket the worker holds, as code that found the grader's pipe would: a frame
    # of 1 MiB announced, then nothing.
    path = student(
        tmp_path,
        """
        import socket, stat, struct, time

        def f():
            for fd in range(3, 64):
                try:
                    if stat.S_ISSOCK(os.fstat(fd).st_mode):
                        os.write(fd, struct.pack("!i", 2**20))
                except OSError:
                    pass
            time.sleep(600)
        """,
    )
    started = time.monotonic()
    with Sandbox(timeout=2) as box:
        outcome = box.call(path, "f")
    assert outcome.status == "timeout"
    assert time.monotonic() - started < 30


def test_autograd_in_the_files_top_level_code_is_forbidden_too(sandbox: Sandbox, tmp_path: Path) -> None:
    path = student(
        tmp_path,
        """
        x = torch.ones(3, requires_grad=True)
        GRAD = torch.autograd.grad((x * x).sum(), x)[0]  # computed while the file is imported

        def f():
            return GRAD
        """,
    )
    outcome = sandbox.call(path, "f")
    assert outcome.status == "forbidden"
    assert "manual backward must not use autograd: torch.autograd.grad() was called" in outcome.message


# ----------------------------------------------------------------- how a worker is confined

ROOT = Path(__file__).resolve().parent.parent
SWITCHES_USER = sandbox_user() is not None
needs_own_user = pytest.mark.skipif(
    not SWITCHES_USER, reason="the worker switches to a user of its own only when the grader runs as root (CI does)"
)


def test_the_run_header_says_which_isolation_is_in_force() -> None:
    line = describe()
    if SWITCHES_USER:
        assert line.startswith(f"isolation: worker runs as uid {sandbox_user().uid} (no access to the grader's files")
    else:
        assert line.startswith("isolation: ") and line.endswith("grades are for self-checking only")


@needs_own_user
def test_the_worker_runs_as_a_user_of_its_own_without_groups_and_cannot_switch_back(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    path = student(
        tmp_path,
        """
        def who():
            try:
                os.setuid(0)
                back = True
            except PermissionError:
                back = False
            return [list(os.getresuid()), list(os.getresgid()), os.getgroups(), back]
        """,
    )
    user = sandbox_user()
    assert sandbox.call(path, "who").value == [[user.uid] * 3, [user.gid] * 3, [], False]
    assert user.uid >= 64000 and user.dedicated


@needs_own_user
def test_the_fork_server_and_the_grader_cannot_be_signalled_or_read(sandbox: Sandbox, tmp_path: Path) -> None:
    path = student(
        tmp_path,
        """
        import multiprocessing, signal

        def refused(attempt):
            try:
                attempt()
            except OSError as exc:
                return [type(exc).__name__, exc.errno]
            except Exception as exc:
                return [type(exc).__name__, str(exc)]
            return "done"

        def f():
            server, grader = os.getppid(), multiprocessing.parent_process().pid
            return [
                refused(lambda: os.kill(server, signal.SIGSTOP)),
                refused(lambda: signal.pidfd_send_signal(os.pidfd_open(server), signal.SIGSTOP)),
                refused(lambda: signal.pidfd_send_signal(os.pidfd_open(grader), signal.SIGKILL)),
                refused(lambda: torch.from_file(f"/proc/{grader}/mem", size=1, dtype=torch.uint8)),
            ]
        """,
    )
    outcome = sandbox.call(path, "f")
    assert outcome.ok, outcome.message
    by_hook, *by_kernel = outcome.value[:3]
    assert by_hook[0] == "Refused"  # the audit hook's PermissionError, before the kernel's
    assert by_kernel == [["PermissionError", errno.EPERM]] * 2
    assert "Permission denied" in outcome.value[3][1]


def test_the_worker_has_a_private_temporary_folder_removed_with_it(tmp_path: Path) -> None:
    path = student(
        tmp_path,
        """
        import tempfile

        def scratch():
            folder = tempfile.gettempdir()
            with open(os.path.join(folder, "note"), "w") as note:
                note.write("mine")
            return [folder, os.stat(folder).st_uid, oct(os.stat(folder).st_mode & 0o777)]
        """,
    )
    with Sandbox() as box:
        folder, owner, mode = box.call(path, "scratch").value
        assert Path(folder, "note").read_text() == "mine"
        assert owner == (sandbox_user().uid if SWITCHES_USER else os.getuid()) and mode == "0o700"
    assert not Path(folder).exists()


def test_sys_path_and_the_working_directory_hold_the_submission_not_the_repository(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    path = student(tmp_path, "def where():\n    return [sys.path, os.getcwd()]\n")
    search, cwd = sandbox.call(path, "where").value
    assert cwd == str(tmp_path.resolve())
    assert search[-1] == str(tmp_path.resolve()) and "" not in search
    outside = [p for p in search if p.startswith(str(ROOT)) and not p.startswith(str(ROOT / ".venv"))]
    assert outside == []


@pytest.mark.parametrize(
    ("code", "refusal"),
    [
        ("import solutions.ex2_cross_entropy", "import solutions"),
        ("from gradcheck_kit.bench import variants", "import gradcheck_kit.bench"),
        (
            f"open({str(ROOT / 'solutions' / 'ex2_cross_entropy.py')!r}).read()",
            "open {root}/solutions/ex2_cross_entropy.py",
        ),
        ("open('/etc/hostname').read()", "open /etc/hostname"),
        (f"open({str(ROOT / 'exercises' / 'conftest.py')!r}, 'a')", "write {root}/exercises/conftest.py"),
        ("import subprocess; subprocess.run(['true'])", "start a process (subprocess.Popen)"),
        ("os.system('true')", "start a process (os.system)"),
        ("import socket; socket.create_connection(('127.0.0.1', 9))", "use the network (socket.connect)"),
        ("import ctypes; ctypes.CDLL(None)", "use ctypes (ctypes.dlopen)"),
        ("import gc; gc.get_objects()", "use gc.get_objects"),
    ],
    ids=[
        "solutions",
        "package",
        "solution file",
        "other file",
        "write",
        "subprocess",
        "system",
        "network",
        "ctypes",
        "gc",
    ],
)
def test_what_graded_code_has_no_reason_to_do_is_forbidden_by_name(
    sandbox: Sandbox, tmp_path: Path, code: str, refusal: str
) -> None:
    path = student(tmp_path, f"def f():\n    {code}\n")
    outcome = sandbox.call(path, "f")
    assert outcome.status == "forbidden"
    assert outcome.message.startswith(f"gradcheck-kit: your code may not {refusal.format(root=ROOT)}")
    assert outcome.message.endswith(f"at ex2_cross_entropy.py:{line_of(path, code)}: {code}")


def test_the_submissions_own_folder_and_the_python_installation_can_be_read(sandbox: Sandbox) -> None:
    folder = Path(tempfile.mkdtemp(dir="/tmp"))  # one all may read, as a submission's folder is
    try:
        folder.chmod(0o755)
        (folder / "data.txt").write_text("42")
        (folder / "helper.py").write_text("VALUE = 7\n")
        path = student(
            folder,
            """
            import json, tempfile

            def f():
                import helper
                with open(os.path.join(tempfile.gettempdir(), "x"), "w") as scratch:
                    scratch.write("ok")
                return [helper.VALUE, json.__name__, open("data.txt").read(), open(os.devnull, "w").write("")]
            """,
        )
        outcome = sandbox.call(path, "f")
        assert outcome.value == [7, "json", "42", 0], outcome.message
    finally:
        shutil.rmtree(folder)


def test_the_limits_are_hard(sandbox: Sandbox, tmp_path: Path) -> None:
    path = student(
        tmp_path,
        """
        import resource

        def f():
            limits = {n: list(resource.getrlimit(getattr(resource, n))) for n in ("RLIMIT_AS", "RLIMIT_CORE")}
            try:
                resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            except ValueError as exc:
                limits["raised"] = str(exc)
            return limits
        """,
    )
    value = sandbox.call(path, "f").value
    assert value["RLIMIT_AS"] == [3 * GiB, 3 * GiB] and value["RLIMIT_CORE"] == [0, 0]
    assert value["raised"] == "not allowed to raise maximum limit"


@needs_own_user
def test_a_folder_the_sandboxs_user_may_not_read_is_named_when_a_call_fails(sandbox: Sandbox, tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "data.txt").write_text("42")
    path = student(private, "def f():\n    return open('data.txt').read()\n\ndef g():\n    return 1\n")
    assert sandbox.call(path, "g").value == 1  # the graded file itself is handed to the worker
    outcome = sandbox.call(path, "f")
    assert outcome.status == "error"
    assert f"(the folder {private} cannot be read by the sandbox's user (uid {sandbox_user().uid})" in outcome.message
