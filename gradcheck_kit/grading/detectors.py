"""Recognise the mistake behind a wrong gradient from its values, and say what was seen.

Each detector looks at the student's gradient next to what it should have been
and either recognises one mistake, returning a :class:`~gradcheck_kit.report.Diagnosis`
that says what it detected and from which evidence, or returns None. Detectors
only ever see gradients already graded wrong: they choose the words, never the
verdict. :func:`diagnose` tries them from the most specific to the most general;
when none matches, the grader says so and shows the hint instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from gradcheck_kit.grading.mistakes import Mistake, close, factor_name, fit_factor
from gradcheck_kit.grading.tolerances import grading_tolerances
from gradcheck_kit.report import Diagnosis

__all__ = [
    "aliased",
    "diagnose",
    "misshapen",
    "per_line_factor",
    "term_factors",
    "wrong_lines",
    "zeros",
]

#: At most this many rows or columns are named one by one; more are counted.
_NAMED = 6
#: A factor per line that no forward tensor names is told only for lines at least this long:
#: in shorter ones a fit of one number says little.
_UNNAMED_LINE = 4


def diagnose(
    actual: object,
    expected: torch.Tensor,
    *,
    n: int | None = None,
    mistakes: Sequence[Mistake] = (),
    branches: Mapping[str, torch.Tensor] | None = None,
    terms: Mapping[str, torch.Tensor] | None = None,
    factors: Mapping[str, torch.Tensor] | None = None,
    others: Mapping[str, tuple[object, torch.Tensor]] | None = None,
    name: str = "",
    scale: float = 0.0,
) -> Diagnosis | None:
    """Say which mistake explains ``actual``, or None when no detector recognises one.

    Args:
        actual: the student's gradient (already known to be wrong).
        expected: what it should have been (for a step: given the student's own upstream gradients).
        n: the batch size, to name factors such as 1/n and n/(n-1).
        mistakes: exercise-specific wrong variants to try first.
        branches: for a tensor used more than once, the contribution of each use,
            keyed by the tensor that uses it; their sum is ``expected``.
        terms: the terms ``expected`` is the sum of, by a name a student knows ("the mean
            term"), to find one term scaled wrongly (n where n-1 belongs) or left out.
        factors: forward tensors by name, to name a factor that varies per row or column.
        others: the student's other gradients with their right values, by name, to find
            one that is the same tensor as this one.
        name: this gradient's name, as the student's variable (``bndiff`` for ``dbndiff``).
        scale: the size of the terms the gradient sums (see
            :func:`~gradcheck_kit.grading.tolerances.term_scales`): a gradient within rounding
            of those is right, and no detector is asked about it.
    """
    if not isinstance(actual, torch.Tensor):
        return None
    if actual.shape != expected.shape:
        return misshapen(actual, expected)
    if not actual.is_floating_point() or not torch.isfinite(actual).all():
        return None
    actual = actual.detach().to(device=expected.device)
    if float((actual.double() - expected.double()).abs().max()) <= 1e-3 * max(scale, _scale(expected)):
        return None  # right up to rounding (of the terms it sums, for a gradient that is noise): nothing to name
    for mistake in mistakes:
        try:
            wrong = mistake.compute()
        except Exception:  # a variant that cannot be built for these shapes explains nothing
            continue
        if wrong.shape == actual.shape and close(actual, wrong) and not close(wrong, expected):
            return Diagnosis(mistake.message, "your values are those this mistake gives")
    return (
        zeros(actual, expected)
        or aliased(actual, expected, others or {}, name)
        or _branch(actual, branches or {}, n)
        or _constant(actual, expected, n)
        or term_factors(actual, expected, terms or {}, n)
        or per_line_factor(actual, expected, factors or {})
        or wrong_lines(actual, expected)
    )


# ----------------------------------------------------------------------------
# Shapes


def misshapen(actual: torch.Tensor, expected: torch.Tensor) -> Diagnosis | None:
    """A gradient of the wrong shape whose values are right: transposed, a keepdim too many or too few, not summed."""
    if not actual.is_floating_point() or not torch.isfinite(actual).all():
        return None
    got, want = tuple(actual.shape), tuple(expected.shape)
    if actual.dim() == 2 and expected.dim() == 2 and got == want[::-1] and close(actual.T, expected):
        return Diagnosis(
            "it is the transpose of the right gradient: swap the order of the matmul or drop a .T",
            f"its shape {got} is the right one's reversed, and its transpose has the right values",
        )
    if actual.numel() == expected.numel() and [s for s in got if s != 1] == [s for s in want if s != 1]:
        if not close(actual.reshape(want), expected):
            return None
        if actual.dim() > expected.dim():
            return Diagnosis(
                f"an extra keepdim=True: the values are right, with a size-1 dimension that {want} does not have",
                f"shape {got} where {want} belongs; reshaped to {want} it matches",
            )
        if actual.dim() < expected.dim():
            return Diagnosis(
                "a missing keepdim=True: the values are right, without the size-1 dimension the gradient keeps",
                f"shape {got} where {want} belongs; reshaped to {want} it matches",
            )
        return Diagnosis(
            "the values are right, with their size-1 dimensions in the wrong place",
            f"shape {got} where {want} belongs; reshaped to {want} it matches",
        )
    ones_got = {i for i, g in enumerate(got) if g == 1}
    ones_want = {i for i, w in enumerate(want) if w == 1}
    if len(got) == len(want) and ones_got and ones_want and ones_got != ones_want:
        summed, kept = sorted(ones_got - ones_want), sorted(ones_want - ones_got)
        if summed and kept and all(g in (1, w) or w == 1 for g, w in zip(got, want, strict=True)):
            return Diagnosis(
                f"summed over the wrong dimension: over {tuple(summed)}, where the forward pass broadcast this tensor "
                f"along {tuple(kept)}; sum over dimension(s) {tuple(kept)} with keepdim=True",
                f"shape {got} where {want} belongs",
            )
    if actual.dim() == expected.dim() and all(w in (1, g) for g, w in zip(got, want, strict=True)):
        dims = tuple(i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w)
        if close(actual.sum(dims, keepdim=True), expected):
            return Diagnosis(
                "not summed back: the forward pass broadcast this tensor, so its gradient must be summed over "
                f"dimension(s) {dims} with keepdim=True",
                f"shape {got} where {want} belongs; its sum over {dims} has the right values",
            )
    return None


# ----------------------------------------------------------------------------
# Zeros and aliases


def zeros(actual: torch.Tensor, expected: torch.Tensor) -> Diagnosis | None:
    """All zeros where the gradient is not; or right everywhere but at zeros where the gradient is not."""
    tol = 1e-3 * _scale(expected)
    if tol == 0.0:
        return None
    missing = (actual == 0) & (expected.abs() > tol)
    if not bool(missing.any()):
        return None
    if not bool((actual != 0).any()):
        return Diagnosis(
            "it is all zeros: nothing was written into it (a zeros_like placeholder left as it is, or an in-place "
            "update such as index_add_ or += applied to a copy of it, e.g. a result that was not assigned)",
            f"every element is 0, and {int(missing.sum())} of the right gradient's {expected.numel()} are not",
        )
    if bool((_off(actual, expected) & ~missing).any()):
        return None
    lines = _lines(missing)
    where = f" (only {lines[0]})" if lines else ""
    return Diagnosis(
        f"{int(missing.sum())} elements are 0 where the gradient is not{where}, and every other element is right: "
        "those were never written",
        "the values match the right gradient wherever they are not 0",
    )


def aliased(
    actual: torch.Tensor, expected: torch.Tensor, others: Mapping[str, tuple[object, torch.Tensor]], name: str
) -> Diagnosis | None:
    """The same values as another gradient whose right values differ: one tensor under two names, or a mix-up."""
    for other, (value, right) in others.items():
        if other == name or not isinstance(value, torch.Tensor) or value.shape != actual.shape:
            continue
        value = value.detach().to(device=actual.device, dtype=actual.dtype)
        if torch.equal(value, actual) and not close(right, expected):
            this = f"d{name}" if name else "this gradient"
            return Diagnosis(
                f"{this} holds exactly the values of d{other}: the two are the same tensor (one was set to the other "
                f"without a .clone(), say d{other} = {this}, and an in-place update such as += changed both), or the "
                "wrong variable is returned",
                f"{this} and d{other} are equal element for element, while their right values differ",
            )
    return None


# ----------------------------------------------------------------------------
# Factors


def _branch(actual: torch.Tensor, branches: Mapping[str, torch.Tensor], n: int | None) -> Diagnosis | None:
    if len(branches) < 2:
        return None
    used = ", ".join(f"'{name}'" for name in branches)
    for name, branch in branches.items():
        others = sum(g for other, g in branches.items() if other != name)
        if not isinstance(others, torch.Tensor):
            continue
        if close(actual, others):
            return Diagnosis(
                f"the contribution through '{name}' is missing: this tensor is used by {used}, and its gradient is "
                "the sum over every use (accumulate with +=)",
                f"your values are the sum of the other uses' contributions without the one through '{name}'",
            )
        c = fit_factor(actual - others, branch)
        if c is not None and not close(c * branch, branch):
            return Diagnosis(
                f"the contribution through '{name}' is off by a constant factor of {_label(c, n)}; the others are "
                "right",
                f"taking the other uses' contributions away leaves {c:.4g} times the one through '{name}'",
            )
    return None


def _constant(actual: torch.Tensor, expected: torch.Tensor, n: int | None) -> Diagnosis | None:
    c = fit_factor(actual, expected)
    if c is None:
        return None
    return Diagnosis(f"off by a constant factor of {_label(c, n)}", f"every element is {c:.4g} times the right value")


def term_factors(
    actual: torch.Tensor, expected: torch.Tensor, terms: Mapping[str, torch.Tensor], n: int | None
) -> Diagnosis | None:
    """One or more terms of a sum scaled wrongly (n where n-1 belongs, say) or left out, the others right."""
    full = {}
    for name, t in terms.items():
        try:  # a term may be written at the shape it broadcasts from, (1, n_hidden) for a sum over the batch
            full[name] = torch.broadcast_to(t.detach().double().to(actual.device), actual.shape)
        except RuntimeError:
            continue
    names = [name for name, t in full.items() if bool(t.any())]
    if len(names) < 2:
        return None
    columns = torch.stack([full[name].flatten() for name in names], 1)
    solution = torch.linalg.lstsq(columns, actual.double().flatten().unsqueeze(1)).solution.flatten()
    coefficients = [float(c) for c in solution]
    fitted = (columns @ solution).reshape(actual.shape)
    # The fit must explain the error itself, however small it is beside the gradient (a mean term is).
    error = float((actual.double() - expected.double()).abs().max())
    if error == 0.0 or float((actual.double() - fitted).abs().max()) > 1e-2 * error:
        return None
    off = [(name, c) for name, c in zip(names, coefficients, strict=True) if abs(c - 1.0) > 1e-3]
    if not off or len(off) == len(names):  # every term scaled alike is a constant factor, said elsewhere
        return None
    said = []
    for name, c in off:
        if abs(c) <= 1e-3:
            said.append(f"{name} is missing")
        else:
            said.append(f"{name} is off by a factor of {_label(c, n)}")
    right = [name for name in names if name not in dict(off)]
    return Diagnosis(
        "; ".join(said) + f" ({', '.join(right)} right)",
        "your values are the sum of the terms with these factors: " + ", ".join(f"{c:.4g}" for _, c in off),
    )


def per_line_factor(
    actual: torch.Tensor, expected: torch.Tensor, factors: Mapping[str, torch.Tensor]
) -> Diagnosis | None:
    """Each column (or row, or element) off by its own factor, named when a forward tensor equals it."""
    a, e = actual.double(), expected.double().to(actual.device)
    for label, dim in (("column", 0), ("row", 1)) if a.dim() == 2 else ():
        if a.shape[dim] < 2:  # a line of one element is a multiple of anything: nothing is seen
            continue
        weight = (e * e).sum(dim, keepdim=True)
        if bool((weight == 0).all()):
            continue
        c = torch.where(weight > 0, (a * e).sum(dim, keepdim=True) / weight.clamp_min(1e-300), 0.0)
        if not close(a, e * c):
            continue
        lines = c.flatten()[weight.flatten() > 0]
        if bool(torch.allclose(lines, lines[0].expand_as(lines), rtol=1e-3, atol=0.0)):
            continue  # one constant for every line: a constant factor, said elsewhere
        for name, tensor in factors.items():
            if tensor.numel() != c.numel() or not tensor.is_floating_point():
                continue
            f = tensor.detach().double().to(a.device).reshape(c.shape)
            for shown, value in ((name, f), (f"1/{name}", 1.0 / f)):
                if close(e * value, a) and not close(e * value, e):
                    return Diagnosis(
                        f"each {label} is off by a factor equal to {shown}: {shown} is multiplied in where it does "
                        "not belong (or a tensor holding it used in place of one without it)",
                        f"every {label} of your gradient divided by the right one is {shown} of that {label}",
                    )
        if a.shape[dim] < _UNNAMED_LINE:
            continue
        return Diagnosis(
            f"each {label} is off by a factor of its own, not one constant: a per-{label} tensor is multiplied in "
            "where it does not belong, or left out",
            f"every {label} of your gradient is a multiple of the right one's, the multiples differ",
        )
    for name, tensor in factors.items():
        if tensor.shape != a.shape or not tensor.is_floating_point():
            continue
        f = tensor.detach().double().to(a.device)
        for shown, value in ((name, f), (f"1/{name}", 1.0 / f), (f"{name}**2", f * f), (f"1/{name}**2", 1.0 / (f * f))):
            if bool(torch.isfinite(value).all()) and close(a, e * value) and not close(e * value, e):
                # A gradient of one row (bnvar_inv's (1, n_hidden)) has one element per column.
                each = {(True, False): "column", (False, True): "row"}.get(
                    (a.dim() == 2 and a.shape[0] == 1, a.dim() == 2 and a.shape[1] == 1), "element"
                )
                return Diagnosis(
                    f"each {each} is off by a factor equal to {shown}: {shown} is multiplied in where it does not "
                    "belong (or a tensor holding it used in place of one without it)",
                    f"your gradient divided by the right one is {shown}, {each} for {each}",
                )
    return None


# ----------------------------------------------------------------------------
# Rows and columns


def wrong_lines(actual: torch.Tensor, expected: torch.Tensor) -> Diagnosis | None:
    """Only some rows or columns are wrong, the others right: name them."""
    if actual.dim() == 0:
        return None
    bad = _off(actual, expected)
    if not bool(bad.any()):
        return None
    lines = _lines(bad)
    if lines is None:
        return None
    where, count = lines
    return Diagnosis(
        f"only {where} {'is' if count == 1 else 'are'} wrong; the rest is right",
        "every other element matches the right gradient",
    )


def _lines(mask: torch.Tensor) -> tuple[str, int] | None:
    """``("rows 3, 7 of 32", 2)``: where ``mask`` is true, and in how many lines, when in some rows or columns only."""
    if mask.dim() == 1:
        idx = mask.nonzero().flatten().tolist()
        if len(idx) == mask.numel():
            return None
        return f"element{'s' if len(idx) > 1 else ''} {_names(idx)} of {mask.numel()}", len(idx)
    rows = mask.flatten(1).any(1).nonzero().flatten().tolist()
    columns = mask.any(0).nonzero().flatten().tolist() if mask.dim() == 2 else []
    options = []
    if len(rows) < mask.shape[0]:
        options.append((len(rows), f"row{'s' if len(rows) > 1 else ''} {_names(rows)} of {mask.shape[0]}"))
    if mask.dim() == 2 and len(columns) < mask.shape[1]:
        plural = "s" if len(columns) > 1 else ""
        options.append((len(columns), f"column{plural} {_names(columns)} of {mask.shape[1]}"))
    if not options:
        return None
    count, text = min(options)
    return text, count


def _off(actual: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Where ``actual`` is off by more than the grading tolerances: the elements a diagnosis may call wrong."""
    rtol, atol = grading_tolerances(expected)
    return (actual.double() - expected.double()).abs() > atol + rtol * expected.double().abs()


def _names(indices: list[int]) -> str:
    shown = ", ".join(map(str, indices[:_NAMED]))
    return shown if len(indices) <= _NAMED else f"{shown} and {len(indices) - _NAMED} more"


def _label(c: float, n: int | None) -> str:
    """A factor as a student would write it, and what n/(n-1) and (n-1)/n mean."""
    label = factor_name(c, n) or f"{c:.4g}"
    if label.startswith("n/(n-1)"):
        return f"{label}: a division by n-1 where the forward pass divides by n"
    if label.startswith("(n-1)/n"):
        return f"{label}: a division by n where the forward pass divides by n-1"
    return label


def _scale(t: torch.Tensor) -> float:
    finite = t.detach()[torch.isfinite(t.detach())]
    return float(finite.abs().max()) if finite.numel() else 0.0
