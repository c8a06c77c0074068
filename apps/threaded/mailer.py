"""``threaded``: one ``threading.Thread`` per email, as the seeds recommend.

Its weaknesses are kept on purpose, because the lab exists to measure them:
- no retry: a 4xx reply or a timeout loses the email (logged and counted, nothing more);
- lost on restart: an email whose thread has not finished dies with the process;
- unbounded threads: slow SMTP under load means one live thread per email in flight.
"""

from __future__ import annotations

import logging
import threading

from flask import Flask

from apps.core.delivery import deliver
from apps.core.mailer import DeliveryError, Email, MailerCounters

log = logging.getLogger(__name__)


class ThreadedMailer:
    name = "threaded"

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.counters = MailerCounters(self.name)

    def dispatch(self, email: Email) -> None:
        self.counters.started()
        threading.Thread(target=self._send, args=(email,), name=f"email-{email.id}").start()

    def _send(self, email: Email) -> None:
        ok = False
        try:
            with self.app.app_context():
                deliver(email)
            ok = True
        except DeliveryError as exc:
            log.error("email %s to %s lost: %s", email.id, email.to, exc)
        except Exception:
            # Nothing above this thread would ever see the error: log it with its traceback.
            log.exception("email %s to %s lost to an unexpected error", email.id, email.to)
        finally:
            self.counters.finished(ok)

    def stats(self) -> dict[str, float]:
        return self.counters.snapshot()
