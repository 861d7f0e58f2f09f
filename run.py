#!/usr/bin/env python3
"""Set up a virtual environment in .venv, then grade the exercises or run the project's tests.

    python3 run.py grade [PYTEST ARGS]   grade exercises/ (add --impl DIR to grade another folder)
    python3 run.py test [PYTEST ARGS]    run a quick benchmark, then the project's own tests

Only python3 is needed. The first run creates .venv and installs PyTorch and
gradcheck-kit into it (about a minute); later runs reuse it and start at once.
On a machine without an NVIDIA GPU the CPU build of PyTorch is installed, never
the multi-GB CUDA one. Set GRADCHECK_TORCH to install another PyTorch, 2.13 or
newer (e.g. GRADCHECK_TORCH="torch==2.14.1").

What it installs is gradcheck-kit's `test` extra, which holds the `grade` extra
(pytest, numpy) and the `bench` one; afterwards `source .venv/bin/activate` puts
the `gradcheck-kit` command on PATH.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import socket
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".gradcheck-kit-installed"
TORCH = os.environ.get("GRADCHECK_TORCH", "torch==2.13.0")
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def run(*args: str | Path, check: bool = True) -> int:
    return subprocess.run([str(a) for a in args], cwd=ROOT, check=check).returncode


def reachable(url: str, timeout: float = 3.0) -> bool:
    host = url.split("/")[2]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def torch_index_args() -> list[str]:
    # PyPI's Linux wheels of torch are CUDA builds; where no NVIDIA GPU is present the
    # CPU build serves, from PyTorch's CPU index when it can be reached (else from the
    # indexes pip is configured with).
    if platform.system() != "Linux" or shutil.which("nvidia-smi"):
        return []
    return ["--extra-index-url", CPU_INDEX] if reachable(CPU_INDEX) else []


def ensure_environment() -> Path:
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + TORCH.encode()).hexdigest()
    python = venv_python()
    if STAMP.is_file() and STAMP.read_text() == key and python.exists():
        return python
    if not python.exists():
        print(f"run.py: creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode != 0:
        print(f"run.py: installing {TORCH} (once)", flush=True)
        run(*pip, TORCH, *torch_index_args())
    print("run.py: installing gradcheck-kit and its test tools", flush=True)
    # The CPU index again: should the torch in .venv be older than gradcheck-kit takes, pip
    # upgrades it, and must not fetch PyPI's CUDA build.
    run(*pip, "-e", f"{ROOT}[test]", *torch_index_args())
    STAMP.write_text(key)
    return python


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("grade", "test"):
        print(__doc__.strip())
        return 2
    command, rest = argv[0], argv[1:]
    python = ensure_environment()
    if command == "grade":
        return run(python, "-m", "pytest", "exercises", *rest, check=False)
    # The benchmark smoke test first, so that pytest's summary is the last line printed.
    status = run(python, "-m", "gradcheck_kit", "bench", "--quick", "--threads", "1", check=False)
    if status != 0:
        return status
    return run(python, "-m", "pytest", "tests", *rest, check=False)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
