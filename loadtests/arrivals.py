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


def schedule(rate: float, kind: str = "constant", seed: int = 1) -> Iterator[float]:
    """Endless arrival offsets (seconds) at ``rate`` per second."""
    if not rate > 0:
        raise ValueError(f"rate must be above 0 sign-ups per second, got {rate!r}")
    if kind not in KINDS:
        raise ValueError(f"arrivals must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "constant":
        return (i / rate for i in itertools.count())
    rng = random.Random(seed)
    return itertools.accumulate(rng.expovariate(rate) for _ in itertools.count())
