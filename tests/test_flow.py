"""The whole flow for every variant: register, the email arrives, its link verifies, once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from apps.core.emails import ALREADY_SUBJECT, VERIFY_SUBJECT
from loadtests.target import built_in
from tests.flow_helpers import baseline_outbox, json_body, path_of, register_form, register_json
from tests.smtp_sink import LINK, Sink


def received(app: Flask, sink: Sink, variant: str, to: str,
             count: int = 1) -> list[tuple[str, str]]:
    """Every (subject, text) for ``to`` once ``count`` arrived, wherever the variant put them.

    Arrival order is not dispatch order: the queued consumer runs several threads.
    """
    if variant == "baseline":
        emails = baseline_outbox(app, to)
        assert len(emails) == count
        assert sink.handler.for_address(to) == [], "baseline must send nothing"
        return [(e.subject, e.text) for e in emails]
    messages = sink.handler.wait_for(to, timeout=15, count=count)
    assert len(messages) == count
    return [(m.subject, m.text) for m in messages]


def link_in(text: str) -> str:
    links = LINK.findall(text)
    assert links, f"no link in {text!r}"
    return str(links[0])


def received_link(app: Flask, sink: Sink, variant: str, to: str) -> tuple[str, str]:
    [(subject, text)] = received(app, sink, variant, to)
    return subject, link_in(text)


def start(variant: str, make_app: Callable[..., Flask], run_consumer: Callable[..., Any],
          **config: Any) -> Flask:
    app = make_app(variant, **config)
    if built_in().variant(variant).consumer is not None:
        run_consumer(app)
    return app


def test_register_verify_then_link_is_used(variant: str, make_app: Callable[..., Flask],
                                           sink: Sink, run_consumer: Callable[..., Any]) -> None:
    app = start(variant, make_app, run_consumer)
    client = app.test_client()
    to = f"alice-{variant}@maillab.test"

    response = register_json(client, to)
    assert response.status_code == 202
    assert response.json["status"] == "pending"

    subject, link = received_link(app, sink, variant, to)
    assert subject == VERIFY_SUBJECT
    verified = client.get(path_of(link), headers={"Accept": "application/json"})
    assert verified.status_code == 200, verified.json
    assert verified.json == {"status": "verified", "email": to,
                             "message": "Your email address is confirmed."}

    again = client.get(path_of(link), headers={"Accept": "application/json"})
    assert again.status_code == 409
    assert json_body(again)["status"] == "already_used"


def test_html_form_flow(variant: str, make_app: Callable[..., Flask], sink: Sink,
                        run_consumer: Callable[..., Any]) -> None:
    app = start(variant, make_app, run_consumer)
    client = app.test_client()
    to = f"bob-{variant}@maillab.test"

    response = register_form(client, to)
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/register/sent")
    page = client.get(response.headers["Location"])
    assert page.status_code == 200 and "Check your email" in page.get_data(as_text=True)

    _, link = received_link(app, sink, variant, to)
    verified = client.get(path_of(link))
    assert verified.status_code == 200
    assert verified.mimetype == "text/html"
    assert "Email confirmed" in verified.get_data(as_text=True)


def test_same_response_for_existing_address(variant: str, make_app: Callable[..., Flask],
                                            sink: Sink, run_consumer: Callable[..., Any]) -> None:
    app = start(variant, make_app, run_consumer)
    client = app.test_client()
    to = f"carol-{variant}@maillab.test"

    first = register_json(client, to)
    second = register_json(client, to, password="another password")
    assert (first.status_code, first.json) == (second.status_code, second.json)

    emails = dict(received(app, sink, variant, to, count=2))
    assert set(emails) == {VERIFY_SUBJECT, ALREADY_SUBJECT}
    # The account is not verified yet, so the second email carries a fresh link that works.
    assert client.get(path_of(link_in(emails[ALREADY_SUBJECT]))).status_code == 200

    third = register_json(client, to)
    assert (third.status_code, third.json) == (first.status_code, first.json)
    newest = [text for subject, text in received(app, sink, variant, to, count=3)
              if subject == ALREADY_SUBJECT and "is verified" in text]
    assert len(newest) == 1 and not LINK.search(newest[0])


def test_correlation_header_matches_dispatched_email(make_app: Callable[..., Flask],
                                                    sink: Sink) -> None:
    app = make_app("sync")
    register_json(app.test_client(), "dave@maillab.test")
    [message] = sink.handler.wait_for("dave@maillab.test")
    assert len(message.headers["X-Maillab-Id"]) == 32
    assert message.mail_from == "no-reply@maillab.test"


@pytest.mark.parametrize("variant_name", ["sync", "threaded", "queued"])
def test_metrics_count_dispatch(variant_name: str, make_app: Callable[..., Flask], sink: Sink,
                                run_consumer: Callable[..., Any]) -> None:
    app = start(variant_name, make_app, run_consumer)
    client = app.test_client()
    register_json(client, "erin@maillab.test")
    sink.handler.wait_for("erin@maillab.test")
    text = client.get("/metrics").get_data(as_text=True)
    assert f'maillab_emails_dispatched_total{{variant="{variant_name}"}} 1.0' in text
    assert "maillab_live_threads" in text and "maillab_queue_depth" in text
    assert "maillab_emails_failed_total" in text and "maillab_emails_in_flight" in text
