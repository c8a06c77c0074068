"""The one interface every variant implements, and the value that crosses it.

A variant decides only *where and when* :func:`apps.core.delivery.deliver` runs: never
(baseline), inline (sync), in a new thread (threaded), in a task consumer (queued) or in a
relay that reads rows written with the account (outbox).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from apps.core.metrics import AppMetrics


@dataclass(frozen=True)
class Email:
    """A composed email as a plain value: it crosses threads, processes and queues.

    ``id`` is a correlation id, also sent as the ``X-Maillab-Id`` header, so the SMTP
    capture can be matched to the registration that caused it.
    """

    id: str
    to: str
    subject: str
    text: str
    html: str | None = None


class DeliveryError(Exception):
    """Delivery failed. ``code`` is the SMTP reply code when the server gave one. ``logged``:
    whoever raised it has logged the cause already, so the caller need not log it again (a
    failure every email shares, such as a queue that is down, is logged once per interval,
    not once per email)."""

    def __init__(self, message: str, code: int | None = None, *, logged: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.logged = logged


class TransientDeliveryError(DeliveryError):
    """A 4xx reply, a timeout or a dropped connection: trying again later may succeed."""


class PermanentDeliveryError(DeliveryError):
    """A 5xx reply: the same email will be refused again, so retrying is pointless."""


@runtime_checkable
class Mailer(Protocol):
    """What a variant implements: at least ``name``, ``dispatch`` and ``stats``.

    A variant may also have ``stage(session, email)``: called inside the request's
    transaction, before the commit, so the email can be written with the account (the
    outbox). ``dispatch`` is called inside the request that caused the email, after the user
    row is committed. It returns when the variant considers the email handed off; it raises
    :class:`DeliveryError` only if the variant delivers inline and delivery failed.
    ``stats`` is read by ``/metrics`` and must be cheap and thread-safe.
    """

    name: str

    def dispatch(self, email: Email) -> None: ...

    def stats(self) -> dict[str, float]: ...


class MailerCounters:
    """What a web app's mailer did, kept in :class:`apps.core.metrics.AppMetrics` (so a
    scrape of a multi-process server sums every worker), read back through ``snapshot()``
    as this process's view. ``delivers``: False for a variant whose delivery happens in
    another process (queued, outbox), which then reports no delivered count of its own."""

    def __init__(self, variant: str, delivers: bool = True) -> None:
        self.metrics = AppMetrics(variant, delivers)
        self.delivers = delivers

    def started(self) -> None:
        self.metrics.inc("emails_dispatched_total")
        self.metrics.inc("emails_in_flight")
        self.metrics.set("live_threads", threading.active_count())

    def finished(self, ok: bool) -> None:
        self.metrics.dec("emails_in_flight")
        if not ok:
            self.metrics.inc("emails_failed_total")
        elif self.delivers:
            self.metrics.inc("emails_delivered_total")
        self.metrics.set("live_threads", threading.active_count())

    def snapshot(self) -> dict[str, float]:
        stats = {key: self.metrics.value(key) for key in self.metrics.families}
        stats["live_threads"] = threading.active_count()
        stats["queue_depth"] = 0
        return stats


class ConsumerCounters:
    """What a process that delivers email outside the app (queued's worker, outbox's relay)
    did, thread-safe, reported through ``snapshot()`` in :data:`apps.core.metrics.METRICS`'s
    keys."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.executing = 0
        self.delivered = 0
        self.failed = 0
        self.retried = 0

    def started(self) -> None:
        with self._lock:
            self.executing += 1

    def finished(self, outcome: str | None) -> None:
        """One send ended: "delivered", "failed" (for good), "retried" (scheduled for another
        try), or None (ended, counted elsewhere)."""
        with self._lock:
            self.executing -= 1
            self._count(outcome)

    def count(self, outcome: str) -> None:
        with self._lock:
            self._count(outcome)

    def _count(self, outcome: str | None) -> None:
        if outcome == "delivered":
            self.delivered += 1
        elif outcome == "failed":
            self.failed += 1
        elif outcome == "retried":
            self.retried += 1

    def snapshot(self, depth: Callable[[], int]) -> dict[str, float]:
        """The counters, live threads and ``depth()`` (left out if the queue or store cannot
        answer now: the process logs that itself, and /metrics must still answer)."""
        with self._lock:
            stats: dict[str, float] = {
                "emails_delivered_total": self.delivered,
                "emails_failed_total": self.failed,
                "emails_retried_total": self.retried,
                "emails_in_flight": self.executing,
            }
        stats["live_threads"] = threading.active_count()
        try:
            stats["queue_depth"] = depth()
        except Exception:  # noqa: BLE001 - any failure to count means "unknown", not zero
            pass
        return stats
