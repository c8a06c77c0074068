"""The consumer side of ``queued``: a Huey consumer with counters and a tuned poll delay."""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from typing import Any

from flask import Flask
from huey import signals
from huey.consumer import Consumer

from apps.core.config import ConfigError
from apps.core.mailer import ConsumerCounters
from apps.queued.mailer import QueuedMailer
from apps.queued.queue import shown

QUEUE_ERROR = "Error reading from queue"  # what Huey's worker logs when the queue is down


class WorkerStats:
    """What the consumer did, counted from Huey's signals; read by the worker's /metrics."""

    name = "queued-worker"

    def __init__(self, mailer: QueuedMailer) -> None:
        self.mailer = mailer
        self.counters = ConsumerCounters()
        mailer.huey.signal()(self._on_signal)

    def _on_signal(self, signal: str, task: Any, exc: BaseException | None = None) -> None:
        counters = self.counters
        if signal == signals.SIGNAL_EXECUTING:
            counters.started()
        elif signal == signals.SIGNAL_COMPLETE:
            counters.finished("delivered")
        elif signal == signals.SIGNAL_ERROR:  # a retry, if any is left, is signalled next
            counters.finished(None if task.retries else "failed")
        elif signal == signals.SIGNAL_CANCELED:
            counters.finished("failed")
        elif signal == signals.SIGNAL_RETRYING:
            counters.count("retried")

    def stats(self) -> dict[str, float]:
        return self.counters.snapshot(self.mailer.queue_depth)


def build_consumer(app: Flask, threads: int | None = None) -> tuple[Consumer, WorkerStats]:
    """A consumer (not started) for ``app``'s queue, and the stats it will count into.

    Raises :class:`TypeError` if ``app`` is not a ``queued`` app, and ``ConfigError`` if the
    queue cannot be reached now (``create_app`` only parses a Redis URL; Huey connects on
    first use).
    """
    mailer = app.extensions["mailer"]
    if not isinstance(mailer, QueuedMailer):
        raise TypeError("the worker needs an app built with the 'queued' variant")
    check_reachable(mailer, app.config["QUEUE_URL"])
    huey_log = logging.getLogger("huey.consumer")
    if not any(isinstance(f, QueueErrorThrottle) for f in huey_log.filters):  # once a process
        huey_log.addFilter(QueueErrorThrottle())
    stats = WorkerStats(mailer)
    cfg = app.config
    consumer = mailer.huey.create_consumer(
        workers=threads or cfg["WORKER_THREADS"],
        worker_type="thread",
        periodic=False,
        initial_delay=cfg["WORKER_POLL_DELAY"],
        max_delay=cfg["WORKER_MAX_POLL_DELAY"],
    )
    return consumer, stats


def _queue_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (OSError, sqlite3.Error)
    try:
        from redis.exceptions import RedisError
    except ImportError:  # the redis extra is not installed: no Redis queue to fail
        return errors
    return (*errors, RedisError)


def check_reachable(mailer: QueuedMailer, url: str) -> None:
    """Raise ConfigError naming MAILLAB_QUEUE_URL (password hidden) if the queue is down."""
    try:
        mailer.queue_depth()
    except _queue_errors() as exc:
        raise ConfigError(f"MAILLAB_QUEUE_URL {shown(url)}: cannot reach the queue: "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                          ) from None


class QueueErrorThrottle(logging.Filter):
    """Lets Huey's "Error reading from queue" through once per ``interval`` seconds, the
    first with its traceback and the rest as one line with how many were held back.

    Each of the consumer's threads retries every few milliseconds (the poll delay is short so
    that pick-up is fast), so a queue that goes away would otherwise write thousands of
    tracebacks a second. Huey has no setting for this; a filter on its logger is the seam.
    """

    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self.interval = interval
        self._lock = threading.Lock()
        self._last = -math.inf  # the first error always passes, however new the machine
        self._held = 0
        self._first = True

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith(QUEUE_ERROR):
            return True
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.interval:
                self._held += 1
                return False
            self._last = now
            if not self._first:
                error = record.exc_info[1] if record.exc_info else None
                record.msg = (f"{QUEUE_ERROR}: {error!s:.200} ({self._held} more in the last "
                              f"{self.interval:g} s; retrying)")
                record.args = ()
                record.exc_info = None
            self._first, self._held = False, 0
        return True
