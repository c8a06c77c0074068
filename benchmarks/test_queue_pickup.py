"""How long an idle Huey consumer takes to pick up a task on the SQLite queue.

Huey's consumer polls an empty SQLite queue with a delay that starts at 0.1 s and grows
x1.15 per empty poll up to 10 s, so after a quiet spell a new task waits a sizeable fraction
of a second (seconds, after a minute of quiet) before it is even read. That delay would
dominate time to inbox. This benchmark measures pick-up after ``IDLE`` seconds of quiet with
Huey's defaults and with maillab's settings (``WORKER_POLL_DELAY``/``WORKER_MAX_POLL_DELAY``).
"""

from __future__ import annotations

import inspect
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from huey import SqliteHuey, signals
from huey.consumer import Consumer

from apps.core.config import DEFAULTS

IDLE = 3.0
# Huey's own defaults, read from its Consumer rather than copied here.
_HUEY = inspect.signature(Consumer).parameters
SETTINGS = {
    "huey-default": {k: _HUEY[k].default for k in ("initial_delay", "backoff", "max_delay")},
    "maillab": {"initial_delay": DEFAULTS["WORKER_POLL_DELAY"],
                "max_delay": DEFAULTS["WORKER_MAX_POLL_DELAY"]},
}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_pickup_after_idle(benchmark: Any, name: str, tmp_path: Path) -> None:
    huey = SqliteHuey("pickup", filename=str(tmp_path / "q.db"), results=False)
    picked = threading.Event()

    @huey.task()
    def noop() -> None:
        return None

    @huey.signal(signals.SIGNAL_EXECUTING)
    def on_executing(_signal: str, _task: Any) -> None:
        picked.set()

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    consumer = huey.create_consumer(workers=1, worker_type="thread", periodic=False,
                                    **SETTINGS[name])
    consumer.start()

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        picked.clear()
        time.sleep(IDLE)  # let the consumer's poll delay grow, as between bursts of sign-ups
        return (), {}

    def enqueue_and_wait() -> None:
        noop()
        assert picked.wait(30), "task never picked up"

    try:
        benchmark.group = f"queue pick-up after {IDLE:g} s idle (SQLite)"
        benchmark.pedantic(enqueue_and_wait, setup=setup, rounds=5, iterations=1)
    finally:
        consumer.stop(graceful=True)
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    benchmark.extra_info["median_ms"] = benchmark.stats.stats.median * 1000
    if name == "maillab":
        assert benchmark.stats.stats.median < SETTINGS[name]["max_delay"] + 0.05
