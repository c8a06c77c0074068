"""The one interface every variant implements, and the value that crosses it.

A variant decides only *where and when* :func:`apps.core.delivery.deliver` runs: never
(baseline), inline (sync), in a new thread (threaded), in a task consumer (queued) or in a
relay that reads rows written with the account (outbox).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


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
    """Delivery failed. ``code`` is the SMTP reply code when the server gave one."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


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
    """Thread-safe counters shared by the variants, reported through ``stats()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.dispatched = 0
        self.delivered = 0
        self.failed = 0
        self.in_flight = 0

    def started(self) -> None:
        with self._lock:
            self.dispatched += 1
            self.in_flight += 1

    def finished(self, ok: bool) -> None:
        with self._lock:
            self.in_flight -= 1
            if ok:
                self.delivered += 1
            else:
                self.failed += 1

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {
                "emails_dispatched_total": self.dispatched,
                "emails_delivered_total": self.delivered,
                "emails_failed_total": self.failed,
                "emails_in_flight": self.in_flight,
                "live_threads": threading.active_count(),
                "queue_depth": 0,
            }
