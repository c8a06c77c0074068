"""``celery``: the request publishes a Celery task; ``maillab celery-worker`` delivers it.

The queue most Flask apps send email from, with the settings its users ask about as the lab's
axis (``MAILLAB_CELERY_*``, apps/core/config.py):

- ``CELERY_ACKS=early`` (Celery's default): the worker acknowledges a task just before it
  runs it, so a worker killed mid-send loses what it was sending;
- ``CELERY_ACKS=late``: ``task_acks_late`` with ``task_reject_on_worker_lost`` and a
  prefetch of one, so an unfinished task goes back to the broker (and may be sent twice);
- the broker, RabbitMQ (``amqp://``; it requeues a dead connection's tasks at once) or Redis
  (``redis://``; an unacknowledged task is given out again only after the visibility timeout,
  ``CELERY_VISIBILITY_TIMEOUT``, one hour unless set).

Delivery retries as queued's does: transient failures (4xx, timeouts, cut connections)
``QUEUE_RETRIES`` times with exponential backoff, permanent ones (5xx) never. The email
crosses the broker as a plain dict (JSON).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from celery import Celery
from flask import Flask

from apps.core.config import ConfigError
from apps.core.delivery import deliver
from apps.core.mailer import Email, MailerCounters, PermanentDeliveryError, TransientDeliveryError
from apps.queued.queue import reason, shown
from apps.queued.throttle import Throttle

log = logging.getLogger(__name__)

QUEUE_NAME = "maillab"
TASK_NAME = "maillab.deliver_email"
SCHEMES = ("amqp://", "pyamqp://", "redis://", "rediss://")
# Publishing while the broker is away: a sign-up waits at most a few tries (about half a
# second) before it answers 503, instead of kombu's default of three tries a second apart.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2,
                 "interval_max": 0.3}


def make_celery(config: Any) -> Celery:
    """The Celery app for the variant's settings; raises ConfigError naming the variable."""
    url = config["CELERY_BROKER_URL"]
    if not url.startswith(SCHEMES):
        raise ConfigError(f"MAILLAB_CELERY_BROKER_URL must start with amqp:// or redis://, got "
                          f"{shown(url)!r}")
    late = config["CELERY_ACKS"] == "late"
    celery = Celery("maillab", broker=url, set_as_current=False)
    options: dict[str, Any] = {}
    if url.startswith("redis") and config["CELERY_VISIBILITY_TIMEOUT"]:
        options["visibility_timeout"] = config["CELERY_VISIBILITY_TIMEOUT"]
    celery.conf.update(
        task_default_queue=QUEUE_NAME,
        task_acks_late=late,
        task_reject_on_worker_lost=late,
        # Celery's default prefetch (4 per thread) for early acks; late acks take one at a
        # time, as Celery's guide to acks_late advises.
        worker_prefetch_multiplier=1 if late else 4,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_publish_retry_policy=PUBLISH_RETRY,
        broker_connection_retry_on_startup=True,
        broker_transport_options=options,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )
    return celery


class CeleryMailer:
    name = "celery"

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.counters = MailerCounters(self.name, delivers=False)
        cfg = app.config
        self.url = cfg["CELERY_BROKER_URL"]
        self.acks = cfg["CELERY_ACKS"]
        self.celery = make_celery(cfg)
        self.unreachable = Throttle()
        retries, delay, backoff = (cfg["QUEUE_RETRIES"], cfg["QUEUE_RETRY_DELAY"],
                                   cfg["QUEUE_RETRY_BACKOFF"])

        @self.celery.task(bind=True, name=TASK_NAME, max_retries=retries)
        def deliver_email(task: Any, payload: dict[str, Any]) -> None:
            email = Email(**payload)
            with app.app_context():
                try:
                    deliver(email)
                except PermanentDeliveryError as exc:
                    # Raised, not retried: the task fails (counted by the worker's signals).
                    log.error("email %s to %s refused for good, not retrying: %s",
                              email.id, email.to, exc)
                    raise
                except TransientDeliveryError as exc:
                    tries = task.request.retries
                    log.warning("email %s to %s failed (try %d), will retry if any retries "
                                "remain: %s", email.id, email.to, tries + 1, exc)
                    raise task.retry(exc=exc, countdown=delay * backoff ** tries) from exc

        self.task = deliver_email

    def dispatch(self, email: Email) -> None:
        from kombu.exceptions import OperationalError

        self.counters.started()
        try:
            self.task.apply_async(args=[dataclasses.asdict(email)])
        except Exception as exc:
            # The user must hear the email did not go out, whatever stopped it.
            self.counters.finished(ok=False)
            down = isinstance(exc, OperationalError)
            if down:
                held = self.unreachable.due()
                if held is not None:
                    log.error("MAILLAB_CELERY_BROKER_URL %s: cannot publish emails, sign-ups "
                              "answer 503: %.200s%s", shown(self.url), reason(exc),
                              self.unreachable.suffix(held))
            else:  # not the broker being down: a bug, whose traceback is wanted
                log.exception("could not publish email %s", email.id)
            raise TransientDeliveryError(f"broker unavailable: {exc}", logged=down) from exc
        # In this process the email is done once the broker has it.
        self.counters.finished(ok=True)

    def close(self) -> None:
        """Close the connections kept for publishing (the process is done with the app).
        Celery publishes through kombu's process-wide producer pools, one per broker URL, and
        its own close() only forgets its pool, leaving the connections open until the garbage
        collector warns of them; kombu's reset() closes every pool it keeps, and an app that
        publishes afterwards gets new ones."""
        from kombu import pools

        pools.reset()
        self.celery.close()

    def stats(self) -> dict[str, float]:
        """This process's view: failures are emails that could not be published. What waits
        in the broker is counted by the worker (``maillab celery-worker --metrics-port``)."""
        stats = self.counters.snapshot()
        stats.pop("queue_depth")
        return stats
