"""What the integrity scan flags, as data: the dotted names and attributes a submission has no honest use for.

A rule says which category a use falls in, how serious it is and why. The scan
resolves every name to the dotted path it stands for (``sp.run`` after ``import
subprocess as sp`` is ``subprocess.run``) and asks :func:`rule_for_path`; a few
attribute names are flagged on any object, because what they reach (autograd's
graph, stack frames) is the same whatever the object is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ATTRIBUTE_RULES",
    "CATEGORIES",
    "FORBIDDEN",
    "KNOWN_MODULES",
    "PATH_RULES",
    "PLANTED_FILES",
    "SUSPICIOUS",
    "TOOLCHAIN_SETTINGS",
    "Rule",
    "Severity",
    "rule_for_attribute",
    "rule_for_path",
]

Severity = Literal["forbidden-api", "suspicious"]
#: No honest submission uses it: the instructor should read the code.
FORBIDDEN: Severity = "forbidden-api"
#: It has honest uses, or is harmless on its own: worth a look next to the grade.
SUSPICIOUS: Severity = "suspicious"

#: Every category a finding can have, with what it covers.
CATEGORIES: Mapping[str, str] = {
    "private-api": "torch internals (torch._C, torch._decomp, torch._ops, torch.library, torch.ops)",
    "dispatch": "dispatch-key guards and __torch_function__/__torch_dispatch__ overrides",
    "autograd": "autograd, torch.func and functorch, .backward(), tensors that require grad",
    "graph-walk": "autograd's graph read directly: grad_fn, next_functions, saved tensors, hooks",
    "threads": "threads, which run outside the guarded call",
    "process": "other processes: subprocess, fork, exec, spawn, multiprocessing, pty, the parent's pid",
    "signals": "signals sent or handled: os.kill, signal",
    "exit": "ending the process: sys.exit, os._exit, os.abort, SystemExit",
    "native-code": "native code: ctypes, cffi, C++ extensions",
    "filesystem": "files outside the submission: absolute paths, '..', the grader's results",
    "introspection": "the interpreter reached into: environment, sys.modules, importlib, builtins, tracing, frames",
    "dynamic-code": "code run from data: exec, eval, compile, pickle, marshal",
    "monkeypatch": "a module's attributes replaced in the running process",
    "grader-import": "the grader or the reference solutions imported",
    "network": "the network: socket, urllib, requests, http",
    "numerical-diff": "finite differences: a difference divided by a small epsilon, inputs nudged in a loop",
    "endless-loop": "a loop with no way out but the time limit",
    "unknown-import": "a module the course does not use and the scan does not cover",
    "planted-file": "a file in the folder that Python or pytest loads on its own (conftest.py, *.pth)",
    "syntax-error": "a file that does not parse: nothing in it was scanned",
    "unscannable": "a file that could not be read or scanned to the end",
}


@dataclass(frozen=True)
class Rule:
    """Why a use is flagged: its category, its severity, and a short reason shown after the name."""

    category: str
    severity: Severity
    why: str


def _rules(category: str, severity: Severity, why: str, *names: str) -> dict[str, Rule]:
    rule = Rule(category, severity, why)
    return dict.fromkeys(names, rule)


#: Dotted paths, matched on the path itself or any prefix of it (``torch.autograd`` covers ``torch.autograd.grad``).
PATH_RULES: Mapping[str, Rule] = {
    **_rules(
        "private-api",
        FORBIDDEN,
        "torch internals reach below the guard",
        *("torch._C", "torch._decomp", "torch._ops", "torch._dynamo", "torch._prims", "torch._refs"),
        *("torch._functorch", "torch._subclasses", "torch._higher_order_ops"),
    ),
    **_rules(
        "private-api",
        FORBIDDEN,
        "calls or registers aten operators directly",
        *("torch.library", "torch.ops", "torch.classes"),
    ),
    **_rules(
        "dispatch",
        FORBIDDEN,
        "overrides how torch dispatches operators",
        *("torch.overrides", "torch.utils._python_dispatch", "torch.utils._mode_utils"),
    ),
    **_rules(
        "autograd",
        FORBIDDEN,
        "asks autograd for a gradient instead of deriving it",
        *("torch.autograd", "torch.func", "functorch", "torch.Tensor.backward", "torch.utils.checkpoint"),
    ),
    **_rules(
        "autograd",
        FORBIDDEN,
        "switches autograd back on inside the grader",
        *("torch.enable_grad", "torch.set_grad_enabled"),
    ),
    **_rules(
        "autograd",
        SUSPICIOUS,
        "a parameter requires grad: only useful with autograd",
        *("torch.nn.Parameter", "torch.nn.parameter"),
    ),
    **_rules(
        "threads",
        FORBIDDEN,
        "runs code in another thread, outside the guarded call",
        *("threading", "_thread", "concurrent"),
    ),
    **_rules("threads", SUSPICIOUS, "runs an event loop, which may start threads or processes", "asyncio"),
    **_rules(
        "process",
        FORBIDDEN,
        "starts another process, where no guard runs",
        *("subprocess", "_posixsubprocess", "multiprocessing", "torch.multiprocessing", "pty", "runpy"),
        *("os.system", "os.popen", "os.fork", "os.forkpty", "os.startfile"),
        *("asyncio.create_subprocess_exec", "asyncio.create_subprocess_shell"),
    ),
    **_rules(
        "process",
        SUSPICIOUS,
        "looks up or changes the processes it runs in",
        *("os.getppid", "os.getpid", "os.getpgid", "os.nice", "resource", "atexit", "faulthandler"),
    ),
    **_rules(
        "signals",
        FORBIDDEN,
        "sends or handles signals, e.g. to kill the grader",
        *("signal", "os.kill", "os.killpg", "os.pidfd_open"),
    ),
    **_rules(
        "exit",
        FORBIDDEN,
        "ends the process instead of returning",
        *("sys.exit", "os._exit", "os.abort", "builtins.exit", "builtins.quit", "builtins.SystemExit"),
    ),
    **_rules(
        "native-code",
        FORBIDDEN,
        "runs native code, out of reach of any Python-level guard",
        *("ctypes", "_ctypes", "cffi", "cppyy", "torch.utils.cpp_extension", "torch.cuda.jiterator"),
    ),
    **_rules(
        "filesystem",
        SUSPICIOUS,
        "lists, moves or deletes files",
        *("os.listdir", "os.scandir", "os.walk", "os.remove", "os.unlink", "os.rmdir", "os.rename", "os.replace"),
        *("os.chdir", "os.chmod", "os.symlink", "os.link", "os.truncate", "shutil", "glob"),
    ),
    **_rules("filesystem", SUSPICIOUS, "writes a file", "torch.save", "numpy.save", "numpy.savez"),
    **_rules(
        "introspection",
        FORBIDDEN,
        "reaches into the interpreter the grader runs in",
        *("sys.modules", "sys.meta_path", "sys.path_hooks", "sys.path_importer_cache", "sys.addaudithook"),
        *("importlib", "builtins.__import__", "builtins", "__builtin__"),
        *("builtins.globals", "builtins.vars", "builtins.breakpoint", "pdb", "bdb"),
    ),
    **_rules(
        "introspection",
        FORBIDDEN,
        "traces or walks the call stack, the grader's frames included",
        *("sys.settrace", "sys.setprofile", "sys._getframe", "sys._current_frames", "sys.monitoring"),
        *("sys.call_tracing", "inspect.stack", "inspect.currentframe", "inspect.getouterframes"),
        *("inspect.getinnerframes", "inspect.trace", "traceback.walk_stack", "traceback.extract_stack"),
    ),
    **_rules(
        "introspection",
        FORBIDDEN,
        "finds live objects (the grader's reference tensors among them)",
        *("gc.get_objects", "gc.get_referrers", "gc.get_referents"),
    ),
    **_rules(
        "introspection",
        SUSPICIOUS,
        "reads or changes the environment",
        *("os.environ", "os.environb", "os.getenv", "os.putenv", "os.unsetenv"),
    ),
    **_rules("introspection", SUSPICIOUS, "changes where imports are found", "sys.path"),
    **_rules(
        "dynamic-code",
        FORBIDDEN,
        "runs code the scan cannot see",
        *("builtins.exec", "builtins.eval", "builtins.compile", "code", "codeop", "types.CodeType"),
        *("types.FunctionType", "types.LambdaType"),
    ),
    **_rules(
        "dynamic-code",
        FORBIDDEN,
        "unpickles data, which can run any code",
        *("pickle", "_pickle", "cPickle", "marshal", "dill", "cloudpickle", "shelve", "copyreg"),
    ),
    **_rules("dynamic-code", SUSPICIOUS, "loads a pickled file", "torch.load", "numpy.load", "joblib"),
    **_rules(
        "grader-import",
        FORBIDDEN,
        "the grader's code or the reference answers",
        *("gradcheck_kit", "solutions", "exercises", "conftest", "_pytest"),
    ),
    **_rules("grader-import", SUSPICIOUS, "imports the test runner the grader runs in", "pytest", "hypothesis"),
    **_rules(
        "network",
        FORBIDDEN,
        "uses the network",
        *("socket", "socketserver", "ssl", "urllib", "urllib3", "requests", "http", "httpx", "aiohttp"),
        *("ftplib", "smtplib", "telnetlib", "xmlrpc", "websocket", "websockets", "torch.hub"),
        *("torch.distributed",),
    ),
}

#: Attribute names flagged on any object: ``loss.grad_fn`` needs no resolved path to be a walk of autograd's graph.
ATTRIBUTE_RULES: Mapping[str, Rule] = {
    **_rules(
        "graph-walk",
        FORBIDDEN,
        "walks autograd's graph",
        *("grad_fn", "_grad_fn", "next_functions", "saved_tensors", "saved_variables", "register_hook"),
        *("register_post_accumulate_grad_hook", "_backward_hooks", "_execution_engine", "run_backward"),
        *("_run_backward", "register_prehook"),
    ),
    **_rules(
        "dispatch",
        FORBIDDEN,
        "turns dispatch keys on or off, around the guard",
        *("_DisableTorchDispatch", "_ExcludeDispatchKeyGuard", "_IncludeDispatchKeyGuard", "DispatchKeySet"),
        *("DispatchKey", "_op_dk", "_DisableFuncTorch", "_AutoDispatchBelowAutograd", "_DisableAutocast"),
        *("__torch_dispatch__", "__torch_function__", "TorchDispatchMode", "TorchFunctionMode"),
        *("_disabled_torch_function_impl", "_disabled_torch_dispatch_impl"),
    ),
    **_rules(
        "introspection",
        FORBIDDEN,
        "walks the call stack to the grader's frames",
        *("f_back", "f_globals", "f_locals", "f_builtins", "tb_frame", "gi_frame", "cr_frame", "ag_frame"),
    ),
    **_rules(
        "introspection",
        SUSPICIOUS,
        "reaches into interpreter internals",
        *("__globals__", "__builtins__", "__subclasses__", "__code__", "__closure__", "__dict__", "__mro__"),
        *("__bases__", "__getattribute__", "__import__", "__loader__", "__spec__"),
    ),
}

# Name prefixes of the same kind: autograd's saved tensors and the dispatcher's switches.
_ATTRIBUTE_PREFIXES: tuple[tuple[str, Rule], ...] = (
    ("_saved_", ATTRIBUTE_RULES["saved_tensors"]),
    ("_dispatch_", ATTRIBUTE_RULES["DispatchKeySet"]),
)
_PROCESS = PATH_RULES["subprocess"]
_WHOLE_ONLY = frozenset({"builtins", "__builtin__"})
_PRIVATE = PATH_RULES["torch._C"]

#: Modules the course's files import, or that do nothing the scan would flag; any other import is reported.
KNOWN_MODULES = frozenset(
    {
        *("torch", "numpy", "math", "cmath", "triton", "einops", "matplotlib", "tqdm", "tabulate"),
        *("__future__", "typing", "typing_extensions", "dataclasses", "functools", "itertools", "collections"),
        *("operator", "numbers", "abc", "enum", "contextlib", "warnings", "copy", "random", "statistics"),
        *("fractions", "decimal", "string", "re", "time", "timeit", "os", "sys", "pathlib", "io", "json"),
        *("heapq", "bisect", "array", "textwrap", "logging", "gc", "inspect", "types", "weakref", "pprint"),
    }
)

#: Environment variables a kernel file may read: Triton's own settings (``TRITON_INTERPRET=1`` runs kernels on CPU).
TOOLCHAIN_SETTINGS = ("TRITON_",)

#: Files in a submission folder that run without being imported, and why they are flagged.
PLANTED_FILES: Mapping[str, str] = {
    "conftest.py": "pytest loads it when it collects the folder: it can change how the grader runs",
    "sitecustomize.py": "Python runs it at start-up when the folder is on the path",
    "usercustomize.py": "Python runs it at start-up when the folder is on the path",
    "pytest.ini": "pytest reads its options (plugins, paths) from it",
    "tox.ini": "pytest reads its options (plugins, paths) from it",
    "setup.cfg": "pytest reads its options (plugins, paths) from it",
    "pyproject.toml": "pytest reads its options (plugins, paths) from it",
}


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def rule_for_attribute(name: str) -> Rule | None:
    """The rule of an attribute name flagged on any object, or None."""
    rule = ATTRIBUTE_RULES.get(name)
    if rule is not None:
        return rule
    for prefix, prefix_rule in _ATTRIBUTE_PREFIXES:
        if name.startswith(prefix):
            return prefix_rule
    return None


def rule_for_path(path: str) -> Rule | None:
    """The rule a dotted path falls under, or None when it is fine.

    Its last name is looked up as an attribute first (``torch._C._ExcludeDispatchKeyGuard`` is a
    dispatch guard before it is a torch internal), then the longest prefix of the path with a rule.
    """
    parts = path.split(".")
    rule = rule_for_attribute(parts[-1])
    if rule is not None:
        return rule
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        rule = PATH_RULES.get(prefix)
        # Every bare builtin resolves to builtins.<name>: the module is flagged, not all it holds.
        if rule is not None and (end == len(parts) or prefix not in _WHOLE_ONLY):
            return rule
    if parts[0] == "os" and len(parts) > 1 and parts[1].startswith(("exec", "spawn", "posix_spawn")):
        return _PROCESS
    if parts[0] == "torch" and any(_private(part) for part in parts[1:]):
        return _PRIVATE
    return None
