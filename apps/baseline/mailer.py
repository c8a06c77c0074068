"""``baseline``: records the email in memory and sends nothing.

Every other variant is measured against this one: the difference is what sending costs.
"""

from __future__ import annotations

import threading
from collections import deque

from flask import Flask

from apps.core.mailer import Email, MailerCounters


class BaselineMailer:
    name = "baseline"

    def __init__(self, app: Flask, keep: int = 10_000) -> None:
        self.counters = MailerCounters(self.name)
        self._lock = threading.Lock()
        # Bounded: a long benchmark must not grow memory without limit.
        self.outbox: deque[Email] = deque(maxlen=keep)

    def dispatch(self, email: Email) -> None:
        self.counters.started()
        with self._lock:
            self.outbox.append(email)
        self.counters.finished(ok=True)

    def stats(self) -> dict[str, float]:
        return self.counters.snapshot()
