"""Cumulative Prometheus histograms as plain values: differences between scrapes and their quantiles."""

from __future__ import annotations

import bisect
from dataclasses import dataclass


@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram: cumulative counts per upper bound (ascending), then the +Inf total."""

    bounds: tuple[float, ...]
    cumulative_counts: tuple[float, ...]  # len(bounds) + 1; the last entry is the +Inf bucket (= count)
    sum_seconds: float = 0.0  # the _sum series (named for the latency histograms it carries here)

    def __post_init__(self) -> None:
        if len(self.cumulative_counts) != len(self.bounds) + 1:
            raise ValueError("a histogram needs one cumulative count per bound plus the +Inf bucket")

    @property
    def count(self) -> float:
        return self.cumulative_counts[-1]

    @property
    def mean(self) -> float | None:
        return self.sum_seconds / self.count if self.count > 0 else None

    @classmethod
    def empty(cls, bounds: tuple[float, ...]) -> Histogram:
        return cls(bounds, (0.0,) * (len(bounds) + 1), 0.0)

    @classmethod
    def of(cls, bounds: tuple[float, ...], values: list[float]) -> Histogram:
        """A histogram of raw observations (tests and the fleet simulator build them this way)."""
        per_bucket = [0.0] * (len(bounds) + 1)
        for value in values:
            per_bucket[bisect.bisect_left(bounds, value)] += 1
        running, cumulative = 0.0, []
        for n in per_bucket:
            running += n
            cumulative.append(running)
        return cls(bounds, tuple(cumulative), float(sum(values)))

    def minus(self, earlier: Histogram) -> Histogram | None:
        """Observations made since `earlier`; None when the series was reset (engine restart) in between."""
        if earlier.bounds != self.bounds:
            return None
        counts = tuple(a - b for a, b in zip(self.cumulative_counts, earlier.cumulative_counts, strict=True))
        if any(c < 0 for c in counts):
            return None
        return Histogram(self.bounds, counts, max(0.0, self.sum_seconds - earlier.sum_seconds))

    def plus(self, other: Histogram) -> Histogram:
        if other.bounds != self.bounds:
            raise ValueError("histograms with different bucket bounds cannot be added")
        counts = tuple(a + b for a, b in zip(self.cumulative_counts, other.cumulative_counts, strict=True))
        return Histogram(self.bounds, counts, self.sum_seconds + other.sum_seconds)

    def quantile(self, q: float) -> float | None:
        """PromQL's histogram_quantile: linear interpolation inside the bucket that holds rank q·count.

        A rank in the +Inf bucket answers the highest finite bound (all that is known is "above it").
        """
        if not 0 <= q <= 1:
            raise ValueError("quantile must be within [0, 1]")
        total = self.count
        if total <= 0:
            return None
        rank = q * total
        index = bisect.bisect_left(self.cumulative_counts, rank)
        if index >= len(self.bounds):
            return self.bounds[-1] if self.bounds else None
        lower = self.bounds[index - 1] if index > 0 else 0.0
        below = self.cumulative_counts[index - 1] if index > 0 else 0.0
        in_bucket = self.cumulative_counts[index] - below
        if in_bucket <= 0:
            return self.bounds[index]
        return lower + (self.bounds[index] - lower) * (rank - below) / in_bucket


@dataclass(frozen=True)
class QuantileSummary:
    """A window's latency as Prometheus answers it (histogram_quantile, increase of _count and _sum): the
    count, the mean and the quantiles asked for, without the buckets. Answers what the demand model asks of
    a `Histogram` (count, mean, quantile)."""

    count: float
    mean: float | None
    quantiles: tuple[tuple[float, float], ...] = ()  # (q, value)

    def quantile(self, q: float) -> float | None:
        for asked, value in self.quantiles:
            if abs(asked - q) < 1e-9:
                return value
        return None
