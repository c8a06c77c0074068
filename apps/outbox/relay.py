"""``maillab relay``: delivers the outbox's rows, at least once.

Each pass claims the due rows it has threads for with a lease (on PostgreSQL with
``FOR UPDATE SKIP LOCKED``, so several relays share the work and never hold the same row; on
SQLite the claim is one UPDATE ... RETURNING, which the single writer makes atomic), delivers
them with the shared :func:`apps.core.delivery.deliver` on a thread pool, and marks each sent.
A transient failure is tried again later with exponential backoff (the queued variant's
``MAILLAB_QUEUE_RETRIES`` / ``_RETRY_DELAY`` / ``_RETRY_BACKOFF``, so the two retry alike); a
permanent one is marked failed with the server's reply. While a row is being sent its lease
is renewed (:mod:`apps.outbox.lease`), however long the SMTP server takes; a row whose lease
ran out (its relay died mid-send) is claimed again. Between passes with nothing due it sleeps
``MAILLAB_OUTBOX_POLL_DELAY``; a cheap read decides whether to claim, so an idle relay does
not take the store's write lock. On PostgreSQL it LISTENs instead: the app's commit NOTIFYs,
and a slow poll (``LISTEN_POLL_S``) still catches retries coming due.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Flask
from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from apps.core.delivery import deliver
from apps.core.mailer import (
    ConsumerCounters,
    Email,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from apps.outbox.lease import Lease, Leases
from apps.outbox.mailer import CHANNEL, OutboxMailer, pending_count
from apps.outbox.models import OutboxRow

log = logging.getLogger(__name__)

LISTEN_POLL_S = 0.5  # with LISTEN/NOTIFY, how often to look anyway (retries coming due)
STOP_CHECK_S = 0.25  # while listening, how often to see whether the relay was told to stop
STORE_ERROR_INTERVAL = 10.0  # seconds between two log lines about an unreachable store
_PENDING = (OutboxRow.sent_at.is_(None), OutboxRow.failed_at.is_(None))


class Relay:
    """Claims and delivers outbox rows until :meth:`stop`; then finishes what it claimed."""

    name = "outbox-relay"

    def __init__(self, app: Flask, threads: int | None = None, name: str | None = None) -> None:
        if not isinstance(app.extensions.get("mailer"), OutboxMailer):
            raise TypeError("the relay needs an app built with the 'outbox' variant")
        cfg = app.config
        # The lease is not required to exceed MAILLAB_SMTP_TIMEOUT: that timeout bounds each
        # socket read, not a send (a server may take it on each of MAIL, RCPT, DATA and the
        # final dot), so no such rule kept a slow send's row. The heartbeat renews the lease
        # while the send goes on; the lease only says how soon a dead relay's rows are taken
        # again. A server that stalls forever now holds one thread here, not one on each relay.
        self.app = app
        self.sessions = app.extensions["maillab.db"].sessions
        self.threads = threads or cfg["WORKER_THREADS"]
        self.poll_delay = cfg["OUTBOX_POLL_DELAY"]
        self.lease = cfg["OUTBOX_LEASE"]
        self.retries = cfg["QUEUE_RETRIES"]
        self.retry_delay = cfg["QUEUE_RETRY_DELAY"]
        self.backoff = cfg["QUEUE_RETRY_BACKOFF"]
        # Whose lease a row is under. A stable name (a process manager's unit or pod name)
        # lets a restarted relay take back at once what its dead predecessor held, instead
        # of waiting out the lease; it must be unique among the relays alive at one time.
        self.owner = name or f"{socket.gethostname()}:{os.getpid()}"
        self.leases = Leases(self.sessions, self.lease)
        self._stopping = threading.Event()
        self._idle = threading.Semaphore(self.threads)
        self.counters = ConsumerCounters()
        self._last_error = -math.inf
        self.idle_waits = 0  # times it found nothing to do and waited

    # -- the loop -----------------------------------------------------------------------------

    def take_back(self) -> int:
        """Release the leases held under this relay's name (its previous run died holding
        them), so they are claimed again now; returns how many. Only for a stable name."""
        with self.sessions() as session:
            result = session.execute(
                update(OutboxRow).where(*_PENDING, OutboxRow.claimed_by == self.owner,
                                        OutboxRow.lease_until.is_not(None))
                .values(lease_until=None).execution_options(synchronize_session=False))
            session.commit()
        return int(result.rowcount)  # type: ignore[attr-defined]

    def run(self) -> None:
        listener = _Listener.open(self.app) if self._on_postgresql() else None
        self.leases.start()
        try:
            self._loop(listener)
        finally:
            self.leases.stop()  # after _loop: it returns once every claimed row's send ended
            if listener is not None:
                listener.close()

    def _on_postgresql(self) -> bool:
        return bool(self.app.extensions["maillab.db"].engine.dialect.name == "postgresql")

    def _wait_for_work(self, listener: _Listener | None) -> None:
        """Wait for work: a NOTIFY (or the slow poll) on PostgreSQL, the poll delay else."""
        self.idle_waits += 1
        if listener is None:
            self._stopping.wait(self.poll_delay)
        else:
            listener.wait(LISTEN_POLL_S, self._stopping)

    def _loop(self, listener: _Listener | None) -> None:
        with ThreadPoolExecutor(self.threads, thread_name_prefix="relay") as pool:
            while not self._stopping.is_set():
                free = self._take_free()
                if not free:
                    self._stopping.wait(self.poll_delay)
                    continue
                try:
                    rows = self.claim(free) if self._anything_due() else []
                except SQLAlchemyError as exc:  # the store is away: say so, keep trying
                    self._store_error(exc)
                    rows = []
                for _ in range(free - len(rows)):
                    self._idle.release()
                for row in rows:
                    lease = self.leases.hold(row["id"], self.owner, row["lease_until"])
                    pool.submit(self._send, row, lease)
                if not rows:
                    self._wait_for_work(listener)
        # Leaving the with-block waits for every claimed row: a graceful stop finishes them.

    def _store_error(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_error >= STORE_ERROR_INTERVAL:  # one line per interval, not per poll
            self._last_error = now
            log.error("cannot read the outbox, retrying: %s", str(exc).splitlines()[0])

    def stop(self) -> None:
        self._stopping.set()

    def _take_free(self) -> int:
        free = 0
        while self._idle.acquire(blocking=False):
            free += 1
        return free

    # -- the store ----------------------------------------------------------------------------

    def _anything_due(self) -> bool:
        now = time.time()
        with self.sessions() as session:
            return session.scalar(select(OutboxRow.id).where(*_PENDING, *_claimable(now))
                                  .limit(1)) is not None

    def claim(self, limit: int) -> list[dict[str, Any]]:
        """Lease up to ``limit`` due rows to this relay and return them."""
        now = time.time()
        due = (select(OutboxRow.id).where(*_PENDING, *_claimable(now))
               .order_by(OutboxRow.due_at).limit(limit).with_for_update(skip_locked=True))
        claim = (update(OutboxRow).where(OutboxRow.id.in_(due.scalar_subquery()))
                 .values(lease_until=now + self.lease, claimed_by=self.owner)
                 .returning(OutboxRow.id, OutboxRow.to, OutboxRow.subject, OutboxRow.text,
                            OutboxRow.html, OutboxRow.attempts, OutboxRow.lease_until)
                 .execution_options(synchronize_session=False))
        with self.sessions() as session:
            rows = [dict(row._mapping) for row in session.execute(claim)]
            session.commit()
        return rows

    # -- one row ------------------------------------------------------------------------------

    def _send(self, row: dict[str, Any], lease: Lease) -> None:
        self.counters.started()
        email = Email(id=row["id"], to=row["to"], subject=row["subject"], text=row["text"],
                      html=row["html"])
        outcome: str | None = "failed"
        try:
            with self.app.app_context():
                deliver(email)
            # Recorded even if another relay took the row meanwhile: it was delivered, and a
            # row left pending would be sent yet again should that relay's send fail.
            if not self.leases.settle(lease, {"sent_at": time.time()}, whoever_holds_it=True):
                log.warning("email %s to %s delivered after another relay took it: it may "
                            "arrive twice", email.id, email.to)
            outcome = "delivered"
        except PermanentDeliveryError as exc:
            log.error("email %s to %s refused for good: %s", email.id, email.to, exc)
            if not self._record(lease, failed_at=time.time(), last_error=str(exc)[:2000]):
                outcome = None
        except Exception as exc:  # transient, or a bug: either way the row is tried again
            if not isinstance(exc, TransientDeliveryError):
                log.exception("email %s: unexpected error while sending", email.id)
            try:
                outcome = self._retry_or_fail(email, lease, row["attempts"] + 1, exc)
            except SQLAlchemyError as store:
                outcome = None  # nothing recorded: the lease will run out
                log.error("email %s: could not record the failure (%s); its lease will run "
                          "out and it will be taken again", email.id, store)
        finally:
            self.leases.release(lease)  # recorded or not, this send no longer holds the row
            self.counters.finished(outcome)
            self._idle.release()

    def _retry_or_fail(self, email: Email, lease: Lease, attempts: int,
                       exc: BaseException) -> str | None:
        now = time.time()
        if attempts > self.retries:
            log.error("email %s to %s failed after %d attempts: %s", email.id, email.to,
                      attempts, exc)
            recorded = self._record(lease, attempts=attempts, failed_at=now,
                                    last_error=str(exc)[:2000])
            return "failed" if recorded else None
        wait = self.retry_delay * self.backoff ** (attempts - 1)
        log.warning("email %s to %s failed, trying again in %g s: %s", email.id, email.to,
                    wait, exc)
        recorded = self._record(lease, attempts=attempts, due_at=now + wait,
                                last_error=str(exc)[:2000])
        return "retried" if recorded else None

    def _record(self, lease: Lease, **values: Any) -> bool:
        """A failed send's outcome, recorded only while the row is this relay's: another
        relay that took it is sending it now, and releasing its lease (or pushing its
        due time) would let a third take it while that send goes on."""
        if self.leases.settle(lease, values):
            return True
        log.warning("email %s: not recording this failure, another relay took the row and "
                    "owns its outcome", lease.row_id)
        return False

    def stats(self) -> dict[str, float]:
        return self.counters.snapshot(lambda: pending_count(self.app))

def _claimable(now: float) -> tuple[Any, ...]:
    return (OutboxRow.due_at <= now,
            or_(OutboxRow.lease_until.is_(None), OutboxRow.lease_until < now))


class _Listener:
    """A connection of its own that LISTENs on the outbox's channel (PostgreSQL)."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.broken = False

    @classmethod
    def open(cls, app: Flask) -> _Listener | None:
        """None (the relay polls) if the listening connection cannot be made."""
        import psycopg

        url = app.extensions["maillab.db"].engine.url.set(drivername="postgresql")
        connection = None
        try:
            connection = psycopg.connect(url.render_as_string(hide_password=False),
                                         autocommit=True)
            connection.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as exc:
            if connection is not None:  # connected, but LISTEN failed: not left to the GC
                connection.close()
            log.warning("cannot LISTEN on PostgreSQL, polling instead: %s", exc)
            return None
        return cls(connection)

    def wait(self, timeout: float, stopping: threading.Event) -> None:
        """Until a notification arrives, ``timeout`` passes or ``stopping`` is set (looked at
        every ``STOP_CHECK_S``: waiting on the socket reads no table). If the connection
        broke, the timeout is waited out (the relay then polls every ``timeout``)."""
        import psycopg

        deadline = time.monotonic() + timeout
        while not stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                if list(self.connection.notifies(timeout=min(left, STOP_CHECK_S),
                                                 stop_after=1)):
                    return
            except psycopg.Error as exc:
                if not self.broken:
                    log.error("LISTEN connection lost, polling every %g s: %s", timeout, exc)
                self.broken = True
                stopping.wait(left)

    def close(self) -> None:
        self.connection.close()
