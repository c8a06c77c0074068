"""The consumer side of ``queued``: a Huey consumer with counters and a tuned poll delay."""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask
from huey import signals
from huey.consumer import Consumer

from apps.queued.mailer import QueuedMailer


class WorkerStats:
    """What the consumer did, counted from Huey's signals; read by the worker's /metrics."""

    name = "queued-worker"

    def __init__(self, mailer: QueuedMailer) -> None:
        self.mailer = mailer
        self._lock = threading.Lock()
        self.executing = 0
        self.delivered = 0
        self.failed = 0
        self.retried = 0
        mailer.huey.signal()(self._on_signal)

    def _on_signal(self, signal: str, task: Any, exc: BaseException | None = None) -> None:
        with self._lock:
            if signal == signals.SIGNAL_EXECUTING:
                self.executing += 1
            elif signal == signals.SIGNAL_COMPLETE:
                self.executing -= 1
                self.delivered += 1
            elif signal == signals.SIGNAL_ERROR:
                self.executing -= 1
                if not task.retries:
                    self.failed += 1
            elif signal == signals.SIGNAL_CANCELED:
                self.executing -= 1
                self.failed += 1
            elif signal == signals.SIGNAL_RETRYING:
                self.retried += 1

    def stats(self) -> dict[str, float]:
        with self._lock:
            stats: dict[str, float] = {
                "emails_delivered_total": self.delivered,
                "emails_failed_total": self.failed,
                "emails_retried_total": self.retried,
                "emails_in_flight": self.executing,
            }
        stats["live_threads"] = threading.active_count()
        try:
            stats["queue_depth"] = self.mailer.queue_depth()
        except Exception:  # the queue is down; the consumer logs that itself
            pass
        return stats


def build_consumer(app: Flask, threads: int | None = None) -> tuple[Consumer, WorkerStats]:
    """A consumer (not started) for ``app``'s queue, and the stats it will count into.

    Raises :class:`TypeError` if ``app`` is not a ``queued`` app. It raises no configuration
    error of its own: it reuses the Huey that ``create_app`` built, so a bad
    ``MAILLAB_QUEUE_URL`` has already failed there (a ``ConfigError``), and every setting it
    reads was checked there too.
    """
    mailer = app.extensions["mailer"]
    if not isinstance(mailer, QueuedMailer):
        raise TypeError("the worker needs an app built with the 'queued' variant")
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
