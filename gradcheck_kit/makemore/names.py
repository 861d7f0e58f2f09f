"""The makemore names dataset: words, the character vocabulary, and (context, next character) pairs.

A names file has one name per line, as Karpathy's ``names.txt``. Without a path
the shipped list is used (``gradcheck_kit/makemore/data/names.txt``: 5,163 first names
from the US Census, public domain; see ``NAMES-LICENSE.txt``), so everything
works offline.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_NAMES",
    "NamesDataset",
    "build_dataset",
    "build_vocabulary",
    "load_dataset",
    "load_words",
    "split_words",
]

DEFAULT_NAMES = "names.txt"
"""File name of the shipped list inside ``gradcheck_kit/makemore/data``."""


def load_words(path: str | Path | None = None) -> list[str]:
    """Read a names file: one name per line, blank lines skipped.

    Args:
        path: the file; None for the shipped list.

    Raises:
        FileNotFoundError: when there is no such file.
        ValueError: when a name holds '.', the end-of-name token, or whitespace,
            or when the file holds no names.
    """
    if path is None:
        text = resources.files("gradcheck_kit.makemore").joinpath("data", DEFAULT_NAMES).read_text(encoding="utf-8")
        source = f"gradcheck_kit/makemore/data/{DEFAULT_NAMES}"
    else:
        text = Path(path).read_text(encoding="utf-8")
        source = str(path)
    words = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        word = line.strip()
        if not word:
            continue
        if "." in word or any(ch.isspace() for ch in word):
            raise ValueError(
                f"{source}:{lineno}: {word!r} is not one name: names may not hold '.' (the end-of-name token) or spaces"
            )
        words.append(word)
    if not words:
        raise ValueError(f"{source} holds no names")
    return words


def build_vocabulary(words: list[str]) -> tuple[dict[str, int], dict[int, str]]:
    """Return ``(stoi, itos)``: '.' is 0, the characters of ``words`` follow in sorted order."""
    chars = sorted(set("".join(words)))
    stoi = {s: i + 1 for i, s in enumerate(chars)}
    stoi["."] = 0
    itos = {i: s for s, i in stoi.items()}
    return stoi, itos


def build_dataset(
    words: list[str], block_size: int = 3, stoi: dict[str, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn words into (context, next character) pairs, as the notebook's ``build_dataset``.

    Each word ``w`` gives ``len(w) + 1`` rows: the context starts as ``block_size``
    end tokens and slides over ``w + '.'``.

    Args:
        words: the names.
        block_size: characters of context.
        stoi: the vocabulary; default: built from ``words``.

    Returns:
        ``X`` (rows, block_size) and ``Y`` (rows,), both int64.
    """
    import torch

    if stoi is None:
        stoi, _ = build_vocabulary(words)
    X, Y = [], []
    for w in words:
        context = [0] * block_size
        for ch in w + ".":
            ix = stoi[ch]
            X.append(context)
            Y.append(ix)
            context = context[1:] + [ix]
    return torch.tensor(X, dtype=torch.long).view(-1, block_size), torch.tensor(Y, dtype=torch.long)


def split_words(words: list[str], seed: int = 42) -> tuple[list[str], list[str], list[str]]:
    """Shuffle a copy of ``words`` and cut it 80/10/10 into train, dev and test.

    ``random.Random(42).shuffle`` gives the same order as the notebook's
    ``random.seed(42); random.shuffle(words)``, without touching the global RNG.
    """
    shuffled = list(words)
    random.Random(seed).shuffle(shuffled)
    n1 = int(0.8 * len(shuffled))
    n2 = int(0.9 * len(shuffled))
    return shuffled[:n1], shuffled[n1:n2], shuffled[n2:]


@dataclass(frozen=True)
class NamesDataset:
    """The notebook's splits: ``Xtr, Ytr`` (80%), ``Xdev, Ydev`` (10%), ``Xte, Yte`` (10%)."""

    Xtr: torch.Tensor
    Ytr: torch.Tensor
    Xdev: torch.Tensor
    Ydev: torch.Tensor
    Xte: torch.Tensor
    Yte: torch.Tensor
    stoi: dict[str, int]
    itos: dict[int, str]
    block_size: int
    source: str

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(X, Y)`` of ``"train"``, ``"dev"`` (or ``"val"``) or ``"test"``."""
        splits = {
            "train": (self.Xtr, self.Ytr),
            "dev": (self.Xdev, self.Ydev),
            "val": (self.Xdev, self.Ydev),
            "test": (self.Xte, self.Yte),
        }
        try:
            return splits[name]
        except KeyError:
            raise KeyError(f"no split {name!r}: choose train, dev or test") from None


def load_dataset(
    path: str | Path | None = None, *, block_size: int = 3, seed: int = 42, limit: int | None = None
) -> NamesDataset:
    """Load a names file and build the notebook's train/dev/test splits.

    Args:
        path: the names file; None for the shipped list.
        block_size: characters of context.
        seed: the seed of the shuffle before the split.
        limit: keep only the first ``limit`` names of the file (before the shuffle),
            for quick runs.
    """
    words = load_words(path)
    if limit is not None:
        words = words[:limit]
    stoi, itos = build_vocabulary(words)
    train, dev, test = split_words(words, seed)
    Xtr, Ytr = build_dataset(train, block_size, stoi)
    Xdev, Ydev = build_dataset(dev, block_size, stoi)
    Xte, Yte = build_dataset(test, block_size, stoi)
    source = f"gradcheck_kit/makemore/data/{DEFAULT_NAMES}" if path is None else str(path)
    return NamesDataset(Xtr, Ytr, Xdev, Ydev, Xte, Yte, stoi, itos, block_size, source)
