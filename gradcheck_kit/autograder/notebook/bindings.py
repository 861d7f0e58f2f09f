"""What each exercise function written from a notebook binds before the notebook's code: its names, from the arguments.

The grader calls each exercise's function with that exercise's inputs only
(``chunked_backward(f)``, ``cross_entropy_backward(logits, Yb)``, ...). The
notebook's code reads the names its forward pass defined, so each function first
binds every one of them that its arguments give: directly (``logits``), as a size
(``n = logits.shape[0]``), or recomputed from them as the notebook computes it
(exercise 2's softmax chain from ``logits``; exercise 3's ``bndiff = bnraw / bnvar_inv``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from gradcheck_kit.makemore.model import FORWARD_NAMES, GRADED, PARAMETERS

__all__ = ["BINDINGS", "EX1_GRADIENTS", "Binding"]

#: The 26 gradients of exercise 1 as the notebook names them, ``dlogprobs`` ... ``dC``.
EX1_GRADIENTS: tuple[str, ...] = tuple(f"d{name}" for name in GRADED)


@dataclass(frozen=True)
class Binding:
    """One exercise's generated function: its arguments, the names it binds, the gradients it returns.

    Attributes:
        arguments: the function's parameters, as the grader passes them.
        prelude: the lines that bind the notebook's names from them.
        outputs: the d-variables the notebook's code assigns; each starts as None, "not started".
    """

    arguments: str
    prelude: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def given(self) -> frozenset[str]:
        """Every name bound before the notebook's code runs."""
        tree = ast.parse(f"def _({self.arguments}):\n" + "".join(f"    {line}\n" for line in self.prelude))
        function = tree.body[0]
        assert isinstance(function, ast.FunctionDef)
        names = {a.arg for a in function.args.args}
        names.update(n.id for n in ast.walk(function) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))
        return frozenset(names)


_EX1 = Binding(
    "f",
    (
        "# The forward pass, every name of it (the grader's copies).",
        *(f"{name} = f.{name}" for name in FORWARD_NAMES),
        "batch_size = n",
        "vocab_size, n_embd = C.shape",
        "block_size = Xb.shape[1]",
        "n_hidden = W1.shape[1]",
        f"parameters = [{', '.join(PARAMETERS)}]",
    ),
    EX1_GRADIENTS,
)

_EX2 = Binding(
    "logits, Yb",
    (
        "n = batch_size = logits.shape[0]",
        "vocab_size = logits.shape[1]",
        "# The notebook's cross-entropy forward pass, from logits and Yb.",
        "logit_maxes = logits.max(1, keepdim=True).values",
        "norm_logits = logits - logit_maxes",
        "counts = norm_logits.exp()",
        "counts_sum = counts.sum(1, keepdim=True)",
        "counts_sum_inv = counts_sum**-1",
        "probs = counts * counts_sum_inv",
        "logprobs = probs.log()",
        "loss = -logprobs[range(n), Yb].mean()",
    ),
    ("dlogits",),
)

_EX3 = Binding(
    "dhpreact, bngain, bnraw, bnvar_inv",
    (
        "n = batch_size = dhpreact.shape[0]",
        "n_hidden = dhpreact.shape[1]",
        "# What the batchnorm forward pass defined that these give: bnvar_inv = (bnvar + 1e-5)**-0.5,",
        "# bnraw = bndiff * bnvar_inv.",
        "bnvar = bnvar_inv**-2 - 1e-5",
        "bndiff = bnraw / bnvar_inv",
        "bndiff2 = bndiff**2",
    ),
    ("dhprebn",),
)

_EX4 = Binding(
    "demb, Xb, num_embeddings",
    (
        "n = batch_size = Xb.shape[0]",
        "block_size = Xb.shape[1]",
        "vocab_size = num_embeddings",
        "n_embd = demb.shape[-1]",
        "dembcat = demb.reshape(n, -1)",
        "# Exercise 4 is given demb, Xb and the number of rows of C, not C's values: C and emb stand",
        "# in as zeros of their shape, dtype and device (dC depends on their shapes only).",
        "C = torch.zeros(vocab_size, n_embd, dtype=demb.dtype, device=demb.device)",
        "emb = torch.zeros_like(demb)",
    ),
    ("dC",),
)

#: Each exercise's binding, by the grader's key.
BINDINGS: dict[str, Binding] = {"ex1": _EX1, "ex2": _EX2, "ex3": _EX3, "ex4": _EX4}
