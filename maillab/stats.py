"""Exact percentiles and per-measurement summaries, computed from every sample.

Percentiles use the nearest-rank method on the sorted samples (the value below which p% of
samples fall, always an observed value), so they can be recomputed from the kept samples and
never depend on locust's rounded histogram.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None when there are none."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def request_summary(times_ms: Sequence[float], failures: int, duration_s: float) -> dict:
    """The schema's block for a request kind: successful samples' times, failures counted."""
    values = sorted(times_ms)
    return {
        "count": len(values),
        "failures": failures,
        "rps": round(len(values) / duration_s, 3) if duration_s > 0 else 0.0,
        "p50_ms": _ms(percentile(values, 50)),
        "p75_ms": _ms(percentile(values, 75)),
        "p95_ms": _ms(percentile(values, 95)),
        "p99_ms": _ms(percentile(values, 99)),
        "max_ms": _ms(values[-1] if values else None),
    }


def inbox_summary(times_ms: Sequence[float], failures: int) -> dict:
    values = sorted(times_ms)
    return {
        "count": len(values),
        "failures": failures,
        "p50_ms": _ms(percentile(values, 50)),
        "p95_ms": _ms(percentile(values, 95)),
        "p99_ms": _ms(percentile(values, 99)),
    }


GOOD_MS = 200.0
POOR_MS = 500.0


def inp_rating(p75_ms: float | None) -> str | None:
    """Rated at p75 like INP: good <= 200 ms, poor > 500 ms, needs improvement between."""
    if p75_ms is None:
        return None
    if p75_ms <= GOOD_MS:
        return "good"
    if p75_ms > POOR_MS:
        return "poor"
    return "needs-improvement"
