"""The consumer side of ``queued``: a Huey consumer with counters and a tuned poll delay."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from huey import signals
from huey.consumer import Consumer

from apps.core.config import ConfigError
from apps.core.mailer import ConsumerCounters, DeliveryError
from apps.queued.mailer import QueuedMailer
from apps.queued.queue import queue_errors, reason, shown
from apps.queued.throttle import LOG_INTERVAL, Throttle

QUEUE_ERROR = "Error reading from queue"  # what Huey's worker logs when the queue is down
TASK_ERROR = "Unhandled exception in task"  # what Huey logs, with a traceback, when a task raises


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
    _filter_once("huey.consumer", QueueErrorThrottle)
    _filter_once("huey", DeliveryErrorFilter)
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


def _filter_once(name: str, kind: type[logging.Filter]) -> None:
    """Add a ``kind`` filter to the logger ``name`` unless it has one: loggers live as long as
    the process, consumers may be built more than once."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, kind) for f in logger.filters):
        logger.addFilter(kind())


def check_reachable(mailer: QueuedMailer, url: str) -> None:
    """Raise ConfigError naming MAILLAB_QUEUE_URL (password hidden) if the queue is down."""
    try:
        mailer.queue_depth()
    except queue_errors() as exc:
        raise ConfigError(f"MAILLAB_QUEUE_URL {shown(url)}: cannot reach the queue: "
                          f"{reason(exc)}") from None


class QueueErrorThrottle(Throttle, logging.Filter):
    """Lets Huey's "Error reading from queue" through once per ``interval`` seconds, the
    first with its traceback and the rest as one line with how many were held back.

    Each of the consumer's threads retries every few milliseconds (the poll delay is short so
    that pick-up is fast), so a queue that goes away would otherwise write thousands of
    tracebacks a second. Huey has no setting for this; a filter on its logger is the seam.
    """

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        logging.Filter.__init__(self)
        Throttle.__init__(self, interval)
        self._first = True

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith(QUEUE_ERROR):
            return True
        held = self.due()
        if held is None:
            return False
        # due() lets one thread through per interval, so _first needs no lock of its own.
        if self._first:
            self._first = False
            return True
        error = record.exc_info[1] if record.exc_info else None
        record.msg = (f"{QUEUE_ERROR}: {error!s:.200} ({held} more in the last "
                      f"{self.interval:g} s; retrying)")
        record.args = ()
        record.exc_info = None
        return True


class DeliveryErrorFilter(logging.Filter):
    """Drops Huey's "Unhandled exception in task" record, traceback and all, when the task
    failed to deliver: :class:`QueuedMailer` has logged that as one line naming the email and
    the SMTP error, and it is an outcome the retries handle, not a bug. Any other exception
    keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, DeliveryError) and record.getMessage().startswith(TASK_ERROR))
