"""``sync``: delivers inside the request, so the user waits for the SMTP conversation."""

from __future__ import annotations

from flask import Flask

from apps.core.delivery import deliver
from apps.core.mailer import Email, MailerCounters


class SyncMailer:
    name = "sync"

    def __init__(self, app: Flask) -> None:
        self.counters = MailerCounters(self.name)

    def dispatch(self, email: Email) -> None:
        """Deliver now; a :class:`DeliveryError` reaches the view, which tells the user."""
        self.counters.started()
        try:
            deliver(email)
        except BaseException:
            self.counters.finished(ok=False)
            raise
        self.counters.finished(ok=True)

    def stats(self) -> dict[str, float]:
        return self.counters.snapshot()
