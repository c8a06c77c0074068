"""What each variant does when the SMTP server says 451 (try later) or 550 (never), or hangs.

sync: the user gets an error, no silent success. threaded: the failure is logged and counted,
the email is lost. queued: 451 is retried until delivered or given up; 550 is not retried.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from apps.core import delivery
from apps.core.mailer import DeliveryError, Email, PermanentDeliveryError, TransientDeliveryError
from tests.conftest import wait_until
from tests.flow_helpers import path_of, register_json
from tests.smtp_sink import Sink

TEMPFAIL = "451 4.3.0 try again later"
REFUSED = "550 5.1.1 no such mailbox"
JSON = {"Accept": "application/json"}


def email_to(to: str) -> Email:
    return Email(id="e" * 32, to=to, subject="s", text="t")


@pytest.mark.parametrize(("reply", "error"), [(TEMPFAIL, TransientDeliveryError),
                                              (REFUSED, PermanentDeliveryError)])
def test_deliver_classifies_by_reply_class(make_app: Callable[..., Flask],
                                           sink_factory: Callable[..., Sink], reply: str,
                                           error: type[DeliveryError]) -> None:
    server = sink_factory(always=reply)
    app = make_app("sync", SMTP_PORT=server.port)
    with app.app_context(), pytest.raises(error) as caught:
        delivery.deliver(email_to("x@maillab.test"))
    assert caught.value.code == int(reply[:3])


def test_deliver_times_out_on_a_hanging_server(make_app: Callable[..., Flask],
                                               sink_factory: Callable[..., Sink]) -> None:
    server = sink_factory(hang=True)
    app = make_app("sync", SMTP_PORT=server.port, SMTP_TIMEOUT=0.3)
    started = time.monotonic()
    with app.app_context(), pytest.raises(TransientDeliveryError, match="timed out"):
        delivery.deliver(email_to("x@maillab.test"))
    # The sink holds DATA for an hour, so returning at all, with "timed out", is the client's
    # timeout at work; no ceiling on how long that took, which would measure the machine.
    # The floor shows the configured timeout was waited out, not some instant failure.
    assert time.monotonic() - started >= 0.29


def test_deliver_refused_connection_is_transient(make_app: Callable[..., Flask]) -> None:
    from maillab.ports import free_port

    app = make_app("sync", SMTP_PORT=free_port())
    with app.app_context(), pytest.raises(TransientDeliveryError, match="connection failed"):
        delivery.deliver(email_to("x@maillab.test"))


# --- sync -----------------------------------------------------------------------------------

def test_sync_451_is_a_503_and_registering_again_works(make_app: Callable[..., Flask],
                                                       sink_factory: Callable[..., Sink]) -> None:
    server = sink_factory(replies=deque([TEMPFAIL]))
    app = make_app("sync", SMTP_PORT=server.port)
    client = app.test_client()
    failed = register_json(client, "s1@maillab.test")
    assert failed.status_code == 503
    assert failed.headers["Retry-After"] == "60"
    assert "could not be sent" in failed.json["message"]
    assert server.handler.for_address("s1@maillab.test") == []
    # The account was kept; registering again mails a link to the unverified account.
    retry = register_json(client, "s1@maillab.test")
    assert retry.status_code == 202
    [message] = server.handler.wait_for("s1@maillab.test")
    assert client.get(path_of(message.links[0])).status_code == 200


def test_sync_550_is_a_502_html_page(make_app: Callable[..., Flask],
                                     sink_factory: Callable[..., Sink]) -> None:
    server = sink_factory(always=REFUSED)
    app = make_app("sync", SMTP_PORT=server.port)
    from tests.flow_helpers import register_form

    response = register_form(app.test_client(), "s2@maillab.test")
    assert response.status_code == 502
    assert "refused the confirmation email" in response.get_data(as_text=True)
    assert app.extensions["mailer"].stats()["emails_failed_total"] == 1


# --- threaded -------------------------------------------------------------------------------

@pytest.mark.parametrize("reply", [TEMPFAIL, REFUSED])
def test_threaded_failure_is_counted_and_lost(make_app: Callable[..., Flask],
                                              sink_factory: Callable[..., Sink], reply: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    server = sink_factory(always=reply)
    app = make_app("threaded", SMTP_PORT=server.port)
    caplog.set_level(logging.ERROR, logger="apps.threaded.mailer")
    response = register_json(app.test_client(), "t1@maillab.test")
    # The user is told all is well: the seeds' pattern cannot know yet.
    assert response.status_code == 202
    mailer = app.extensions["mailer"]
    wait_until(lambda: mailer.stats()["emails_in_flight"] == 0, what="thread to finish")
    stats = mailer.stats()
    assert (stats["emails_failed_total"], stats["emails_delivered_total"]) == (1, 0)
    assert server.handler.data_attempts == 1, "threaded must not retry"
    assert "lost" in caplog.text and reply[:3] in caplog.text
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'maillab_emails_failed_total{variant="threaded"} 1.0' in text


def test_threaded_live_threads_grow_with_slow_smtp(make_app: Callable[..., Flask],
                                                   sink_factory: Callable[..., Sink]) -> None:
    # The sink holds every DATA until released, rather than for a fixed delay, so the five
    # emails are still in flight when counted however long five requests take here; the
    # SMTP timeout is only a backstop should the test fail before releasing them.
    release = threading.Event()
    server = sink_factory(hold=release)
    app = make_app("threaded", SMTP_PORT=server.port, SMTP_TIMEOUT=60.0)
    client = app.test_client()
    before = app.extensions["mailer"].stats()["live_threads"]
    for i in range(5):
        assert register_json(client, f"t-many-{i}@maillab.test").status_code == 202
    stats = app.extensions["mailer"].stats()
    # One thread per email in flight: nothing bounds them.
    assert stats["emails_in_flight"] == 5
    assert stats["live_threads"] >= before + 5
    release.set()
    wait_until(lambda: app.extensions["mailer"].stats()["emails_in_flight"] == 0, timeout=15)
    assert app.extensions["mailer"].stats()["emails_delivered_total"] == 5


# --- queued ---------------------------------------------------------------------------------

def test_queued_retries_451_then_delivers(make_app: Callable[..., Flask],
                                          sink_factory: Callable[..., Sink],
                                          run_consumer: Callable[..., Any]) -> None:
    server = sink_factory(replies=deque([TEMPFAIL, TEMPFAIL]))
    app = make_app("queued", SMTP_PORT=server.port, QUEUE_RETRIES=3, QUEUE_RETRY_DELAY=0.1)
    stats = run_consumer(app)
    assert register_json(app.test_client(), "q1@maillab.test").status_code == 202
    [message] = server.handler.wait_for("q1@maillab.test", timeout=20)
    assert server.handler.data_attempts == 3
    wait_until(lambda: stats.stats()["emails_delivered_total"] == 1, what="delivered count")
    assert stats.stats()["emails_retried_total"] == 2
    assert stats.stats()["emails_failed_total"] == 0
    assert app.test_client().get(path_of(message.links[0])).status_code == 200


def test_queued_gives_up_after_its_retries(make_app: Callable[..., Flask],
                                           sink_factory: Callable[..., Sink],
                                           run_consumer: Callable[..., Any]) -> None:
    server = sink_factory(always=TEMPFAIL)
    app = make_app("queued", SMTP_PORT=server.port, QUEUE_RETRIES=1, QUEUE_RETRY_DELAY=0.1)
    stats = run_consumer(app)
    register_json(app.test_client(), "q2@maillab.test")
    wait_until(lambda: stats.stats()["emails_failed_total"] == 1, timeout=20, what="give-up")
    assert server.handler.data_attempts == 2
    assert stats.stats()["emails_retried_total"] == 1
    assert app.extensions["mailer"].queue_depth() == 0


def test_queued_does_not_retry_550(make_app: Callable[..., Flask],
                                   sink_factory: Callable[..., Sink],
                                   run_consumer: Callable[..., Any]) -> None:
    server = sink_factory(always=REFUSED)
    app = make_app("queued", SMTP_PORT=server.port, QUEUE_RETRIES=3, QUEUE_RETRY_DELAY=0.1)
    stats = run_consumer(app)
    register_json(app.test_client(), "q3@maillab.test")
    wait_until(lambda: stats.stats()["emails_failed_total"] == 1, what="permanent failure")
    assert server.handler.data_attempts == 1
    assert stats.stats()["emails_retried_total"] == 0


def test_queued_answers_before_a_slow_server(make_app: Callable[..., Flask],
                                             sink_factory: Callable[..., Sink]) -> None:
    server = sink_factory(delay=1.0)
    app = make_app("queued", SMTP_PORT=server.port)
    # No consumer running: the request only enqueues, and the email waits in the queue.
    assert register_json(app.test_client(), "q4@maillab.test").status_code == 202
    assert app.extensions["mailer"].queue_depth() == 1
    assert 'maillab_queue_depth{variant="queued"} 1.0' in app.test_client().get(
        "/metrics").get_data(as_text=True)
    assert server.handler.data_attempts == 0
