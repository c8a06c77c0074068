"""``outbox``: the email is a row written in the request's own transaction; ``maillab relay``
delivers it.

The row exists exactly when the account (or the resend) does: nothing can be lost between
"committed" and "handed off", and a relay that dies mid-send leaves its rows to be taken
again once their lease runs out. The price is at-least-once delivery (a relay killed after
the SMTP server accepted a message, before it marked the row sent, sends it again; each
email's Message-ID comes from its id, so a duplicate can be recognised) and a pick-up delay.
"""

from __future__ import annotations

import time

from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from apps.core.mailer import Email, MailerCounters
from apps.outbox.models import OutboxRow

CHANNEL = "maillab_outbox"  # PostgreSQL's LISTEN/NOTIFY channel between app and relay


class OutboxMailer:
    name = "outbox"

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.counters = MailerCounters(self.name, delivers=False)

    def stage(self, session: Session, email: Email) -> None:
        """Inside the request's transaction, before its commit: the email becomes a row. On
        PostgreSQL a NOTIFY goes with it (delivered only if the transaction commits), so an
        idle relay wakes at once instead of polling."""
        session.add(OutboxRow.of(email, time.time()))
        if session.get_bind().dialect.name == "postgresql":
            session.execute(select(func.pg_notify(CHANNEL, "")))

    def dispatch(self, email: Email) -> None:
        """After the commit the email is already safe in the outbox: nothing to hand off."""
        self.counters.started()
        self.counters.finished(ok=True)

    def stats(self) -> dict[str, float]:
        """This process's view: rows staged; what waits is the outbox's pending rows
        (delivery is counted by ``maillab relay --metrics-port``)."""
        stats = self.counters.snapshot()
        depth = pending_count(self.app)
        stats["queue_depth"] = stats["emails_in_flight"] = depth
        return stats


def pending_count(app: Flask) -> int:
    """Rows neither sent nor failed: waiting, leased, or scheduled for a retry."""
    sessions = app.extensions["maillab.db"].sessions
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(OutboxRow).where(
            OutboxRow.sent_at.is_(None), OutboxRow.failed_at.is_(None))) or 0)

