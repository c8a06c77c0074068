"""``queued``: the request enqueues a Huey task; ``maillab worker`` delivers it.

Transient failures (4xx, timeouts, dropped connections) are retried with exponential
backoff (``MAILLAB_QUEUE_RETRIES`` times, first after ``MAILLAB_QUEUE_RETRY_DELAY`` s, each
wait ``MAILLAB_QUEUE_RETRY_BACKOFF`` times the last); permanent ones (5xx) are not retried.
The email crosses the queue as a plain dict, never as an ORM or Flask object.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from flask import Flask
from huey.exceptions import CancelExecution

from apps.core.delivery import deliver
from apps.core.mailer import Email, MailerCounters, PermanentDeliveryError, TransientDeliveryError
from apps.queued.queue import make_huey, queue_errors, reason, shown
from apps.queued.throttle import Throttle

log = logging.getLogger(__name__)


class QueuedMailer:
    name = "queued"

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.counters = MailerCounters(self.name, delivers=False)
        self.url = app.config["QUEUE_URL"]
        self.huey = make_huey(self.url)
        # While the queue is down every sign-up and every /metrics scrape meets it: one line
        # per interval says so, as the consumer's QueueErrorThrottle does on its side.
        self.unreachable = Throttle()
        cfg = app.config
        self.task = self.huey.task(
            retries=cfg["QUEUE_RETRIES"],
            retry_delay=cfg["QUEUE_RETRY_DELAY"],
            retry_backoff=cfg["QUEUE_RETRY_BACKOFF"],
            name="deliver_email",
        )(self._deliver)

    def dispatch(self, email: Email) -> None:
        self.counters.started()
        try:
            self.task(dataclasses.asdict(email))
        except Exception as exc:
            # The user must hear the email did not go out, whatever stopped it.
            self.counters.finished(ok=False)
            down = isinstance(exc, queue_errors())
            if down:
                self._report_down("cannot enqueue emails, sign-ups answer 503", exc)
            else:  # not the queue being down: a bug, whose traceback is wanted
                log.exception("could not enqueue email %s", email.id)
            raise TransientDeliveryError(f"queue unavailable: {exc}", logged=down) from exc
        # In this process the email is done once it is safely in the queue.
        self.counters.finished(ok=True)

    def _deliver(self, payload: dict[str, Any]) -> None:
        """The task body; runs in the consumer."""
        email = Email(**payload)
        with self.app.app_context():
            try:
                deliver(email)
            except PermanentDeliveryError as exc:
                log.error("email %s to %s refused for good, not retrying: %s",
                          email.id, email.to, exc)
                raise CancelExecution(retry=False) from exc
            except TransientDeliveryError as exc:
                log.warning("email %s to %s failed, will retry if any retries remain: %s",
                            email.id, email.to, exc)
                raise

    def _report_down(self, what: str, exc: BaseException) -> None:
        """One line, at most once per interval, naming the queue (password hidden)."""
        held = self.unreachable.due()
        if held is not None:
            log.error("MAILLAB_QUEUE_URL %s: cannot reach the queue (%s): %.200s%s",
                      shown(self.url), what, reason(exc), self.unreachable.suffix(held))

    def queue_depth(self) -> int:
        """Tasks waiting: ready ones plus retries scheduled for later."""
        return int(self.huey.pending_count()) + int(self.huey.scheduled_count())

    def stats(self) -> dict[str, float]:
        """This process's view: failures are emails that could not be enqueued; in flight is
        what waits in the queue. Delivery itself is counted by the consumer
        (``maillab worker --metrics-port``)."""
        stats = self.counters.snapshot()
        try:
            stats["queue_depth"] = self.queue_depth()
            stats["emails_in_flight"] = stats["queue_depth"]
        except Exception as exc:  # the queue is down; /metrics must still answer
            self._report_down("queue depth unknown", exc)
            stats.pop("queue_depth")
            stats.pop("emails_in_flight")
        return stats
