"""The exercises of the course: what file and function each asks for, and the hints shown with wrong answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gradcheck_kit import _toml

__all__ = ["EXERCISES", "Exercise", "Hints"]


@dataclass(frozen=True)
class Exercise:
    """One exercise: the file and function a student writes, and the title of its table."""

    key: str
    file: str
    function: str
    title: str


EXERCISES: dict[str, Exercise] = {
    e.key: e
    for e in (
        Exercise("ex1", "ex1_chunked_backward.py", "chunked_backward", "exercise 1: chunked backward"),
        Exercise("ex2", "ex2_cross_entropy.py", "cross_entropy_backward", "exercise 2: cross-entropy backward"),
        Exercise("ex3", "ex3_batchnorm.py", "batchnorm_backward", "exercise 3: batchnorm backward"),
        Exercise("ex4", "ex4_embedding.py", "embedding_backward", "exercise 4: embedding backward"),
        Exercise("ex5", "ex5_layers.py", "Linear", "exercise 5: layers"),
        Exercise("ex6", "ex6_training.py", "train_step", "exercise 6: training"),
        Exercise(
            "ex7", "ex7_triton_kernels.py", "cross_entropy_backward_triton", "exercise 7: Triton kernels (optional)"
        ),
    )
}


@dataclass(frozen=True)
class Hints:
    """The hints of ``exercises/hints.toml``: per exercise, per tensor of exercise 1, per mistake."""

    exercise: Mapping[str, str] = field(default_factory=dict)
    tensors: Mapping[str, str] = field(default_factory=dict)
    mistakes: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> Hints:
        path = Path(path)
        if not path.is_file():
            return cls()
        data = _toml.loads(path.read_text(encoding="utf-8"))
        return cls(
            exercise={k: v["hint"] for k, v in data.items() if isinstance(v, dict) and "hint" in v},
            tensors=data.get("ex1", {}).get("tensors", {}),
            mistakes=data.get("mistakes", {}),
        )

    def mistake(self, key: str, fallback: str) -> str:
        return self.mistakes.get(key, fallback)
