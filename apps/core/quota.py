"""A per-address limit on the emails the flow sends, whoever asks and whether or not the
address has an account.

Without it, ``/register`` mails an address once per request, which lets a script bomb any
inbox (``/resend`` has its cooldown, ``/register`` had nothing). The limit is counted in the
request's own transaction with the same three statements for every address, known or not, so
neither the answer nor the time taken says whether an account exists.
"""

from __future__ import annotations

from sqlalchemy import Executable, update
from sqlalchemy.orm import Session

from apps.core.db import MailQuota, dialect_insert


def take(session: Session, address: str, now: float, limit: int, window: float) -> bool:
    """Count one email to ``address``; False when this window's ``limit`` is already spent.

    Three statements, race-free under concurrent requests: make sure the row exists (an
    INSERT that ignores a conflict), start a new window if the old one is over, then take one
    only while there is one left (a conditional UPDATE, counted by its rowcount). The caller
    commits.
    """
    session.execute(_insert_if_absent(session, address, now))
    session.execute(update(MailQuota)
                    .where(MailQuota.email == address, MailQuota.window_start <= now - window)
                    .values(window_start=now, sent=0))
    taken = session.execute(update(MailQuota)
                            .where(MailQuota.email == address, MailQuota.sent < limit)
                            .values(sent=MailQuota.sent + 1))
    return bool(taken.rowcount == 1)  # type: ignore[attr-defined]


def _insert_if_absent(session: Session, address: str, now: float) -> Executable:
    return dialect_insert(session, MailQuota).values(
        email=address, window_start=now, sent=0).on_conflict_do_nothing(
        index_elements=[MailQuota.email])
