"""Compare one hand-written gradient with its autograd reference.

The result is a frozen :class:`Comparison`, modelled on ``torch.testing``: it
never raises for whatever a student hands in, it records what was compared and
with which tolerances, and its :attr:`Comparison.message` says what is off,
where, by how much and what was allowed.
"""

from __future__ import annotations

import html
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

__all__ = [
    "PROBLEMS",
    "Comparison",
    "MissingReferenceError",
    "assert_grad_close",
    "cmp",
    "compare",
    "default_tolerances",
]

#: Every value :attr:`Comparison.problem` can take besides ``None``, most structural first.
PROBLEMS = ("missing", "type", "shape", "dtype", "device", "nonfinite", "mismatch")

try:
    from torch.testing._comparison import default_tolerances as _torch_default_tolerances
except ImportError:  # pragma: no cover - only when torch moves its private helper
    _torch_default_tolerances = None

# torch.testing's (rtol, atol) for the float dtypes a gradient can have, used only
# when the private helper above is gone; every other dtype compares exactly there too.
_FALLBACK_TOLERANCES = {
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
    torch.float32: (1.3e-6, 1e-5),
    torch.float64: (1e-7, 1e-7),
}


def default_tolerances(dtype: torch.dtype) -> tuple[float, float]:
    """Return torch.testing's default ``(rtol, atol)`` for ``dtype``.

    Args:
        dtype: the dtype of the reference gradient.

    Returns:
        ``(rtol, atol)``; ``(0.0, 0.0)`` for integer and bool dtypes.
    """
    if _torch_default_tolerances is not None:
        rtol, atol = _torch_default_tolerances(dtype)
    else:  # pragma: no cover
        rtol, atol = _FALLBACK_TOLERANCES.get(dtype, (0.0, 0.0))
    return float(rtol), float(atol)


class MissingReferenceError(ValueError):
    """The tensor handed to :func:`cmp` as ``t`` has no ``.grad`` to compare with."""


_FLOAT_FIELDS = frozenset({"maxdiff", "max_rel_diff", "actual_at_worst", "expected_at_worst", "rtol", "atol"})


@dataclass(frozen=True, repr=False)
class Comparison:
    """The outcome of comparing one gradient (``actual``) with its reference (``expected``).

    Float fields are ``nan`` and index/value fields ``None`` where the two could not
    be compared element by element (missing, wrong type, wrong shape).
    ``worst_index`` is the element with the greatest absolute difference, or the
    first non-finite element when ``actual`` holds NaN or Inf.
    """

    name: str
    exact: bool
    approximate: bool
    maxdiff: float
    max_rel_diff: float
    mismatched: int
    numel: int
    worst_index: tuple[int, ...] | None
    actual_at_worst: float | None
    expected_at_worst: float | None
    worst_rel_index: tuple[int, ...] | None
    nonfinite: int
    rtol: float
    atol: float
    actual_type: str
    actual_shape: tuple[int, ...] | None
    expected_shape: tuple[int, ...]
    actual_dtype: str | None
    expected_dtype: str
    actual_device: str | None
    expected_device: str
    problem: str | None

    @property
    def ok(self) -> bool:
        """Whether the gradient passes (the same as :attr:`approximate`)."""
        return self.approximate

    def line(self) -> str:
        """Return the backprop-ninja notebook's one-line summary of this comparison.

        Where nothing was compared element by element (no gradient, not a tensor, another
        shape), the last column says why instead of the notebook's ``maxdiff: nan``, which
        reads as a NaN gradient.
        """
        return self._summary(width=15)

    def _summary(self, width: int) -> str:
        flags = f"{self.name:{width}s} | exact: {str(self.exact):5s} | approximate: {str(self.approximate):5s}"
        if self.worst_index is None and math.isnan(self.maxdiff):
            return f"{flags} | {self._not_compared()}"
        line = f"{flags} | maxdiff: {self.maxdiff}"
        if self.problem in ("dtype", "device"):
            # The values were compared, but a maxdiff of 0.0 next to "approximate: False" needs its reason.
            line += f" | {self._mismatch_of(self.problem)}"
        return line

    def _not_compared(self) -> str:
        if self.problem == "missing":
            return "no gradient (None)"
        if self.problem == "type":
            return f"got {self.actual_type}, not a tensor"
        if self.problem == "shape":
            return f"shape {_shape(self.actual_shape)} vs {_shape(self.expected_shape)}"
        return self._mismatch_of(self.problem or "dtype")

    def _mismatch_of(self, problem: str) -> str:
        if problem == "device":
            return f"device {self.actual_device} vs {self.expected_device}"
        return f"dtype {self.actual_dtype} vs {self.expected_dtype}"

    @property
    def message(self) -> str:
        """Explain, over one or more lines, what is off, where, by how much and what was allowed."""
        expected = f"a {self.expected_dtype} tensor of shape {_shape(self.expected_shape)}"
        if self.problem == "missing":
            return f"No gradient: got None where {expected} is expected (not started)."
        if self.problem == "type":
            return f"Expected {expected}, got {self.actual_type}."
        if self.problem == "shape":
            lines = [
                f"Shape mismatch: got {_shape(self.actual_shape)} where {_shape(self.expected_shape)} is expected."
            ]
            hint = _shape_hint(self.actual_shape or (), self.expected_shape)
            return "\n".join([*lines, hint] if hint else lines)
        if self.problem in ("dtype", "device"):
            got = self.actual_dtype if self.problem == "dtype" else self.actual_device
            want = self.expected_dtype if self.problem == "dtype" else self.expected_device
            head = f"{self.problem} mismatch: got {got} where {want} is expected."
            if self.worst_index is None and self.numel:
                return head
            if self.nonfinite:
                return f"{head}\n{self._nonfinite_message()}"
            if self.mismatched == 0:
                return f"{head}\nValues agree, but {self.problem} is {got} where {want} is expected."
            return f"{head}\n{self._values_message()}"
        if self.problem == "nonfinite":
            return self._nonfinite_message()
        if self.problem == "mismatch":
            return self._values_message()
        if self.exact:
            return f"Exact match: all {self.numel} elements are equal."
        return (
            f"All {self.numel} elements are close: greatest absolute difference "
            f"{_num(self.maxdiff)} at index {self.worst_index} (up to {_num(self.atol)} allowed)."
        )

    def _values_message(self) -> str:
        share = self.mismatched / self.numel if self.numel else 0.0
        rel = (
            f"Greatest relative difference: {_num(self.max_rel_diff)} at index {self.worst_rel_index} "
            f"(up to {_num(self.rtol)} allowed)"
            if self.worst_rel_index is not None
            else "Greatest relative difference: n/a (every expected element is 0)"
        )
        return "\n".join(
            [
                f"Mismatched elements: {self.mismatched} / {self.numel} ({share:.1%})",
                f"Greatest absolute difference: {_num(self.maxdiff)} at index {self.worst_index} "
                f"(up to {_num(self.atol)} allowed)",
                rel,
                self._values_at_worst(),
            ]
        )

    def _nonfinite_message(self) -> str:
        return (
            f"Non-finite values: {self.nonfinite} / {self.numel} elements of the gradient "
            f"are NaN or Inf; the first is at index {self.worst_index}.\n{self._values_at_worst()}"
        )

    def _values_at_worst(self) -> str:
        return (
            f"At index {self.worst_index}: actual {_num(self.actual_at_worst)}, expected {_num(self.expected_at_worst)}"
        )

    def as_dict(self) -> dict[str, Any]:
        """Return the comparison as plain, strictly JSON-serialisable data.

        Returns:
            Every field (tuples as lists; NaN and Inf, which strict JSON lacks, as the
            strings ``"nan"``, ``"inf"`` and ``"-inf"``) plus ``ok`` and ``message``.
        """
        data = {key: _plain(value) for key, value in asdict(self).items()}
        data["ok"] = self.ok
        data["message"] = self.message
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Comparison:
        """Rebuild a comparison from :meth:`as_dict` output."""
        values: dict[str, Any] = {}
        for field in fields(cls):
            value = data[field.name]
            if isinstance(value, list):
                value = tuple(value)
            elif isinstance(value, str) and field.name in _FLOAT_FIELDS:
                value = float(value)
            values[field.name] = value
        return cls(**values)

    def __repr__(self) -> str:
        # The dataclass repr runs to twenty fields; cmp() returns this object, so it is
        # what a notebook cell shows after its last cmp() line: the line cmp printed.
        return f"<Comparison {self._summary(width=0)}>"

    def _repr_html_(self) -> str:
        """Jupyter's view: the summary line, and what is off when the gradient fails."""
        colour = "green" if self.ok else "red"
        verdict = "exact" if self.exact else "approximate" if self.ok else (self.problem or "wrong")
        detail = "" if self.ok else f"<pre>{html.escape(self.message)}</pre>"
        return (
            f'<div class="gradcheck-comparison"><code>{html.escape(self._summary(width=0))}</code> '
            f'<b style="color: {colour}">{html.escape(verdict)}</b>{detail}</div>'
        )


def compare(
    name: str,
    actual: object,
    expected: torch.Tensor,
    *,
    rtol: float | None = None,
    atol: float | None = None,
) -> Comparison:
    """Compare a hand-written gradient with its reference; never raises for a bad ``actual``.

    Shapes must match exactly (no broadcasting), dtype and device must match (no
    promotion), and every element of ``actual`` must be finite. Elements are close
    when ``|actual - expected| <= atol + rtol * |expected|``.

    Args:
        name: what the gradient is called in messages (``"logprobs"``).
        actual: the student's gradient; anything, including ``None``.
        expected: the reference gradient.
        rtol: relative tolerance; give both or neither.
        atol: absolute tolerance; defaults come from :func:`default_tolerances`
            for ``expected.dtype``.

    Returns:
        A :class:`Comparison`; its ``problem`` is ``None`` when the gradient passes.

    Raises:
        TypeError: if ``expected`` is not a dense real tensor.
        ValueError: if only one of ``rtol`` and ``atol`` is given, or either is negative.
    """
    if not isinstance(expected, torch.Tensor) or expected.layout != torch.strided:
        raise TypeError(f"the reference gradient must be a dense torch.Tensor, got {_type_name(expected)}")
    if expected.is_complex():
        raise TypeError(f"the reference gradient must be real, got {_dtype(expected.dtype)}")
    rtol, atol = _tolerances(expected.dtype, rtol, atol)
    expected = expected.detach()
    base: dict[str, Any] = dict(
        name=name,
        exact=False,
        approximate=False,
        maxdiff=math.nan,
        max_rel_diff=math.nan,
        mismatched=0,
        numel=expected.numel(),
        worst_index=None,
        actual_at_worst=None,
        expected_at_worst=None,
        worst_rel_index=None,
        nonfinite=0,
        rtol=rtol,
        atol=atol,
        actual_type=_type_name(actual),
        actual_shape=None,
        expected_shape=tuple(expected.shape),
        actual_dtype=None,
        expected_dtype=_dtype(expected.dtype),
        actual_device=None,
        expected_device=str(expected.device),
        problem=None,
    )
    if actual is None:
        return Comparison(**{**base, "problem": "missing"})
    if not isinstance(actual, torch.Tensor) or actual.layout != torch.strided or actual.is_quantized:
        return Comparison(**{**base, "problem": "type"})
    actual = actual.detach()
    base.update(
        actual_shape=tuple(actual.shape),
        actual_dtype=_dtype(actual.dtype),
        actual_device=str(actual.device),
    )
    if actual.shape != expected.shape:
        return Comparison(**{**base, "problem": "shape"})

    problem: str | None = None
    if actual.dtype != expected.dtype:
        problem = "dtype"
    elif actual.device != expected.device:
        problem = "device"
    if actual.device != expected.device:
        try:
            actual = actual.to(expected.device)
        except (RuntimeError, NotImplementedError):
            return Comparison(**{**base, "problem": problem})
    if actual.is_complex():
        return Comparison(**{**base, "problem": problem})

    measured = _measure(actual, expected, rtol, atol)
    if problem is None and measured["nonfinite"]:
        problem = "nonfinite"
    if problem is None and measured["mismatched"]:
        problem = "mismatch"
    exact = problem is None and torch.equal(actual, expected)
    return Comparison(**{**base, **measured, "exact": exact, "approximate": problem is None, "problem": problem})


def cmp(
    name: str,
    dt: object,
    t: torch.Tensor,
    *,
    rtol: float | None = None,
    atol: float | None = None,
) -> Comparison:
    """Drop-in for the notebook's ``cmp(s, dt, t)``: print its one-line summary and return the comparison.

    Args:
        name: the label printed in the first column.
        dt: the hand-written gradient.
        t: the tensor whose ``.grad`` is the reference, as in the notebook; to compare with
            a reference gradient itself, use :func:`compare`.
        rtol: relative tolerance; give both or neither.
        atol: absolute tolerance.

    Returns:
        The :class:`Comparison`, so ``cmp(...).approximate`` works.

    Raises:
        MissingReferenceError: if ``t`` holds no ``.grad``: backward has not run, ``t`` is an
            intermediate that does not retain its gradient, or ``t`` does not require grad.
        TypeError: if ``t`` is not a tensor.
    """
    comparison = compare(name, dt, _reference_gradient(name, t), rtol=rtol, atol=atol)
    print(comparison.line())
    return comparison


def assert_grad_close(
    actual: object,
    expected: torch.Tensor,
    *,
    name: str = "gradient",
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    """Fail with a torch.testing-style message unless ``actual`` is close to ``expected``.

    Raises:
        AssertionError: naming the gradient, the problem and the worst element.
    """
    __tracebackhide__ = True
    comparison = compare(name, actual, expected, rtol=rtol, atol=atol)
    if not comparison.approximate:
        raise AssertionError(f"{name}: {comparison.problem}\n{comparison.message}")


def _reference_gradient(name: str, t: torch.Tensor) -> torch.Tensor:
    """``t.grad``, as the notebook's ``cmp(s, dt, t)`` reads it, or an error that says how to get one."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(
            f"cmp({name!r}, dt, t): t must be the torch.Tensor whose gradient dt is, got {_type_name(t)}; "
            "to compare with a reference gradient you already have, use compare(name, actual, expected)"
        )
    # Reading .grad of a non-leaf that does not retain it only warns and returns None,
    # so tell that case apart and say what to do instead.
    if t.requires_grad and not t.is_leaf and not t.retains_grad:
        raise MissingReferenceError(
            f"cmp({name!r}, dt, t): t has no gradient: {name!r} is an intermediate tensor, and autograd keeps "
            f"no .grad for those unless asked. Call {name}.retain_grad() before loss.backward(), or run the "
            "forward pass under gradcheck_kit.record() and call rec.retain_grad() before loss.backward(), "
            "which retains every intermediate's gradient without a list."
        )
    if t.grad is not None:
        return t.grad
    if not t.requires_grad:
        # A tensor that does not require grad never gets a .grad: most likely t is a gradient itself,
        # which the notebook's cmp would have failed on too (t.grad is None).
        raise MissingReferenceError(
            f"cmp({name!r}, dt, t) compares dt with t.grad, and t has no gradient: it does not require grad. "
            "Pass the tensor of the forward pass whose gradient dt is, after loss.backward(); "
            f"to compare with a reference gradient you already have (rec.grads(loss)[{name!r}], say), "
            f"use compare({name!r}, dt, expected)."
        )
    raise MissingReferenceError(
        f"cmp({name!r}, dt, t): t has no gradient yet: call loss.backward() first "
        f"(and {name}.retain_grad() before it if {name!r} is an intermediate)."
    )


def _tolerances(dtype: torch.dtype, rtol: float | None, atol: float | None) -> tuple[float, float]:
    if rtol is None and atol is None:
        return default_tolerances(dtype)
    if rtol is None or atol is None:
        default_rtol, default_atol = default_tolerances(dtype)
        given = f"rtol={rtol}" if atol is None else f"atol={atol}"
        raise ValueError(
            f"rtol and atol must be given together, got only {given}; pass both, or neither to use "
            f"the defaults for {_dtype(dtype)} (rtol={default_rtol:g}, atol={default_atol:g})"
        )
    if not (rtol >= 0 and atol >= 0):
        raise ValueError(f"rtol and atol must be non-negative numbers, got rtol={rtol}, atol={atol}")
    return float(rtol), float(atol)


def _measure(actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float) -> dict[str, Any]:
    numel = expected.numel()
    if numel == 0:
        return dict(maxdiff=0.0, max_rel_diff=math.nan, mismatched=0, nonfinite=0)
    common = torch.promote_types(actual.dtype, expected.dtype)
    if not common.is_floating_point:
        common = torch.float64
    # The absolute difference is taken in the tensors' own dtype, as the notebook's cmp does,
    # so maxdiff prints the same number; closeness is decided in float64, as torch.testing does.
    diff = (actual.to(common) - expected.to(common)).abs().flatten()
    a64 = actual.to(torch.float64).flatten()
    e64 = expected.to(torch.float64).flatten()
    mismatched = int((~torch.isclose(a64, e64, rtol=rtol, atol=atol)).sum())
    not_finite = ~torch.isfinite(actual.flatten())
    nonfinite = int(not_finite.sum())
    worst = int(not_finite.nonzero()[0, 0]) if nonfinite else int(diff.argmax())

    nonzero = (e64 != 0).nonzero().flatten()
    if len(nonzero):
        rel = (a64[nonzero] - e64[nonzero]).abs() / e64[nonzero].abs()
        k = int(rel.argmax())
        max_rel_diff, worst_rel_index = float(rel[k]), _unravel(int(nonzero[k]), expected.shape)
    else:
        max_rel_diff, worst_rel_index = math.nan, None
    return dict(
        maxdiff=float(diff.max()),
        max_rel_diff=max_rel_diff,
        mismatched=mismatched,
        nonfinite=nonfinite,
        worst_index=_unravel(worst, expected.shape),
        actual_at_worst=float(a64[worst]),
        expected_at_worst=float(e64[worst]),
        worst_rel_index=worst_rel_index,
    )


def _unravel(flat: int, shape: torch.Size) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        flat, i = divmod(flat, size)
        index.append(i)
    return tuple(reversed(index))


def _shape_hint(actual: tuple[int, ...], expected: tuple[int, ...]) -> str:
    """Say how a wrong shape usually comes about, for the shapes the notebook produces."""
    if math.prod(actual) == math.prod(expected):
        if [n for n in actual if n != 1] == [n for n in expected if n != 1]:
            if len(actual) > len(expected):
                return "The same elements with a size-1 dimension too many: an extra keepdim=True?"
            if len(actual) < len(expected):
                return "The same elements without a size-1 dimension: a missing keepdim=True?"
            return "The same elements with their size-1 dimensions elsewhere: a view or reshape too many or too few?"
        if sorted(actual) == sorted(expected):
            return "The dimensions are permuted: a missing or extra transpose (.T)?"
        return "The same number of elements in a different shape: a view or reshape too many or too few?"
    both = _broadcast(actual, expected)
    if both == actual:
        padded = (1,) * (len(actual) - len(expected)) + expected
        dims = tuple(i for i, (a, e) in enumerate(zip(actual, padded, strict=True)) if e == 1 and a != 1)
        keepdim = " with keepdim=True" if len(actual) == len(expected) else ""
        return (
            f"The forward pass broadcast this tensor, so its gradient must be summed over dimension(s) {dims}{keepdim}."
        )
    if both == expected:
        return (
            "This gradient would broadcast to the expected shape, which torch.allclose accepts; "
            "it needs one value per element, not a sum over a dimension."
        )
    return ""


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    """Return the shape ``a`` and ``b`` broadcast to, or ``None`` if they do not broadcast."""
    # torch.broadcast_shapes would do, but its first call imports torch.fx (about a second).
    width = max(len(a), len(b))
    out = []
    for m, n in zip((1,) * (width - len(a)) + a, (1,) * (width - len(b)) + b, strict=True):
        if m != n and 1 not in (m, n):
            return None
        out.append(n if m == 1 else m)
    return tuple(out)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def _shape(shape: tuple[int, ...] | None) -> str:
    return str(tuple(shape)) if shape is not None else "n/a"


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _type_name(value: object) -> str:
    kind = type(value)
    if isinstance(value, torch.Tensor):
        if value.layout != torch.strided:
            return f"a {str(value.layout).removeprefix('torch.')} torch.Tensor"
        return "a quantized torch.Tensor" if value.is_quantized else "torch.Tensor"
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
