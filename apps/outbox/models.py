"""The outbox table: one row per email, written in the transaction that caused it.

There is no well-kept Python library for a transactional outbox (the PyPI packages named
"outbox" are young 0.x releases), so it is this table and :mod:`apps.outbox.relay`, on
SQLAlchemy. Importing this module registers the table on the shared metadata, so the store
creates it with the others (``apps.core.db.init_app``); only the outbox variant imports it.
"""

from __future__ import annotations

from sqlalchemy import Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from apps.core.db import Base
from apps.core.mailer import Email


class OutboxRow(Base):
    """An email to send. Pending: ``sent_at`` and ``failed_at`` both null. A relay claims a
    row by setting ``lease_until`` (and ``claimed_by``) and renews it while it sends
    (:mod:`apps.outbox.lease`); a lease that ran out means its relay died mid-send, and the
    row is taken again."""

    __tablename__ = "outbox"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the email's id
    to: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(998))
    text: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    due_at: Mapped[float] = mapped_column(Float, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    sent_at: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)
    failed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)

    @classmethod
    def of(cls, email: Email, now: float) -> OutboxRow:
        return cls(id=email.id, to=email.to, subject=email.subject, text=email.text,
                   html=email.html, created_at=now, due_at=now, attempts=0)

    def email(self) -> Email:
        return Email(id=self.id, to=self.to, subject=self.subject, text=self.text,
                     html=self.html)
