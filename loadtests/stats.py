"""Exact percentiles and the INP rating: the one definition every figure of a run uses.

Percentiles use the nearest-rank method on the sorted samples (the value below which p% of
samples fall, always an observed value), so they can be recomputed from the kept samples and
never depend on locust's rounded histogram. The gate's medians are the same p50.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

GOOD_MS = 200.0
POOR_MS = 500.0
Rating = Literal["good", "needs-improvement", "poor"]


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None when there are none."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def median(values: Sequence[float]) -> float | None:
    """The nearest-rank p50 of unsorted values: results.json's p50, used by the gate too."""
    return percentile(sorted(values), 50)


def inp_rating(p75_ms: float | None) -> Rating | None:
    """Rated at p75 like INP: good <= 200 ms, poor > 500 ms, needs improvement between."""
    if p75_ms is None:
        return None
    if p75_ms <= GOOD_MS:
        return "good"
    if p75_ms > POOR_MS:
        return "poor"
    return "needs-improvement"
