"""How many times faster one pass is than another, and whether the timing can tell.

The two passes are timed in rounds, one block of each per round, so that a burst
of load from elsewhere on the machine slows both passes of a round rather than
all the timings of one. Each round gives a ratio, the baseline's time over the
other pass's; the estimate is the median of those ratios, with a 95% confidence
interval from order statistics: the interval between the k-th smallest and the
k-th largest ratio covers the true median with a probability the binomial
distribution gives exactly, whatever the distribution of the ratios, as long as
the rounds are independent. Unlike a bootstrap it is the same for the same
ratios, so a decision can be tested.

A ratio is stated only when that interval lies within ±20% of the median. The
rounds go on until it does, or until the time allowed runs out; the interval is
looked at after every round, which makes it somewhat optimistic, and the ±20%
leaves room for that.

Pure Python: the sandboxed worker that times a student's passes imports this,
and nothing else of the bench's.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "CONFIDENCE",
    "FASTER",
    "MIN_ROUNDS",
    "SLOWER",
    "TOLERANCE",
    "TOO_CLOSE",
    "TOO_NOISY",
    "RatioEstimate",
    "median_interval",
]

#: The confidence of the interval around the median ratio.
CONFIDENCE = 0.95

#: A ratio is stated when its interval lies within this fraction of the median, either side.
TOLERANCE = 0.2

#: Rounds timed at least, however precise the first ones look: stopping at the first precise
#: interval picks a lucky one more often the earlier it may stop.
MIN_ROUNDS = 10

#: What the timing can say: the other pass is faster, slower, the two are too close to
#: tell apart, or the rounds disagree too much to say anything.
FASTER, SLOWER, TOO_CLOSE, TOO_NOISY = "faster", "slower", "too close to call", "too noisy"


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """A distribution-free confidence interval for the median of ``values``.

    The interval from the k-th smallest to the k-th largest value misses the median
    only when at most k - 1 values fall on one side of it, which has probability
    ``2 * P(Binomial(n, 1/2) <= k - 1)``; k is the largest for which that is at most
    ``1 - confidence``.

    Args:
        values: independent samples.
        confidence: the least probability that the interval covers the median.

    Returns:
        ``(low, high)``, or None when there are too few values for any interval
        to reach ``confidence`` (fewer than 6 at 95%).
    """
    n = len(values)
    ordered = sorted(values)
    below = 0  # the number of ways at most k - 1 of n values fall below the median
    k = 0
    while k < n // 2:
        below += math.comb(n, k)
        if 2 * below / 2**n > 1 - confidence:
            break
        k += 1
    if k == 0:
        return None
    return ordered[k - 1], ordered[n - k]


@dataclass(frozen=True)
class RatioEstimate:
    """The rounds' ratios of a baseline's time over another pass's, and what they show.

    Args:
        ratios: one per round; above 1 where the other pass was the faster.
    """

    ratios: tuple[float, ...]

    @classmethod
    def of(cls, baseline: Sequence[float], other: Sequence[float]) -> RatioEstimate:
        """The estimate from per-round times of the baseline and of the other pass, round by round.

        Raises:
            ValueError: if the two have different numbers of rounds, or a time is not a positive number.
        """
        if len(baseline) != len(other):
            raise ValueError(f"every round times both passes: got {len(baseline)} and {len(other)} times")
        if not all(t > 0 and math.isfinite(t) for t in (*baseline, *other)):
            raise ValueError("times must be positive, finite numbers of seconds")
        return cls(tuple(slow / fast for slow, fast in zip(baseline, other, strict=True)))

    @property
    def rounds(self) -> int:
        return len(self.ratios)

    @property
    def median(self) -> float:
        """The median ratio; NaN before the first round."""
        return statistics.median(self.ratios) if self.ratios else math.nan

    @property
    def interval(self) -> tuple[float, float] | None:
        """The :data:`CONFIDENCE` interval of the median ratio, or None with too few rounds for one."""
        return median_interval(self.ratios)

    @property
    def precise(self) -> bool:
        """Whether the interval lies within :data:`TOLERANCE` of the median (the timing stops there)."""
        interval = self.interval
        if interval is None:
            return False
        low, high = interval
        return low >= (1 - TOLERANCE) * self.median and high <= (1 + TOLERANCE) * self.median

    @property
    def verdict(self) -> str:
        """:data:`FASTER` or :data:`SLOWER` when the ratio is known and clear of 1, else why not."""
        if not self.precise:
            return TOO_NOISY
        low, high = self.interval or (math.nan, math.nan)
        if low > 1:
            return FASTER
        if high < 1:
            return SLOWER
        return TOO_CLOSE
