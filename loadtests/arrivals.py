"""When open-loop sign-ups should arrive: the schedule, apart from locust so it can be tested.

Offsets are seconds after the schedule's start. ``constant`` spaces arrivals 1/rate apart, as
k6's constant-arrival-rate does; ``poisson`` draws exponential gaps from a seeded generator,
so a run's arrival times can be reproduced exactly. Each offset is computed from the start,
not from the previous arrival's actual time, so a late start never shifts the rest.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

KINDS = ("constant", "poisson")
MAX_RATE = 10_000  # sign-ups per second; far past what one locust process keeps (see driver)


def valid_rate(rate: float) -> bool:
    """Above 0, finite and at most :data:`MAX_RATE`: a schedule that can be kept."""
    return 0 < rate <= MAX_RATE  # NaN fails every comparison, infinity the second


def schedule(rate: float, kind: str = "constant", seed: int = 1, index: int = 0,
             of: int = 1) -> Iterator[float]:
    """Endless arrival offsets (seconds) at ``rate`` per second; with ``of`` load processes,
    process ``index``'s share: every ``of``-th arrival of the one schedule from its
    ``index``-th, so the processes together keep exactly the schedule one process would."""
    if not 0 <= index < of:
        raise ValueError(f"load process {index!r} of {of!r}: the index must be 0..{of - 1}")
    return itertools.islice(_offsets(rate, kind, seed), index, None, of)


def _offsets(rate: float, kind: str, seed: int) -> Iterator[float]:
    if not valid_rate(rate):
        raise ValueError(f"rate must be above 0 sign-ups per second (at most {MAX_RATE}), "
                         f"got {rate!r}")
    if kind not in KINDS:
        raise ValueError(f"arrivals must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "constant":
        return (i / rate for i in itertools.count())
    rng = random.Random(seed)
    return itertools.accumulate(rng.expovariate(rate) for _ in itertools.count())
