"""One log line per interval for a failure that repeats, such as a queue that is down."""

from __future__ import annotations

import math
import threading
import time

LOG_INTERVAL = 10.0  # seconds between two lines about the same failure


class Throttle:
    """Says when a failure that repeats may be logged again: the first time, then at most once
    per ``interval`` seconds, counting the ones held back in between. Thread-safe.

    Many threads meet the same outage at once (every request, every consumer thread polling
    every few milliseconds); a line each would bury the log in copies of one fact.
    """

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._last = -math.inf  # the first always passes, however new the machine's clock
        self._held = 0

    def due(self) -> int | None:
        """None to hold this one back; else how many were held back since the last one."""
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.interval:
                self._held += 1
                return None
            held, self._last, self._held = self._held, now, 0
            return held

    def suffix(self, held: int) -> str:
        """What a line adds for the ones ``due`` held back before it."""
        return f" ({held} more in the last {self.interval:g} s)" if held else ""
