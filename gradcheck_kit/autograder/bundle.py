"""``gradcheck-kit gradescope-bundle OUT.zip``: a Gradescope autograder, ready to upload.

The zip follows https://gradescope-autograders.readthedocs.io/en/latest/specs/ : at its
root ``setup.sh`` (run once, when Gradescope builds the image) and ``run_autograder`` (run
for each submission, in /autograder), both executable and with LF line endings. Beside
them lie a wheel of this gradcheck-kit, so that the image does not depend on the package
index having this version, and the course's graded tests: ``exercises/`` with its
``conftest.py``, ``test_*.py``, ``hints.toml`` and ``points.toml``; never ``solutions/``,
never the stubs.

``setup.sh`` installs the CPU build of PyTorch from PyTorch's CPU index (PyPI's Linux
wheels are multi-GB CUDA builds) and the wheel with its ``grade`` extra into a virtual
environment, ``/autograder/venv``. ``run_autograder`` grades ``/autograder/submission``
with a deadline under the assignment's time limit, so that results.json is written, with
what was graded, before Gradescope stops the container. Both scripts read
``AUTOGRADER_ROOT`` (default ``/autograder``), so the bundle can be tried outside a
container: unzip it into ROOT/source, put a submission in ROOT/submission, and run them.
"""

from __future__ import annotations

import argparse
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gradcheck_kit.autograder.command import find_exercises
from gradcheck_kit.autograder.points import Scheme, SchemeError

__all__ = ["BundleError", "Settings", "add_arguments", "build_bundle", "run", "run_autograder", "setup_script"]

#: Gradescope's default time limit for an autograder run, in minutes, and the most it allows.
DEFAULT_LIMIT_MINUTES = 10
MAX_LIMIT_MINUTES = 40
#: Seconds kept free under the limit: ``grade`` takes up to 15 s to stop at its deadline,
#: and the container, Python and torch need to start before grading begins.
DEADLINE_MARGIN = 60
#: PyTorch's index of CPU-only wheels.
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
#: The course files the graded run reads; everything else in exercises/ stays out.
COURSE_FILES = ("conftest.py", "test_*.py", "hints.toml", "points.toml")
#: The files of gradcheck-kit's source a wheel is built from.
SOURCE_FILES = ("pyproject.toml", "README.md", "LICENSE")
#: Gradescope settings under which the reference solutions pass with margin. Measured with
#: ``gradcheck-kit grade solutions`` (README, "On Gradescope"): at most about 610 MiB (PSS) for
#: the grader, its fork server and its worker together, and 7-15 s of CPU time.
RECOMMENDED_MEMORY = "2 GB"
RECOMMENDED_CPUS = "1 CPU (grading the solutions takes 7-15 s of CPU time, so 0.5, the default, fits too)"
RECOMMENDED_IMAGE = "Ubuntu 22.04 or newer (Python 3.10 or newer)"

# A fixed time for every entry, so that the same inputs make the same zip.
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)


class BundleError(Exception):
    """The bundle cannot be made as asked; the message says what to change."""


@dataclass(frozen=True)
class Settings:
    """What the scripts of a bundle install and how long grading may run.

    Args:
        wheel: the file name of gradcheck-kit's wheel in the bundle.
        torch: the requirement installed from ``torch_index`` (``torch==2.13.0``).
        limit_minutes: the assignment's time limit on Gradescope.
        torch_index: the index the CPU build of PyTorch comes from.
    """

    wheel: str
    torch: str
    limit_minutes: float = DEFAULT_LIMIT_MINUTES
    torch_index: str = CPU_INDEX

    @property
    def deadline(self) -> int:
        """Seconds ``grade`` may take before it stops and writes what it graded."""
        return int(self.limit_minutes * 60 - DEADLINE_MARGIN)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT.zip", help="the autograder zip to write")
    parser.add_argument(
        "--limit",
        type=float,
        default=DEFAULT_LIMIT_MINUTES,
        metavar="MINUTES",
        help=f"the assignment's autograder timeout on Gradescope (default: {DEFAULT_LIMIT_MINUTES}, Gradescope's "
        f"default; at most {MAX_LIMIT_MINUTES}); grading stops {DEADLINE_MARGIN} s before it",
    )
    parser.add_argument(
        "--exercises",
        metavar="DIR",
        help="the exercises/ folder with the graded tests and points.toml (default: ./exercises, else the one "
        "next to the installed gradcheck_kit)",
    )
    parser.add_argument(
        "--wheel",
        metavar="PATH",
        help="a gradcheck-kit wheel to ship (default: one built from the source this gradcheck-kit runs from)",
    )
    parser.add_argument(
        "--torch",
        metavar="REQUIREMENT",
        help="the PyTorch the image installs, from PyTorch's CPU index (default: this one's version, pinned)",
    )


def run(args: argparse.Namespace) -> int:
    """Write the bundle and say what is in it and how to set the assignment up; 2 when asked wrongly."""
    try:
        if not 2 <= args.limit <= MAX_LIMIT_MINUTES:
            raise BundleError(
                f"--limit {args.limit:g}: Gradescope's timeout is 2 to {MAX_LIMIT_MINUTES} minutes; pass the one "
                "set in the assignment's settings"
            )
        exercises = find_exercises(args.exercises)
        # A mistake in points.toml is found here rather than by the first student's submission;
        # what it warns of (a hidden test worth points) is printed.
        Scheme.load(exercises / "points.toml")
        out = Path(args.out).expanduser()
        if out.suffix != ".zip":
            raise BundleError(f"{args.out}: Gradescope takes the autograder as a .zip file; name it OUT.zip")
        torch = args.torch or _installed_torch()
        with tempfile.TemporaryDirectory(prefix="gradcheck-bundle-") as scratch:
            wheel = Path(args.wheel).expanduser() if args.wheel else build_wheel(_source_dir(exercises), Path(scratch))
            if not (wheel.is_file() and wheel.name.startswith("gradcheck_kit-") and wheel.suffix == ".whl"):
                raise BundleError(f"--wheel {args.wheel}: not a gradcheck-kit wheel (gradcheck_kit-*.whl)")
            settings = Settings(wheel.name, torch, args.limit)
            names = build_bundle(out, exercises, wheel, settings)
    except (BundleError, FileNotFoundError, SchemeError) as exc:
        print(f"gradcheck-kit gradescope-bundle: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({len(names)} files):")
    for name in names:
        print(f"  {name}")
    print()
    for line in recommended_settings(settings):
        print(line)
    return 0


def recommended_settings(settings: Settings) -> list[str]:
    """What to set in the assignment's "Autograder Settings" on Gradescope."""
    return [
        "Gradescope, the assignment's Configure Autograder page: upload this zip, and set",
        f"  base image:  {RECOMMENDED_IMAGE}",
        f"  memory:      {RECOMMENDED_MEMORY} (Gradescope's default, 768 MB, leaves too little margin)",
        f"  CPU:         {RECOMMENDED_CPUS}",
        f"  timeout:     {settings.limit_minutes:g} minutes (grading stops at {settings.deadline} s and "
        "keeps what it graded; rebuild with --limit to change it)",
        "Students upload the files of exercises/ they wrote (ex1_chunked_backward.py, ...), at the top level.",
    ]


def build_bundle(out: Path, exercises: Path, wheel: Path, settings: Settings) -> list[str]:
    """Write the autograder zip to ``out``; return the names it holds, in order.

    Raises:
        BundleError: when ``exercises`` lacks its conftest.py, points.toml or tests.
    """
    course = sorted(_course_files(exercises))
    names = {path.name for path in course}
    missing = [name for name in ("conftest.py", "points.toml") if name not in names]
    if missing or not any(name.startswith("test_") for name in names):
        what = ", ".join(missing) if missing else "test_*.py files"
        raise BundleError(f"{exercises}: not a course folder (no {what})")
    entries: list[tuple[str, bytes, bool]] = [
        ("setup.sh", setup_script(settings).encode(), True),
        ("run_autograder", run_autograder(settings).encode(), True),
        (wheel.name, wheel.read_bytes(), False),
    ]
    entries += [(f"exercises/{path.name}", _lf(path.read_bytes()), False) for path in course]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data, executable in entries:
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.create_system = 3  # Unix, so that unzip applies the modes below
            mode = 0o755 if executable else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    tmp.replace(out)
    return [name for name, _, _ in entries]


def _course_files(exercises: Path) -> Iterator[Path]:
    seen: set[Path] = set()
    for pattern in COURSE_FILES:
        for path in exercises.glob(pattern):
            if path.is_file() and path not in seen:
                seen.add(path)
                yield path


def _lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def setup_script(settings: Settings) -> str:
    """``setup.sh``: Python's venv, the CPU build of PyTorch, and the bundled gradcheck-kit with its grading extra."""
    return f"""#!/usr/bin/env bash
# Gradescope runs this once, when it builds the autograder's image: it installs the CPU
# build of PyTorch and the gradcheck-kit wheel beside this script into $ROOT/venv.
# AUTOGRADER_ROOT (default /autograder) lets it run outside Gradescope's container.
set -euo pipefail
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
SOURCE="$ROOT/source"
VENV="$ROOT/venv"
PYTHON="${{GRADCHECK_PYTHON:-python3}}"
TORCH_INDEX="${{GRADCHECK_TORCH_INDEX:-{settings.torch_index}}}"

if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 && command -v apt-get >/dev/null; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv python3-pip
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "setup.sh: gradcheck-kit needs Python 3.10 or newer, and $PYTHON is $("$PYTHON" -V 2>&1);" \\
        "choose the Ubuntu 22.04 base image (or newer) in the assignment's autograder settings" >&2
    exit 1
fi
"$PYTHON" -m venv "$VENV"
# The CPU build alone: PyPI's Linux wheels of torch pull in several GB of CUDA libraries.
"$VENV/bin/python" -m pip install --no-cache-dir -q --index-url "$TORCH_INDEX" "{settings.torch}"
"$VENV/bin/python" -m pip install --no-cache-dir -q "$SOURCE/{settings.wheel}[grade]"
"$VENV/bin/gradcheck-kit" --version
"$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'
# bubblewrap gives the workers a read-only file system and no network where the container
# lets it make namespaces; grading says in its header whether it could, and works without.
if ! command -v bwrap >/dev/null && command -v apt-get >/dev/null; then
    {{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap; }} \\
        || echo "setup.sh: bubblewrap not installed; workers run without it" >&2
fi
"""


def run_autograder(settings: Settings) -> str:
    """``run_autograder``: grade the submission into results.json, stopping in time to write it."""
    return f"""#!/usr/bin/env bash
# Gradescope runs this for each submission. gradcheck-kit grades /autograder/submission and
# writes /autograder/results/results.json; it stops at {settings.deadline} s, under the
# assignment's {settings.limit_minutes:g}-minute limit, and keeps what it graded by then.
# AUTOGRADER_ROOT (default /autograder) lets it run outside Gradescope's container.
set -uo pipefail
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
mkdir -p "$ROOT/results"
cd "$ROOT/source"
"$ROOT/venv/bin/gradcheck-kit" grade "$ROOT/submission" \\
    --exercises "$ROOT/source/exercises" \\
    --gradescope "$ROOT/results/results.json" \\
    --deadline {settings.deadline}
status=$?
# grade exits 1 below full marks, which is no failure of the autograder; 2 and above are.
if [ "$status" -le 1 ] && [ -s "$ROOT/results/results.json" ]; then
    exit 0
fi
exit "$status"
"""


def build_wheel(source: Path, scratch: Path) -> Path:
    """Build gradcheck-kit's wheel from ``source`` with pip, in a copy, so nothing is left in ``source``.

    Raises:
        BundleError: when pip fails, with its output.
    """
    copy = scratch / "source"
    copy.mkdir()
    for name in SOURCE_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, copy / name)
    shutil.copytree(
        source / "gradcheck_kit",
        copy / "gradcheck_kit",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
    )
    out = scratch / "wheel"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(copy)]
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(out.glob("gradcheck_kit-*.whl"))
    if done.returncode != 0 or not wheels:
        raise BundleError(
            f"building the gradcheck-kit wheel failed ({' '.join(command)}):\n{done.stdout}{done.stderr}"
            "pass --wheel PATH to ship a wheel built elsewhere"
        )
    return wheels[0]


def _source_dir(exercises: Path) -> Path:
    """gradcheck-kit's source tree: beside the exercises, or where this package is imported from."""
    here = Path(__file__).resolve().parents[2]
    for folder in (exercises.parent, here):
        pyproject = folder / "pyproject.toml"
        if (
            pyproject.is_file()
            and (folder / "gradcheck_kit").is_dir()
            and 'name = "gradcheck-kit"' in (pyproject.read_text(encoding="utf-8"))
        ):
            return folder
    raise BundleError(
        f"no gradcheck-kit source found (looked in {exercises.parent} and {here}) to build the wheel from; "
        "run from a checkout of gradcheck-kit, or pass --wheel PATH"
    )


def _installed_torch() -> str:
    """``torch==X.Y.Z``: the release of this PyTorch, without its local build label (``+cpu``)."""
    from importlib import metadata

    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError as exc:
        raise BundleError("PyTorch is not installed here; pass --torch REQUIREMENT (e.g. torch==2.13.0)") from exc
    return f"torch=={version.split('+', 1)[0]}"
