"""The consumer side of ``celery``: a Celery worker in this process, counted into /metrics.

The worker runs Celery's ``threads`` pool (as queued's Huey consumer runs threads), so the
process the lab kills is the one that holds every running task: a SIGKILL ends them all at
once, and what comes back depends on the acknowledgement setting and the broker.
``task_reject_on_worker_lost`` is set with late acks, as Celery's guide advises, but it acts
on a prefork child that dies under a living parent, which a threads pool has not.

SIGTERM and SIGINT are Celery's warm shutdown (running tasks finish, nothing more is taken);
Celery 5.5's soft shutdown is left at its default (off).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import warnings
from collections.abc import Callable
from typing import Any

from celery import signals
from celery.exceptions import SecurityWarning
from flask import Flask

from apps.celery.mailer import QUEUE_NAME, CeleryMailer
from apps.core.config import ConfigError
from apps.core.mailer import ConsumerCounters, DeliveryError
from apps.queued.queue import reason, shown

TRACE_LOGGER = "celery.app.trace"  # where Celery logs a task that raised, with a traceback


class WorkerStats:
    """What the worker did, counted from Celery's signals; read by its /metrics.

    ``queue_depth`` is every email not yet settled: ready in the broker, held by this worker
    (prefetched, or waiting for a retry's countdown, which Celery keeps in the worker), and on
    Redis the unacknowledged tasks a dead worker left behind, which come back only after the
    visibility timeout. The drain after a cell waits on it, so a task that is due back is
    waited for rather than counted lost too early.
    """

    name = "celery-worker"

    def __init__(self, mailer: CeleryMailer) -> None:
        self.mailer = mailer
        self.counters = ConsumerCounters()
        self._lock = threading.Lock()
        self.received = 0  # tasks this worker took from the broker
        self.settled = 0  # ... and finished running (delivered, failed, or retried anew)
        handlers: dict[Any, Callable[..., None]] = {
            signals.task_received: self._received,
            signals.task_prerun: lambda **_: self.counters.started(),
            signals.task_success: lambda **_: self.counters.finished("delivered"),
            signals.task_retry: lambda **_: self.counters.finished("retried"),
            signals.task_failure: lambda **_: self.counters.finished("failed"),
            signals.task_postrun: self._settled,
            signals.task_revoked: self._settled,
            signals.task_rejected: self._settled,
        }
        for signal, handler in handlers.items():
            signal.connect(handler, weak=False)

    def _received(self, **_: Any) -> None:
        with self._lock:
            self.received += 1

    def _settled(self, **_: Any) -> None:
        with self._lock:
            self.settled += 1

    def held(self) -> int:
        with self._lock:
            return self.received - self.settled

    def queue_depth(self) -> int:
        depth = broker_depth(self.mailer)
        if self.mailer.url.startswith("redis"):
            # The broker's count has every unacknowledged task; an early-acked one that is
            # running has left it.
            return depth + (self.counters.executing if self.mailer.acks == "early" else 0)
        return depth + self.held()  # RabbitMQ counts only the ready ones

    def stats(self) -> dict[str, float]:
        return self.counters.snapshot(self.queue_depth)


def broker_depth(mailer: CeleryMailer) -> int:
    """Tasks in the broker not held by a live worker: ready ones, and on Redis the
    unacknowledged ones (held by this worker or left by a dead one) as well."""
    celery = mailer.celery
    with celery.connection_for_read() as connection:
        connection.ensure_connection(max_retries=1, timeout=2)
        channel = connection.default_channel
        if mailer.url.startswith("redis"):
            client = channel.client
            # kombu's Redis transport keeps delivered, unacknowledged tasks in this hash
            # (its documented ``unacked_key`` transport option).
            return int(client.llen(QUEUE_NAME)) + int(client.hlen(channel.unacked_key))
        try:
            return int(channel.queue_declare(QUEUE_NAME, passive=True).message_count)
        except connection.channel_errors:  # not declared yet: no worker has started
            return 0


def check_reachable(mailer: CeleryMailer) -> None:
    """Raise ConfigError naming MAILLAB_CELERY_BROKER_URL (password hidden) if the broker is
    down."""
    try:
        broker_depth(mailer)
    except Exception as exc:  # kombu, amqp and redis each raise their own connection errors
        raise ConfigError(f"MAILLAB_CELERY_BROKER_URL {shown(mailer.url)}: cannot reach the "
                          f"broker: {reason(exc)}") from None


class _DeliveryErrorFilter(logging.Filter):
    """Drops the traceback of Celery's "Task ... raised unexpected" record when the task failed
    to deliver: the mailer has logged that as one line naming the email and the SMTP error."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, DeliveryError):
            record.exc_info = None
            record.exc_text = None
        return True


def build_worker(app: Flask, threads: int, on_ready: Callable[[], None],
                 loglevel: str = "WARNING") -> tuple[Any, WorkerStats]:
    """A Celery worker (not started) for ``app``'s broker, and the stats it counts into.

    Raises :class:`TypeError` if ``app`` is not a ``celery`` app, ``ConfigError`` if its broker
    cannot be reached now.
    """
    mailer = app.extensions["mailer"]
    if not isinstance(mailer, CeleryMailer):
        raise TypeError("the Celery worker needs an app built with the 'celery' variant")
    check_reachable(mailer)
    logger = logging.getLogger(TRACE_LOGGER)
    if not any(isinstance(f, _DeliveryErrorFilter) for f in logger.filters):
        logger.addFilter(_DeliveryErrorFilter())
    # Celery warns a worker run as root that pickle could run code from the broker; this one
    # accepts JSON only (make_celery), and the lab's CI runs as root.
    warnings.filterwarnings("ignore", category=SecurityWarning)
    stats = WorkerStats(mailer)
    signals.worker_ready.connect(lambda **_: on_ready(), weak=False)
    worker = mailer.celery.Worker(
        pool="threads", concurrency=threads, loglevel=loglevel, quiet=True,
        hostname=f"maillab-{os.getpid()}@{socket.gethostname()}",
        without_gossip=True, without_mingle=True, without_heartbeat=True,
        queues=[QUEUE_NAME])
    return worker, stats
