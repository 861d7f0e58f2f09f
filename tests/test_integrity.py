"""The integrity report: what a submission should not do is flagged from its source, honest code is not."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gradcheck_kit.autograder.integrity import FileScan, Finding, IntegrityReport, scan_file, scan_submission
from gradcheck_kit.autograder.integrity.command import main
from gradcheck_kit.autograder.integrity.rules import CATEGORIES, FORBIDDEN, SUSPICIOUS
from gradcheck_kit.autograder.integrity.scan import scan_source
from gradcheck_kit.course.catalogue import EXERCISES

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
EXERCISE_STUBS = ROOT / "exercises"
CATALOGUE = Path(__file__).resolve().parent / "catalogue"
HOSTILE = Path(__file__).resolve().parent / "hostile"


def findings(source: str, **kwargs) -> list[Finding]:
    return list(scan_source(textwrap.dedent(source), "submission.py", **kwargs).findings)


def flagged(source: str) -> set[tuple[str, int]]:
    return {(f.category, f.line) for f in findings(source)}


# One source per pattern: the category it must be flagged with, and on which line.
PATTERNS = {
    "torch._C": ("import torch\nstate = torch._C._get_tracing_state()", "private-api", 2),
    "torch._decomp": ("from torch._decomp import decomposition_table", "private-api", 1),
    "torch._ops": ("import torch\nop = torch._ops.ops.aten.tanh_backward", "private-api", 2),
    "torch.library": ("import torch\nlib = torch.library.Library('aten', 'IMPL')", "private-api", 2),
    "torch.ops": ("import torch\ndx = torch.ops.aten.tanh_backward(dy, y)", "private-api", 2),
    "_execution_engine": ("def f(v):\n    return v._execution_engine.run_backward", "graph-walk", 2),
    ".grad_fn": ("def f(loss):\n    return loss.grad_fn", "graph-walk", 2),
    "next_functions": ("def f(fn):\n    return fn.next_functions[0][0]", "graph-walk", 2),
    "_DisableTorchDispatch": ("import torch\nwith torch._C._DisableTorchDispatch():\n    pass", "dispatch", 2),
    "_ExcludeDispatchKeyGuard": (
        "import torch\ng = torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.CPU))",
        "dispatch",
        2,
    ),
    "DispatchKeySet": ("from torch._C import DispatchKeySet\nkeys = DispatchKeySet()", "dispatch", 2),
    "_op_dk": ("def f(op, key):\n    return op._op_dk(key)", "dispatch", 2),
    "__torch_function__": (
        "class Spy:\n    @classmethod\n    def __torch_function__(cls, func, types, args=(), kwargs=None):\n"
        "        return func(*args)",
        "dispatch",
        3,
    ),
    "torch.autograd": ("import torch\n\ndef f(y, x):\n    return torch.autograd.grad(y, x)", "autograd", 4),
    "torch.func": ("from torch.func import vjp\nout, pullback = vjp(f, x)", "autograd", 2),
    "functorch": ("import functorch", "autograd", 1),
    "torch.enable_grad": ("import torch\nwith torch.enable_grad():\n    pass", "autograd", 2),
    ".backward()": ("def f(loss):\n    loss.backward()", "autograd", 2),
    ".backward(gradient=)": ("def f(out, dout):\n    out.backward(gradient=dout)", "autograd", 2),
    ".backward(g, retain_graph=)": ("def f(out, dout):\n    out.backward(dout, retain_graph=True)", "autograd", 2),
    "requires_grad=True": ("import torch\nw = torch.randn(3, requires_grad=True)", "autograd", 2),
    ".grad": ("def f(x):\n    return x.grad", "autograd", 2),
    "requires_grad = True": ("def f(x):\n    x.requires_grad = True", "autograd", 2),
    "threading": ("import threading\nthreading.Thread(target=print).start()", "threads", 2),
    "concurrent.futures": ("from concurrent.futures import ThreadPoolExecutor", "threads", 1),
    "_thread": ("import _thread\n_thread.start_new_thread(print, ())", "threads", 2),
    "subprocess": ("import subprocess\nsubprocess.run(['ls'])", "process", 2),
    "os.system": ("import os\nos.system('ls')", "process", 2),
    "os.fork": ("import os\npid = os.fork()", "process", 2),
    "os.execv": ("import os\nos.execv('/bin/sh', ['sh'])", "process", 2),
    "os.spawnlp": ("import os\nos.spawnlp(os.P_NOWAIT, 'sh', 'sh')", "process", 2),
    "os.popen": ("import os\nout = os.popen('ls').read()", "process", 2),
    "multiprocessing": ("import multiprocessing\nmultiprocessing.Process(target=print).start()", "process", 2),
    "pty": ("import pty\npty.spawn('sh')", "process", 2),
    "ctypes": ("import ctypes\nlibc = ctypes.CDLL(None)", "native-code", 2),
    "cffi": ("from cffi import FFI", "native-code", 1),
    "os.kill": ("import os\nos.kill(os.getppid(), 9)", "signals", 2),
    "signal": ("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)", "signals", 2),
    "sys.exit": ("import sys\n\ndef f():\n    sys.exit(0)", "exit", 4),
    "os._exit": ("import os\nos._exit(0)", "exit", 2),
    "raise SystemExit": ("def f():\n    raise SystemExit(0)", "exit", 2),
    "open absolute": ("answers = open('/srv/answers.txt').read()", "filesystem", 1),
    "open ..": ("source = open('../solutions/ex2_cross_entropy.py').read()", "filesystem", 1),
    "open joined ..": ("import os\nf = open(os.path.join(here, '..', 'solutions', 'ex2.py'))", "filesystem", 2),
    "results.json": ("path = 'results/results.json'", "filesystem", 1),
    "/proc": ("maps = '/proc/self/maps'", "introspection", 1),
    "/proc in an f-string": ("mem = f'/proc/{pid}/mem'", "introspection", 1),
    "os.environ": ("import os\nhome = os.environ['HOME']", "introspection", 2),
    "os.getenv": ("import os\nhome = os.getenv('HOME')", "introspection", 2),
    "sys.modules": ("import sys\nag = sys.modules['torch'].autograd", "introspection", 2),
    "importlib": ("import importlib", "introspection", 1),
    "__import__": ("m = __import__('math')", "introspection", 1),
    "builtins": ("import builtins", "introspection", 1),
    "__builtins__": ("e = __builtins__['eval']", "introspection", 1),
    "sys.settrace": ("import sys\nsys.settrace(lambda *a: None)", "introspection", 2),
    "sys.setprofile": ("import sys\nsys.setprofile(lambda *a: None)", "introspection", 2),
    "gc.get_objects": ("import gc\nlive = gc.get_objects()", "introspection", 2),
    "inspect.stack": ("import inspect\ncaller = inspect.stack()[1]", "introspection", 2),
    "sys._getframe": ("import sys\nframe = sys._getframe(1)", "introspection", 2),
    "f_back": ("def f(frame):\n    return frame.f_back.f_locals", "introspection", 2),
    "getattr with a computed name": ("import torch\nthing = getattr(torch, name)", "introspection", 2),
    "pickle": ("import pickle\nanswers = pickle.load(f)", "dynamic-code", 2),
    "marshal": ("import marshal", "dynamic-code", 1),
    "exec": ("exec('dx = 1')", "dynamic-code", 1),
    "eval": ("dx = eval('1 + 1')", "dynamic-code", 1),
    "compile": ("code = compile('1', 'x', 'eval')", "dynamic-code", 1),
    "gradcheck_kit": ("from gradcheck_kit.comparison import compare", "grader-import", 1),
    "solutions": ("from solutions.ex2_cross_entropy import cross_entropy_backward", "grader-import", 1),
    "socket": ("import socket\ns = socket.socket()", "network", 1),
    "urllib": ("from urllib.request import urlopen", "network", 1),
    "requests": ("import requests\nr = requests.get(url)", "network", 2),
    "monkeypatching torch": ("import torch\ntorch.autograd.grad = None", "monkeypatch", 2),
    "setattr on a module": ("import torch\nsetattr(torch, 'tanh', None)", "monkeypatch", 2),
    "while True": ("def f():\n    while True:\n        pass", "endless-loop", 2),
    "a loop that does nothing": ("def f(self):\n    while not self.ready:\n        pass", "endless-loop", 2),
    "an import the course does not use": ("import torch_backprop_answers", "unknown-import", 1),
}


@pytest.mark.parametrize(("source", "category", "line"), list(PATTERNS.values()), ids=list(PATTERNS))
def test_each_pattern_is_flagged_with_its_category_on_its_line(source, category, line):
    assert (category, line) in flagged(source)


CENTRAL_DIFFERENCE = """\
import torch


def grad(f, x, eps=1e-4):
    x = x.to(torch.float64)
    g = torch.zeros_like(x)
    for i in range(x.numel()):
        old = x.view(-1)[i].item()
        x.view(-1)[i] = old + eps
        plus = f(x)
        x.view(-1)[i] = old - eps
        minus = f(x)
        x.view(-1)[i] = old
        g.view(-1)[i] = (plus - minus) / (2 * eps)
    return g
"""


def test_a_central_difference_is_flagged_at_each_nudge_its_quotient_and_its_float64_cast():
    found = {(f.line, f.category) for f in findings(CENTRAL_DIFFERENCE)}
    assert found == {(line, "numerical-diff") for line in (5, 9, 11, 14)}


@pytest.mark.parametrize(
    "source",
    [
        "def g(f, x):\n    eps = 1e-5\n    return (f(x + eps) - f(x - eps)) / (2 * eps)",
        "h = 1e-3\ndef g(f, x):\n    return (f(x + h) - f(x)) / h",
        "import torch\nd = torch.finfo(torch.float32).eps ** 0.5\ndef g(f, x):\n    return (f(x + d) - f(x)) / d",
        "def g(f, x):\n    return (f(x + 1e-4) - f(x)) * (1 / 1e-4)",
        "def g(f, x, step=1e-3):\n    diff = f(x + step) - f(x)\n    diff /= step\n    return diff",
        "import torch\ndef g(f, x):\n    return torch.div(f(x + 1e-4) - f(x), 1e-4)",
    ],
    ids=["central", "forward, named h", "finfo eps", "times 1/eps", "divided in place", "torch.div"],
)
def test_a_difference_divided_by_a_small_step_is_numerical_differentiation(source):
    assert "numerical-diff" in {f.category for f in findings(source)}


# Names reached through aliases, attribute lookups and imports by string: resolved to what they stand for.
ALIASES = {
    "import torch._C as C": ("import torch._C as C\nC._get_tracing_state()", "private-api", 2),
    "from torch import _C": ("from torch import _C\n_C._set_grad_enabled(True)", "private-api", 2),
    "import torch as t": ("import torch as t\nt.autograd.functional.jacobian(f, x)", "autograd", 2),
    "import torch.autograd as ag": ("import torch.autograd as ag\nag.functional.vjp(f, x)", "autograd", 2),
    "from torch import autograd": ("from torch import autograd\nautograd.functional.hvp(f, x, v)", "autograd", 2),
    "assigned": ("import torch\nag = torch.autograd\nag.functional.vjp(f, x)", "autograd", 3),
    "import subprocess as sp": ("import subprocess as sp\nsp.run(['ls'])", "process", 2),
    "from os import system as run": ("from os import system as run\nrun('ls')", "process", 2),
    "from os import *": ("from os import *\nsystem('ls')", "process", 2),
    "getattr(torch, '_C')": ("import torch\nC = getattr(torch, '_C')\nC._x()", "private-api", 2),
    "getattr through a name": ("import torch\nC = getattr(torch, '_C')\nC._x()", "private-api", 3),
    "getattr of a folded string": ("import torch\nC = getattr(torch, '_' + 'C')", "private-api", 2),
    "getattr of a string variable": (
        "import torch\nname = 'autograd'\ngetattr(torch, name).functional.vjp(f, x)",
        "autograd",
        3,
    ),
    "getattr(x, 'grad_fn')": ("def f(loss):\n    return getattr(loss, 'grad_fn')", "graph-walk", 2),
    "__import__('subprocess')": ("m = __import__('subprocess')\nm.run(['ls'])", "process", 2),
    "__import__ in place": ("__import__('subprocess').run(['ls'])", "process", 1),
    "importlib.import_module": (
        "import importlib\nsp = importlib.import_module('sub' + 'process')\nsp.Popen(['ls'])",
        "process",
        3,
    ),
    "sys.modules[...]": ("import sys\nsys.modules['subprocess'].run(['ls'])", "process", 2),
    "vars(torch)[...]": ("import torch\nC = vars(torch)['_C']", "private-api", 2),
    "torch.__dict__[...]": ("import torch\nC = torch.__dict__['_C']", "private-api", 2),
    "tuple assignment": ("import os, subprocess\nrun, sp = os.system, subprocess\nsp.call('ls')", "process", 3),
    "torch.Tensor.backward": ("import torch\ntorch.Tensor.backward(loss)", "autograd", 2),
}


@pytest.mark.parametrize(("source", "category", "line"), list(ALIASES.values()), ids=list(ALIASES))
def test_aliases_are_resolved_to_the_name_they_stand_for(source, category, line):
    assert (category, line) in flagged(source)


HONEST = {
    "a layer's own backward": "def step(layers, dx):\n    for layer in reversed(layers):\n"
    "        dx = layer.backward(dx)\n    return dx",
    "no_grad": "import torch\nwith torch.no_grad():\n    pass",
    "set_grad_enabled(False)": "import torch\nwith torch.set_grad_enabled(False):\n    pass",
    "batchnorm's epsilon": "def f(x, m, v, eps=1e-5):\n    return (x - m) / (v + eps) ** 0.5",
    "divided by a std plus epsilon": "def f(x, s):\n    return (x - x.mean()) / (s + 1e-5)",
    "float64 and cast back": "def f(d):\n    return (d.double() * 2).to(d.dtype)",
    "Bessel's correction": "def f(n, x):\n    return 1.0 / (n - 1) * x",
    "a scatter-add loop": "def f(dC, Xb, demb):\n    for k in range(Xb.shape[0]):\n"
    "        for j in range(Xb.shape[1]):\n            dC[Xb[k, j]] += demb[k, j]",
    "an update with a small learning rate": "lr = 1e-3\ndef f(params, grads):\n"
    "    for p, g in zip(params, grads):\n        p -= lr * g",
    "a loop that moves on": "def f(n):\n    i = 0\n    while i < n:\n        i += 1",
    "while True with a break": "def f(it):\n    while True:\n        if next(it) is None:\n            break",
    "a relative file": "names = open('names.txt').read()",
    "a constant getattr": "def f(layer):\n    return getattr(layer, 'running_mean', None)",
    "a computed getattr on an object": "def grads(self, names):\n    return [getattr(self, 'd' + n) for n in names]",
    "re.compile": "import re\nPATTERN = re.compile('x+')",
    "a model's eval()": "def f(model):\n    model.eval()",
    "requires_grad_(False)": "def f(x):\n    return x.requires_grad_(False)",
    "requires_grad = False": "def f(x):\n    x.requires_grad = False",
    "a torch setting": "import torch\ntorch.backends.cuda.matmul.allow_tf32 = False",
    "the docstring": '"""Do not call backward() or torch.autograd, or read /proc, or open ../solutions."""',
    "a local module": "from helpers import softmax",
}


@pytest.mark.parametrize("source", list(HONEST.values()), ids=list(HONEST))
def test_honest_code_that_looks_close_is_not_flagged(source):
    assert findings(source, local_modules={"helpers"}) == []


@pytest.mark.parametrize("path", sorted(SOLUTIONS.glob("ex*.py")), ids=lambda p: p.name)
def test_no_reference_solution_is_flagged(path):
    assert scan_file(path) == []


@pytest.mark.parametrize("path", sorted(EXERCISE_STUBS.glob("ex*.py")), ids=lambda p: p.name)
def test_no_untouched_exercise_stub_is_flagged(path):
    assert scan_file(path) == []


def test_a_kernel_file_may_import_triton_and_read_its_settings_but_no_other_variable():
    kernel = """\
    import os
    import triton
    import triton.language as tl

    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    cache = os.environ["TRITON_CACHE_DIR"]
    home = os.environ.get("HOME")
    """
    assert [(f.category, f.line) for f in findings(kernel)] == [("introspection", 7)]


# Catalogue cases that take a shortcut, and how: every other case, right or wrong, is honest.
CHEATING_CASES = {
    "ex2_uses_autograd_grad": {"autograd"},
    "ex3_calls_loss_backward": {"autograd"},
    "ex5_tanh_forward_uses_autograd": {"autograd"},
    "ex5_patches_the_grader": {"grader-import", "monkeypatch"},
    "ex5_linear_backward_exits": {"exit"},
    "ex5_batchnorm_eval_backward_hangs": {"endless-loop"},
}


@pytest.mark.parametrize("case", sorted(p.name for p in CATALOGUE.iterdir() if p.is_dir()))
def test_catalogue_cases_are_flagged_only_when_they_take_a_shortcut(case):
    report = scan_submission(CATALOGUE / case, files=[p.name for p in (CATALOGUE / case).glob("ex*.py")])
    # A new case that takes a shortcut belongs in CHEATING_CASES.
    assert set(report.by_category) == CHEATING_CASES.get(case, set()), report.to_text()


def test_every_cheating_case_is_still_in_the_catalogue():
    assert all((CATALOGUE / case).is_dir() for case in CHEATING_CASES)


HOSTILE_FILES = {
    "mixed/ex2_cross_entropy.py": {"endless-loop"},
    "mixed/ex3_batchnorm.py": {"exit"},
    "mixed/ex4_embedding.py": {"syntax-error"},
    "kills_grader/ex2_cross_entropy.py": {"unknown-import"},
    "kills_grader/ex3_batchnorm.py": {"exit"},
    "kills_grader/ex4_embedding.py": {"process", "signals"},
    "forges_results/ex2_cross_entropy.py": {"filesystem", "introspection", "process", "signals"},
    "outlives_its_check/ex2_cross_entropy.py": {"exit", "filesystem", "introspection", "process", "unknown-import"},
    "plants_files/ex2_cross_entropy.py": {"filesystem", "grader-import", "introspection", "process", "unknown-import"},
    "reads_references/ex2_cross_entropy.py": {"dynamic-code", "filesystem", "grader-import", "introspection"},
    "reads_references/ex3_batchnorm.py": {"dynamic-code", "grader-import", "introspection"},
    "exhausts_resources/ex2_cross_entropy.py": set(),  # nothing to see in the source: the sandbox stops it
    "exhausts_resources/ex3_batchnorm.py": {"process"},
    "exhausts_resources/ex4_embedding.py": set(),
    "stops_fork_server/ex2_cross_entropy.py": {"process", "signals"},
}


def test_every_hostile_submission_file_is_listed_here():
    assert sorted(str(p.relative_to(HOSTILE)) for p in HOSTILE.glob("*/ex*.py")) == sorted(HOSTILE_FILES)


@pytest.mark.parametrize(("file", "categories"), list(HOSTILE_FILES.items()), ids=list(HOSTILE_FILES))
def test_every_hostile_submission_file_is_flagged(file, categories):
    assert {f.category for f in scan_file(HOSTILE / file)} == categories


def test_a_file_that_does_not_parse_is_one_finding_at_its_syntax_error():
    (finding,) = scan_file(HOSTILE / "mixed" / "ex4_embedding.py")
    assert (finding.line, finding.category, finding.severity) == (6, "syntax-error", SUSPICIOUS)
    assert finding.code == "def embedding_backward(demb, Xb, vocab_size)"
    assert "expected ':'" in finding.what


@pytest.mark.parametrize(
    "source",
    [b"x = 1\x00\n", b"# -*- coding: no-such-codec -*-\nx = 1\n", b"x = \xff\xfe\n", b"x = " + b"(" * 500 + b")" * 500],
    ids=["null byte", "unknown encoding", "not utf-8", "nested too deeply"],
)
def test_source_python_cannot_parse_is_a_syntax_error_finding_not_a_crash(source):
    (finding,) = scan_source(source, "bad.py").findings
    assert finding.category == "syntax-error"


def test_an_expression_too_deep_to_scan_is_reported_and_the_rest_of_the_file_still_scanned():
    # Deep enough for the scan's recursion, not for Python's parser.
    source = "x = a" + ".b" * 1500 + "\nimport os\nos.system('ls')\n"
    found = scan_source(source, "deep.py").findings
    assert [(f.line, f.category) for f in found] == [(1, "unscannable"), (3, "process")]


def test_scanning_runs_none_of_the_submission(tmp_path):
    marker = tmp_path / "marker"
    source = f"import os\nopen({str(marker)!r}, 'w').write('ran')\nos.system('touch {marker}')\n"
    (tmp_path / "ex2_cross_entropy.py").write_text(source)
    report = scan_submission(tmp_path)
    assert not marker.exists()
    assert {("filesystem", 2), ("process", 3)} <= {(f.category, f.line) for f in report.findings}


def test_a_finding_says_where_with_the_code_of_its_line_and_a_column_in_characters():
    (finding,) = findings("s = 'é'; import subprocess\n")
    assert (finding.file, finding.line, finding.column) == ("submission.py", 1, 10)
    assert finding.code == "s = 'é'; import subprocess"
    assert finding.where == "submission.py:1"
    assert finding.what.startswith("import subprocess: ")


def test_one_line_gives_one_finding_per_category_the_most_serious():
    found = findings("def f(x):\n    x.requires_grad_(); x.sum().backward()\n")
    assert [(f.category, f.severity) for f in found] == [("autograd", FORBIDDEN)]


def test_every_rule_has_a_described_category():
    from gradcheck_kit.autograder.integrity.rules import ATTRIBUTE_RULES, PATH_RULES

    assert {rule.category for rule in (*PATH_RULES.values(), *ATTRIBUTE_RULES.values())} <= set(CATEGORIES)
    assert {rule.severity for rule in (*PATH_RULES.values(), *ATTRIBUTE_RULES.values())} == {FORBIDDEN, SUSPICIOUS}


# -- the submission report -----------------------------------------------------------------


def test_a_submission_is_scanned_as_the_catalogue_names_its_files(tmp_path):
    (tmp_path / "ex2_cross_entropy.py").write_text("import torch\n")
    report = scan_submission(tmp_path)
    assert [scan.file for scan in report.files] == ["ex2_cross_entropy.py"]
    assert set(report.missing) == {e.file for e in EXERCISES.values()} - {"ex2_cross_entropy.py"}


def test_a_module_of_the_submission_an_exercise_imports_is_scanned_too(tmp_path):
    (tmp_path / "ex2_cross_entropy.py").write_text("from helpers import dlogits\n")
    (tmp_path / "helpers.py").write_text(
        "import torch\n\ndef dlogits(loss, x):\n    return torch.autograd.grad(loss, x)\n"
    )
    (tmp_path / "unused.py").write_text("import subprocess\n")
    report = scan_submission(tmp_path, files=["ex2_cross_entropy.py"])
    assert [(scan.file, scan.reason) for scan in report.files] == [
        ("ex2_cross_entropy.py", "exercise"),
        ("helpers.py", "imported"),
    ]
    assert [(f.file, f.line, f.category) for f in report.findings] == [("helpers.py", 4, "autograd")]


def test_a_conftest_or_a_module_shadowing_torch_in_the_folder_is_flagged(tmp_path):
    (tmp_path / "ex2_cross_entropy.py").write_text("import torch\n")
    (tmp_path / "conftest.py").write_text("import gradcheck_kit\n")
    (tmp_path / "torch.py").write_text("")
    report = scan_submission(tmp_path, files=["ex2_cross_entropy.py"])
    assert {(f.file, f.category, f.severity) for f in report.findings} == {
        ("conftest.py", "planted-file", FORBIDDEN),
        ("conftest.py", "grader-import", FORBIDDEN),
        ("torch.py", "planted-file", SUSPICIOUS),
    }


def finding(file: str, category: str, severity) -> Finding:
    return Finding(file, 1, 1, "", category, severity, "why")


def test_the_summary_counts_findings_files_and_severities():
    report = IntegrityReport(
        "sub",
        (
            FileScan("ex2.py", (finding("ex2.py", "autograd", FORBIDDEN), finding("ex2.py", "exit", SUSPICIOUS))),
            FileScan("ex3.py", (finding("ex3.py", "exit", SUSPICIOUS),)),
            FileScan("ex4.py", ()),
        ),
    )
    assert report.summary() == "integrity: 3 findings in 2 files (1 forbidden-api, 2 suspicious)"
    assert report.by_category == {"exit": 2, "autograd": 1}
    assert report.flagged_files == ("ex2.py", "ex3.py")


def test_a_single_finding_is_not_written_as_a_plural():
    report = IntegrityReport("sub", (FileScan("ex2.py", (finding("ex2.py", "exit", SUSPICIOUS),)),))
    assert report.summary() == "integrity: 1 finding in 1 file (1 suspicious)"


def test_a_clean_submission_says_nothing_flagged():
    report = scan_submission(SOLUTIONS)
    assert report.to_text() == "integrity: nothing flagged"
    assert len(report.files) == len(EXERCISES)


def test_the_text_is_a_table_of_file_line_category_and_what_then_the_summary():
    lines = scan_submission(HOSTILE / "kills_grader").to_text().splitlines()
    assert lines[0].split() == ["where", "severity", "category", "what"]
    assert lines[2].startswith("ex2_cross_entropy.py:3 ")
    assert "unknown-import" in lines[2]
    assert lines[-1] == "integrity: 6 findings in 3 files (5 forbidden-api, 1 suspicious)"


def test_the_report_is_plain_data_for_json_with_every_finding_by_file():
    report = scan_submission(HOSTILE / "mixed")
    data = json.loads(json.dumps(report.as_dict()))
    assert data["summary"] == report.summary()
    assert data["by_severity"] == {"forbidden-api": 1, "suspicious": 2}
    assert data["by_category"] == {"endless-loop": 1, "exit": 1, "syntax-error": 1}
    assert "ex1_chunked_backward.py" in data["missing"]
    ex3 = next(scan for scan in data["files"] if scan["file"] == "ex3_batchnorm.py")
    assert ex3["findings"] == [
        {
            "file": "ex3_batchnorm.py",
            "line": 7,
            "column": 5,
            "code": "os._exit(0)",
            "category": "exit",
            "severity": "forbidden-api",
            "what": "os._exit: ends the process instead of returning",
        }
    ]


def test_findings_and_reports_are_frozen():
    report = scan_submission(HOSTILE / "mixed")
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.findings[0].line = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.folder = "x"  # type: ignore[misc]


def test_the_command_prints_the_report_of_a_folder(capsys):
    assert main([str(HOSTILE / "kills_grader")]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("integrity: 6 findings in 3 files")
    assert main([str(HOSTILE / "mixed"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["by_severity"] == {"forbidden-api": 1, "suspicious": 2}


def test_the_command_refuses_a_folder_that_does_not_exist(tmp_path, capsys):
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_gradcheck_kit_integrity_is_the_same_command(capsys):
    from gradcheck_kit.cli import main as cli_main

    assert cli_main(["integrity", str(HOSTILE / "mixed")]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("integrity: 3 findings in 3 files")


def test_the_module_runs_as_a_command_without_importing_torch():
    program = (
        "import runpy, sys\n"
        "sys.argv = ['integrity', sys.argv[1]]\n"
        "try:\n    runpy.run_module('gradcheck_kit.autograder.integrity', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program, str(HOSTILE / "kills_grader")], capture_output=True, text=True, check=True
    )
    assert "integrity: 6 findings in 3 files" in result.stdout
    assert result.stdout.splitlines()[-1] == "torch imported: False"
