"""Leases on outbox rows, and the heartbeat that keeps a sending relay's leases alive.

A relay claims a row by writing its name in ``claimed_by`` and a time in ``lease_until``;
that pair is the relay's token for the row. While the relay sends, :class:`Leases` moves
``lease_until`` forward every third of the lease, and only while both still hold the values
it wrote (a compare-and-set), so the lease measures whether the relay is alive, not how long a
send takes: a send held for minutes by a tarpitting server keeps its row, and a relay that
died (SIGKILL, power) stops renewing and its rows are claimed again once the lease runs out.

The lease must still outlast one renewal interval plus the time the store takes to answer a
renewal; a store unreachable for longer than the lease lets another relay take a row that is
still being sent (the renewal then finds the row gone, says so, and stops renewing it).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from apps.outbox.models import OutboxRow

log = logging.getLogger(__name__)

# Three renewals per lease: one late or failed renewal (a busy store) still leaves two more
# before the lease runs out.
RENEWALS_PER_LEASE = 3


@dataclass(eq=False)
class Lease:
    """One claimed row: ``owner`` and ``until`` are the values this relay last wrote."""

    row_id: str
    owner: str
    until: float
    ended: bool = False  # settled, released or taken by another: renewed no more
    lock: threading.Lock = field(default_factory=threading.Lock)


class Leases:
    """The leases a relay holds, and the heartbeat thread (:meth:`start`) that renews them."""

    def __init__(self, sessions: sessionmaker[Session], length: float) -> None:
        self.sessions = sessions
        self.length = length
        self.interval = length / RENEWALS_PER_LEASE
        self._held: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False  # the last renewal pass could not reach the store

    def hold(self, row_id: str, owner: str, until: float) -> Lease:
        """Renew this claimed row's lease from now on, until it is settled or released."""
        lease = Lease(row_id, owner, until)
        with self._lock:
            self._held[row_id] = lease
        return lease

    def release(self, lease: Lease) -> None:
        """Stop renewing ``lease`` (its send is over, recorded or not)."""
        with lease.lock:
            lease.ended = True
        with self._lock:
            if self._held.get(lease.row_id) is lease:
                del self._held[lease.row_id]

    def held(self) -> list[Lease]:
        with self._lock:
            return list(self._held.values())

    # -- the heartbeat ------------------------------------------------------------------------

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._beat, name="relay-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing; called once every send has ended."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _beat(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.renew()
            except Exception:  # a bug must not end the heartbeat: every lease would lapse
                log.exception("renewing the outbox leases failed")

    def renew(self) -> int:
        """One pass: move every held lease forward; returns how many moved. A row that is
        no longer this relay's is logged and renewed no more."""
        renewed = 0
        try:
            with self.sessions() as session:
                for lease in self.held():
                    with lease.lock:
                        if not lease.ended:
                            renewed += self._renew(session, lease)
        except SQLAlchemyError as exc:
            if not self._failing:  # once per outage, not once per pass
                log.error("cannot renew the outbox leases, trying again every %g s: %s",
                          self.interval, str(exc).splitlines()[0])
            self._failing = True
            return renewed
        if self._failing:
            log.warning("renewing the outbox leases again")
            self._failing = False
        return renewed

    def _renew(self, session: Session, lease: Lease) -> int:
        now = time.time()
        until = session.scalar(
            update(OutboxRow).where(*_ours(lease)).values(lease_until=now + self.length)
            .returning(OutboxRow.lease_until).execution_options(synchronize_session=False))
        session.commit()  # row by row: a row lock is held for one statement, not the pass
        if until is None:
            lease.ended = True
            log.warning("email %s: the lease of %s was taken while it was still sending (%s); "
                        "the email may be delivered twice", lease.row_id, lease.owner,
                        _whose(session, lease.row_id))
            return 0
        if now > lease.until:
            log.warning("email %s: lease renewed %.3g s after it ran out (is the store slow?)",
                        lease.row_id, now - lease.until)
        lease.until = until  # the stored value, so the next compare-and-set matches it
        return 1

    # -- outcomes -----------------------------------------------------------------------------

    def settle(self, lease: Lease, values: dict[str, Any], *, whoever_holds_it: bool = False
               ) -> bool:
        """Record a send's outcome (``values``) and end the lease: only while the row is still
        this relay's (another relay that took it owns its outcome now), unless
        ``whoever_holds_it`` (a delivery happened, whoever holds the row now). Returns whether
        the row was still this relay's."""
        with lease.lock:
            lease.ended = True
            with self.sessions() as session:
                result = session.execute(
                    update(OutboxRow).where(*_ours(lease)).values(lease_until=None, **values)
                    .execution_options(synchronize_session=False))
                ours = result.rowcount == 1  # type: ignore[attr-defined]
                if not ours and whoever_holds_it:
                    session.execute(
                        update(OutboxRow)
                        .where(OutboxRow.id == lease.row_id, OutboxRow.sent_at.is_(None))
                        .values(lease_until=None, **values)
                        .execution_options(synchronize_session=False))
                session.commit()
        return ours


def _ours(lease: Lease) -> tuple[Any, ...]:
    return (OutboxRow.id == lease.row_id, OutboxRow.claimed_by == lease.owner,
            OutboxRow.lease_until == lease.until)


def _whose(session: Session, row_id: str) -> str:
    """Who holds a row now, for a log line."""
    row = session.get(OutboxRow, row_id)
    if row is None:
        return "the row is gone"
    if row.sent_at is not None:
        return "already marked sent"
    if row.failed_at is not None:
        return "already marked failed"
    if row.lease_until is None:
        return "released"
    return f"now leased to {row.claimed_by}"
