"""How far a kernel's gradient is from the float64 truth, held against PyTorch's own error band by band.

FlashAttention's tests accept a backward when ``max|kernel - ref| <= 2 max|torch - ref|``,
with ``ref`` computed in float64 and ``torch`` PyTorch's autograd at the kernel's dtype.
The global maximum sits on the largest entries: in a cross-entropy gradient these are
the ``-1/n`` at the labels, while tens of thousands of off-target entries are a hundred
to a million times smaller. A kernel whose off-target entries are several times worse than
PyTorch's still passes, because its errors there are too small to reach the maximum.
Fixed tolerances fail the same way: torch.testing's bfloat16 ``atol`` of 1e-5 is larger
than most of those entries.

The criterion here localises the comparison by magnitude. Elements are sorted into
*bands* by the binade of their reference value (``2**(e-1) <= |ref| < 2**e``), where one
rounding step has the same absolute size for every element. A gradient passes when

- in every band, the kernel's 90th-percentile error is at most ``k`` times PyTorch's
  (the *typical* error: catches an error spread over a band, such as a sum accumulated
  in bfloat16, whatever the band's few largest errors), and
- no element is off by more than half its own value and by more than ``k`` times
  PyTorch's largest error in its band (a *gross* error: a sign, a missing term, a block
  left out, a garbage value where the reference is exactly zero).

Why these choices, each measured on correct and broken kernels (cross-entropy, batchnorm,
layernorm, softmax, matmul backwards, over shapes from 1x1 to 16x16384 and several seeds):

- Magnitude rather than position (rows, column blocks): errors scale with the value in
  floating point, so a band compares like with like whatever the op's layout.
- A quantile, not the maximum or the RMS: where a result is a small difference of large
  terms (a softmax or batchnorm backward), a different summation order is 30 times worse
  than PyTorch's on a single element by luck, which a band's maximum or RMS reports as a
  failure; the 90th percentile moves only when a tenth of the band is worse.
- A floor under PyTorch's error, for the typical error and the gross check: half of one
  *resolution step* per element, the larger of one ulp of the value in the dtype and
  :data:`RESOLUTION` (``2**-18``) of the value. The ulp keeps an exact PyTorch (an
  exactly representable result) from demanding an exact kernel. The relative part only
  matters in float32, where PyTorch's error is the luck of one summation order: a
  per-channel weight gradient summed over blocks of 32 rows in turn, where PyTorch sums
  pairwise, is over twice PyTorch's error on 22 of 288 draws (up to 6.7 times), while its
  90th-percentile error stays below 2**-20 of the value. Float32 is thus checked to 18
  bits, which still fails a kernel that computes in bfloat16 (8 bits) or TF32 (11 bits);
  bfloat16 and float16 keep their ulp.
- Bands of at least ``min_count`` elements: a quantile over a handful of elements is the
  maximum, and noise, so sparse neighbouring binades are pooled, smallest first; a tensor
  smaller than ``min_count`` is judged as one band.
- Exact zeros of the reference (and values below the dtype's smallest normal number) form a
  band of their own, with the smallest normal as the floor: PyTorch returns those zeros
  exactly (masked positions, rows no index touched), and a kernel that writes anything
  there (an unzeroed buffer) is wrong whatever its error elsewhere.
- Non-finite values in the kernel's gradient fail it; where PyTorch's own result is not
  finite, its error counts as infinite, so nothing in that band is gross.

What it does not see: an error confined to fewer than a tenth of a band and smaller than
half the values (say one column of 129 that is 5% off) passes unless it is gross.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

__all__ = ["DEFAULT_K", "MIN_BAND_COUNT", "QUANTILE", "RESOLUTION", "Band", "ErrorMeasure", "measure_error"]

#: FlashAttention's factor: the kernel's error may be at most twice PyTorch's.
DEFAULT_K = 2.0
#: The fewest elements a band is judged on; sparser binades are pooled with their neighbours.
MIN_BAND_COUNT = 64
#: The quantile of a band's errors that is compared: the typical error, not its luckiest or unluckiest.
QUANTILE = 0.9
#: The finest relative error held to PyTorch's: 2**-18 of a value (float32 has 2**-24).
RESOLUTION = 2.0**-18


@dataclass(frozen=True)
class Band:
    """The errors of one band of reference magnitudes, ``low <= |ref| < high`` (``low`` is 0 for the zeros).

    Errors are absolute, against the float64 reference; ``kernel_error`` and ``torch_error``
    are the band's 90th percentiles.
    """

    low: float
    high: float
    count: int
    kernel_error: float
    torch_error: float
    #: The least error PyTorch's is taken to be: the percentile of half a resolution step per element.
    floor: float
    kernel_max: float
    torch_max: float
    #: Elements of the band with a gross error.
    gross: int

    @property
    def ratio(self) -> float:
        """The kernel's typical error over PyTorch's (or over the floor, when that is larger)."""
        return _ratio(self.kernel_error, max(self.torch_error, self.floor))

    def label(self) -> str:
        """Say which magnitudes the band holds, as ``[2^-17, 2^-15)``, or ``0`` for the zeros."""
        if self.low == 0:
            return "0"
        return f"[2^{math.frexp(self.low)[1] - 1}, 2^{math.frexp(self.high)[1] - 1})"


@dataclass(frozen=True)
class ErrorMeasure:
    """One gradient's errors against the float64 reference: the kernel's, PyTorch's, and the verdict at ``k``."""

    k: float
    numel: int
    #: Every band, smallest magnitudes first.
    bands: tuple[Band, ...]
    #: The band with the greatest ratio (the first of them on a tie), by position in :attr:`bands`.
    worst_band: int
    #: Elements off by more than half their value and by more than ``k`` times PyTorch's largest error in their band.
    gross: int
    #: Elements of the kernel's gradient that are NaN or Inf.
    nonfinite: int
    #: The greatest absolute errors over the whole tensor.
    kernel_max: float
    torch_max: float
    #: The worst gross element, or else the element of the worst band where the kernel is furthest off.
    worst_index: tuple[int, ...]
    kernel_at_worst: float
    torch_at_worst: float
    reference_at_worst: float

    @property
    def ratio(self) -> float:
        """The worst band's ratio of typical errors, or infinity when the kernel's gradient is not finite."""
        if self.nonfinite:
            return math.inf
        return self.bands[self.worst_band].ratio if self.bands else 0.0

    @property
    def global_ratio(self) -> float:
        """FlashAttention's ratio, ``max|kernel - ref| / max|torch - ref|``, for comparison."""
        return _ratio(self.kernel_max, self.torch_max)

    @property
    def passed(self) -> bool:
        """Whether every band's typical error is within ``k`` times PyTorch's and no element is grossly off."""
        return self.ratio <= self.k and self.gross == 0

    def as_dict(self) -> dict[str, Any]:
        """Return the measure as strictly JSON-serialisable data (non-finite floats as strings)."""
        data = {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name != "bands"}
        data["bands"] = [
            {**{key: _plain(value) for key, value in asdict(band).items()}, "ratio": _plain(band.ratio)}
            for band in self.bands
        ]
        data.update(ratio=_plain(self.ratio), global_ratio=_plain(self.global_ratio), passed=self.passed)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorMeasure:
        """Rebuild a measure from :meth:`as_dict` output."""
        bands = tuple(
            Band(**{f.name: band[f.name] if f.type == "int" else float(band[f.name]) for f in fields(Band)})
            for band in data["bands"]
        )
        values = {
            f.name: data[f.name] if f.type == "int" else float(data[f.name])
            for f in fields(cls)
            if f.name not in ("bands", "worst_index")
        }
        return cls(bands=bands, worst_index=tuple(data["worst_index"]), **values)


def measure_error(
    kernel: torch.Tensor,
    baseline: torch.Tensor,
    reference: torch.Tensor,
    *,
    k: float = DEFAULT_K,
    dtype: torch.dtype | None = None,
    min_count: int = MIN_BAND_COUNT,
) -> ErrorMeasure:
    """Measure a kernel's gradient and PyTorch's against the float64 reference, band by band.

    Args:
        kernel: the kernel's gradient, at the dtype under test.
        baseline: PyTorch's autograd gradient at the same dtype, from the same inputs.
        reference: the float64 gradient, from the same inputs upcast.
        k: how many times PyTorch's error the kernel's may be.
        dtype: the dtype whose ulp sets the floor; ``baseline.dtype`` by default.
        min_count: the fewest elements a band of nonzero magnitudes is judged on.

    Returns:
        An :class:`ErrorMeasure`; ``measure.passed`` is the verdict.

    Raises:
        ValueError: if the three shapes differ, ``k`` is not positive, or the reference is not finite.
    """
    if not kernel.shape == baseline.shape == reference.shape:
        raise ValueError(
            f"shapes differ: kernel {tuple(kernel.shape)}, PyTorch {tuple(baseline.shape)}, "
            f"reference {tuple(reference.shape)}"
        )
    if not k > 0:
        raise ValueError(f"k must be positive, not {k}")
    dtype = dtype or baseline.dtype
    ref = reference.detach().to(torch.float64).reshape(-1)
    if not bool(torch.isfinite(ref).all()):
        raise ValueError("the float64 reference gradient is not finite: draw inputs it is defined on")
    if ref.numel() == 0:
        return ErrorMeasure(k, 0, (), 0, 0, 0, 0.0, 0.0, (), 0.0, 0.0, 0.0)
    got = kernel.detach().to(device=ref.device, dtype=torch.float64).reshape(-1)
    base = baseline.detach().to(device=ref.device, dtype=torch.float64).reshape(-1)
    finite = torch.isfinite(got)
    # A NaN compares false with everything: it becomes the largest error, so it is found as the worst.
    kernel_err = torch.where(finite, (got - ref).abs(), torch.full_like(ref, math.inf))
    torch_err = (base - ref).abs().nan_to_num(nan=math.inf)

    info = torch.finfo(dtype)
    magnitude = ref.abs()
    zero = magnitude < info.tiny
    # frexp: |x| = m * 2**e with 0.5 <= m < 1, so e is the binade's upper exponent.
    exponent = torch.frexp(magnitude).exponent
    group, groups = _bands(exponent, zero, min_count)
    step = _resolution(magnitude, exponent, zero, info)
    # Sorted by band once, each band is a contiguous slice rather than a mask over the whole tensor.
    order = torch.argsort(group, stable=True)
    counts = torch.bincount(group, minlength=len(groups)).tolist()
    slices = zip(*(t[order].split(counts) for t in (kernel_err, torch_err, step, magnitude)), strict=True)
    excess_sorted = []
    bands = []
    for (low_exp, high_exp, zero), (k_err, t_err, s, m) in zip(groups, slices, strict=True):
        torch_max = t_err.max()
        # How far past its allowance each element is: above 1 is gross.
        over = k_err / torch.maximum(k * torch.maximum(s, torch_max), m / 2)
        excess_sorted.append(over)
        bands.append(
            Band(
                low=0.0 if zero else math.ldexp(1.0, low_exp - 1),
                high=info.tiny if zero else math.ldexp(1.0, high_exp),
                count=k_err.numel(),
                kernel_error=_quantile(k_err),
                torch_error=_quantile(t_err),
                floor=_quantile(s) / 2,
                kernel_max=float(k_err.max()),
                torch_max=float(torch_max),
                gross=int((over > 1).sum()),
            )
        )
    excess = torch.empty_like(ref)
    excess[order] = torch.cat(excess_sorted)
    gross = sum(band.gross for band in bands)
    worst_band = max(range(len(bands)), key=lambda i: (bands[i].ratio, -i))
    if gross:
        worst = int(excess.argmax())
    else:
        worst = int(torch.where(group == worst_band, kernel_err, torch.full_like(kernel_err, -1.0)).argmax())
    return ErrorMeasure(
        k=k,
        numel=ref.numel(),
        bands=tuple(bands),
        worst_band=worst_band,
        gross=gross,
        nonfinite=int((~finite).sum()),
        kernel_max=float(kernel_err.max()),
        torch_max=float(torch_err.max()),
        worst_index=_unravel(worst, tuple(reference.shape)),
        kernel_at_worst=float(got[worst]),
        torch_at_worst=float(base[worst]),
        reference_at_worst=float(ref[worst]),
    )


def _bands(
    exponent: torch.Tensor, zero: torch.Tensor, min_count: int
) -> tuple[torch.Tensor, list[tuple[int, int, bool]]]:
    """Assign each element a band: its binade, pooled until every band has ``min_count`` elements.

    Args:
        exponent: each element's binade, as ``frexp`` gives it.
        zero: which elements count as zero (below the dtype's smallest normal number).

    Returns:
        The band of each element, and per band ``(lowest exponent, highest exponent, is the zero band)``.
    """
    nonzero = exponent[~zero]
    lowest = int(nonzero.min()) if nonzero.numel() else 0
    counts = torch.bincount(nonzero - lowest).tolist() if nonzero.numel() else []
    pools: list[list[int]] = []
    filled = min_count
    for e, n in enumerate(counts, start=lowest):
        if n == 0:
            continue
        if filled >= min_count:
            pools.append([])
            filled = 0
        pools[-1].append(e)
        filled += n
    if len(pools) > 1 and filled < min_count:
        # The largest magnitudes are too few on their own: they join the band below.
        pools[-2].extend(pools.pop())
    groups: list[tuple[int, int, bool]] = [(0, 0, True)] if bool(zero.any()) else []
    group = torch.zeros_like(exponent)
    if pools:
        first = len(groups)
        offset = pools[0][0]
        table = torch.zeros(pools[-1][-1] - offset + 1, dtype=exponent.dtype)
        for i, pool in enumerate(pools):
            table[pool[0] - offset : pool[-1] + 1 - offset] = first + i
        table = table.to(exponent.device)
        # Zeros index the table anywhere; they are put back in their own band below.
        group = table[(exponent - offset).clamp(0, table.numel() - 1).long()]
        groups.extend((pool[0], pool[-1], False) for pool in pools)
    return group.masked_fill(zero, 0), groups


def _resolution(magnitude: torch.Tensor, exponent: torch.Tensor, zero: torch.Tensor, info: torch.finfo) -> torch.Tensor:
    """One resolution step per element: one ulp in the dtype, or RESOLUTION of the value when larger."""
    ulp = info.eps * torch.exp2((exponent - 1).to(magnitude.dtype))
    step = torch.maximum(ulp, magnitude * RESOLUTION)
    return step.masked_fill(zero, info.tiny)


def _quantile(errors: torch.Tensor) -> float:
    # kthvalue rather than torch.quantile, which refuses tensors of more than 2**24 elements.
    rank = min(errors.numel(), max(1, math.ceil(QUANTILE * errors.numel())))
    return float(errors.kthvalue(rank).values)


def _ratio(kernel: float, allowed: float) -> float:
    if kernel == 0:
        return 0.0
    return kernel / allowed if allowed > 0 else math.inf


def _unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        flat, i = divmod(flat, size)
        index.append(i)
    return tuple(reversed(index))


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
