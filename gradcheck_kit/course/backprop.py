"""Exercises 1-4 (and the kernels of 7) on the grading side: each check's inputs, reference and grading.

Exercise 1 returns every gradient of the notebook's backward pass by name; they
are graded step by step against the recorded forward pass (first wrong step,
inherited steps). Exercises 2-4 return one gradient each, graded with the known
wrong formulas of the exercise as named mistakes. The forward pass and its
autograd reference come from :func:`gradcheck_kit.makemore.model.build`.
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

from gradcheck_kit.course.catalogue import EXERCISES, Hints
from gradcheck_kit.course.prepared import NotGradable, Prepared
from gradcheck_kit.grading.mistakes import Mistake
from gradcheck_kit.grading.steps import grade_gradient, grade_steps, row_for_error, term_scales
from gradcheck_kit.makemore.model import Forward
from gradcheck_kit.report import ERROR, NOT_STARTED, WRONG, Report, Row

__all__ = ["FUSED_OUTPUTS", "chunked", "fused", "single_gradient"]

#: The gradient each fused exercise returns.
FUSED_OUTPUTS = {"ex2": "logits", "ex3": "hprebn", "ex4": "C"}


def chunked(fwd: Forward, hints: Hints, seconds: float) -> Prepared:
    """Exercise 1: ``chunked_backward(f)`` returns the 26 gradients by name, graded step by step."""
    reference = fwd.reference_grads
    function = EXERCISES["ex1"].function

    def rows(student: Mapping[str, object]) -> list[Row]:
        demb = student.get("emb")
        if not (isinstance(demb, torch.Tensor) and demb.shape == fwd.emb.shape):
            demb = reference["emb"]
        mistakes = {"C": [_overwrite_mistake(hints, demb, fwd.Xb, fwd.config.vocab_size)]}
        return grade_steps(student, fwd.recording, fwd.loss, reference, n=fwd.n, hints=hints.tensors, mistakes=mistakes)

    def grade(value: Any) -> Report:
        if not isinstance(value, Mapping):
            raise NotGradable(
                f"{function} must return a dict of gradients keyed by name "
                f"({{'logprobs': dlogprobs, ...}}), got {type(value).__name__}"
            )
        student = {str(k): v for k, v in value.items()}
        unknown = tuple(k for k in student if k not in reference)
        return Report("", tuple(_suggest_key(row, unknown) for row in rows(student)), unknown)

    def partial(held: Any, failure: str, statement: str = "") -> Report:
        """The gradients computed before the function raised are graded; the failure is told once.

        A gradient that ``statement``, the line that raised, was assigning or updating is unfinished
        (``dcounts += ...`` raised before adding its second term): it counts as not computed.
        """
        unfinished = _assigned(statement)
        computed = {k: v for k, v in _held_gradients(held, reference).items() if k not in unfinished}
        graded = rows(computed)
        failed = [i for i, row in enumerate(graded) if row.verdict == NOT_STARTED] or [len(graded) - 1]
        first = graded[failed[0]].name
        for i in failed:
            name = graded[i].name
            message = failure if name == first else f"not computed: {function} raised before it (see d{first})"
            graded[i] = row_for_error(name, reference[name], ERROR, message)
        return Report("", tuple(graded))

    return Prepared(function, ("ex1",), grade, reference, seconds, args=(fwd.student_view(),), partial=partial)


def _assigned(statement: str) -> set[str]:
    """The gradients a line of exercise 1 assigns or updates: ``dcounts += ...`` and ``g["W1"] = ...`` name
    ``counts`` and ``W1``; nothing when the line is not a statement of its own."""
    try:
        tree = ast.parse(statement.strip())
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            for part in ast.walk(target):
                if isinstance(part, ast.Name) and part.id.startswith("d"):
                    names.add(part.id[1:])
                elif isinstance(part, ast.Subscript) and isinstance(part.slice, ast.Constant):
                    names.add(str(part.slice.value))
    return names


def _held_gradients(held: Any, reference: Mapping[str, torch.Tensor]) -> dict[str, object]:
    """The gradients among a raising function's variables: ``g["probs"]`` in a dict, or ``dprobs``."""
    if not isinstance(held, Mapping):
        return {}
    found: dict[str, object] = {}
    for name in reference:
        in_dicts = [v[name] for v in held.values() if isinstance(v, Mapping) and name in v]
        value = in_dicts[0] if in_dicts else held.get(f"d{name}")
        if isinstance(value, torch.Tensor):
            found[name] = value
    return found


def _suggest_key(row: Row, unknown: tuple[str, ...]) -> Row:
    if row.verdict != NOT_STARTED or not unknown:
        return row
    match = difflib.get_close_matches(row.name, unknown, n=1)
    if not match:
        return row
    return replace(row, verdict=WRONG, note=f"returned under the key {match[0]!r}: did you mean {row.name!r}?")


def fused(key: str, fwd: Forward, hints: Hints, seconds: float) -> Prepared:
    """Exercises 2-4: one function, one gradient, graded with the exercise's named mistakes."""
    inputs = _FUSED[key](fwd, hints)
    name = FUSED_OUTPUTS[key]
    scale = term_scales(fwd.recording, fwd.loss, fwd.all_grads)(name)
    hint = hints.exercise.get(key, "")
    return single_gradient(
        EXERCISES[key].function,
        key,
        name,
        inputs.expected,
        inputs.args,
        seconds,
        n=fwd.n,
        mistakes=inputs.mistakes,
        hint=hint,
        scale=scale,
        terms=inputs.terms,
        factors=inputs.factors,
    )


def single_gradient(
    function: str,
    exercise: str,
    name: str,
    expected: torch.Tensor,
    args: tuple[Any, ...],
    seconds: float,
    **grading: Any,
) -> Prepared:
    """A function that returns one gradient, ``name``, graded against ``expected`` (exercises 2-4 and 7).

    Args:
        grading: keyword arguments of :func:`~gradcheck_kit.grading.steps.grade_gradient`.
    """

    def grade(value: Any) -> Report:
        if value is None:
            # The stubs raise NotImplementedError: None here is a missing return statement.
            return Report(
                "", (row_for_error(name, expected, ERROR, f"{function} returned None: is a return missing?"),)
            )
        return Report("", (grade_gradient(name, value, expected, **grading),))

    return Prepared(function, (exercise,), grade, {name: expected}, seconds, args=args)


@dataclass(frozen=True)
class _Inputs:
    """A fused exercise's arguments, reference, and what its detectors are given."""

    args: tuple[Any, ...]
    expected: torch.Tensor
    mistakes: list[Mistake]
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    factors: dict[str, torch.Tensor] = field(default_factory=dict)


def _cross_entropy_inputs(fwd: Forward, hints: Hints) -> _Inputs:
    logits, Yb, n = fwd.logits.detach(), fwd.Yb, fwd.n
    onehot = F.one_hot(Yb, logits.shape[1]).to(logits.dtype)
    expected = fwd.reference_grads["logits"]
    mistakes = [
        Mistake("softmax-only", hints.mistake("softmax-only", "the one-hot label term is missing"),
                lambda: F.softmax(logits, 1) / n),
        Mistake("log-softmax", hints.mistake("log-softmax", "log_softmax used instead of softmax"),
                lambda: (F.log_softmax(logits, 1) - onehot) / n),
    ]  # fmt: skip
    terms = {"the softmax term (softmax / n)": F.softmax(logits, 1) / n, "the label term (-one_hot / n)": -onehot / n}
    probs = F.softmax(logits, 1)
    return _Inputs((logits.clone(), Yb.clone()), expected, mistakes, terms, {"probs": probs, "logits": logits})


def _batchnorm_inputs(fwd: Forward, hints: Hints) -> _Inputs:
    grads = fwd.recording.grads(fwd.loss)
    dhpreact = grads["hpreact"]
    assert dhpreact is not None
    bngain, bnraw, bnvar_inv, n = fwd.bngain.detach(), fwd.bnraw.detach(), fwd.bnvar_inv.detach(), fwd.n
    d, x = dhpreact, bnraw
    mean_term, var_term = d.sum(0, keepdim=True), x * (d * x).sum(0, keepdim=True)

    mistakes = [
        Mistake("biased-variance", hints.mistake("biased-variance", "biased variance"),
                lambda: bngain * bnvar_inv / n * (n * d - mean_term - var_term)),
        Mistake("no-mean-term", hints.mistake("no-mean-term", "mean term missing"),
                lambda: bngain * bnvar_inv / n * (n * d - n / (n - 1) * var_term)),
        Mistake("no-variance-term", hints.mistake("no-variance-term", "variance term missing"),
                lambda: bngain * bnvar_inv / n * (n * d - mean_term)),
        Mistake("no-gain", hints.mistake("no-gain", "bngain missing"),
                lambda: bnvar_inv / n * (n * d - mean_term - n / (n - 1) * var_term)),
    ]  # fmt: skip
    expected = grads["hprebn"]
    assert expected is not None
    # dhprebn = bngain * bnvar_inv / n * (n * dhpreact - mean term - n/(n-1) * variance term): its three terms.
    scale = bngain * bnvar_inv / n
    terms = {
        "the direct term (dhpreact)": scale * n * d,
        "the mean term (dhpreact.sum(0) / n)": -scale * mean_term,
        "the variance term (bnraw * (dhpreact * bnraw).sum(0) / (n-1))": -scale * n / (n - 1) * var_term,
    }
    factors = {"bngain": bngain, "bnvar_inv": bnvar_inv, "bnraw": bnraw}
    args = (dhpreact.clone(), bngain.clone(), bnraw.clone(), bnvar_inv.clone())
    return _Inputs(args, expected, mistakes, terms, factors)


def _overwrite_mistake(hints: Hints, demb: torch.Tensor, Xb: torch.Tensor, num_embeddings: int) -> Mistake:
    def overwrite() -> torch.Tensor:
        dC = torch.zeros(num_embeddings, demb.shape[-1], dtype=demb.dtype, device=demb.device)
        for k in range(Xb.shape[0]):
            for j in range(Xb.shape[1]):
                dC[Xb[k, j]] = demb[k, j]
        return dC

    return Mistake("overwrite", hints.mistake("overwrite", "repeated indices were overwritten"), overwrite)


def _embedding_inputs(fwd: Forward, hints: Hints) -> _Inputs:
    grads = fwd.recording.grads(fwd.loss)
    demb, expected = grads["emb"], grads["C"]
    assert demb is not None and expected is not None
    vocab = fwd.config.vocab_size
    mistakes = [_overwrite_mistake(hints, demb, fwd.Xb, vocab)]
    return _Inputs((demb.clone(), fwd.Xb.clone(), vocab), expected, mistakes)


_FUSED: dict[str, Callable[[Forward, Hints], _Inputs]] = {
    "ex2": _cross_entropy_inputs,
    "ex3": _batchnorm_inputs,
    "ex4": _embedding_inputs,
}
