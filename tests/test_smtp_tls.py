"""Every variant against a provider-like SMTP server: fakesmtp with STARTTLS and AUTH
required (``--tls --auth``), its self-signed certificate trusted by path
(``MAILLAB_SMTP_CA_FILE``) and verified. A sign-up goes end to end; a wrong password is the
user-facing error in sync and a counted failure elsewhere (535 is permanent: no retry)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from fakesmtp.server import FakeSMTP
from fakesmtp.tls import Credentials, self_signed, server_context
from tests.conftest import wait_until
from tests.flow_helpers import path_of, register_form, register_json

USER, PASSWORD = "maillab", "correct horse"
SENDS = ["sync", "threaded", "queued", "outbox"]


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[tuple[FakeSMTP, Path]]:
    cert, key = self_signed(tmp_path / "tls")
    with FakeSMTP(tls=server_context(cert, key), credentials=Credentials(USER, PASSWORD),
                  seed=1) as server:
        yield server, cert


def _app(make_app: Callable[..., Flask], provider: tuple[FakeSMTP, Path], variant: str,
         password: str = PASSWORD) -> Flask:
    server, cert = provider
    return make_app(variant, SMTP_PORT=server.smtp_port, SMTP_USE_TLS=True,
                    SMTP_CA_FILE=str(cert), SMTP_USERNAME=USER, SMTP_PASSWORD=password,
                    QUEUE_RETRIES=2, QUEUE_RETRY_DELAY=0.1)


@pytest.mark.parametrize("variant", SENDS)
def test_a_sign_up_goes_end_to_end_over_starttls_and_auth(
        make_app: Callable[..., Flask], provider: tuple[FakeSMTP, Path],
        run_consumer: Callable[[Flask], Any], variant: str) -> None:
    app = _app(make_app, provider, variant)
    if variant in ("queued", "outbox"):
        run_consumer(app)
    address = f"{variant}-tls@maillab.test"
    assert register_json(app.test_client(), address).status_code in (201, 202)
    message = provider[0].wait_for_message(address, timeout=20)
    assert message is not None, "the email did not arrive"
    assert app.test_client().get(path_of(message.links[0])).status_code == 200
    stats = provider[0].stats()
    assert stats["latency"]["starttls"]["count"] == 0  # no latency asked for: none recorded
    assert stats["rejected"]["total"] == 0


def test_sync_with_a_wrong_password_tells_the_person(
        make_app: Callable[..., Flask], provider: tuple[FakeSMTP, Path]) -> None:
    app = _app(make_app, provider, "sync", password="wrong")
    response = register_form(app.test_client(), "sync-badpw@maillab.test")
    assert response.status_code == 502
    assert "refused the confirmation email" in response.get_data(as_text=True)
    assert app.extensions["mailer"].stats()["emails_failed_total"] == 1
    assert provider[0].stats()["rejected"]["by_code"] == {"535": 2}  # PLAIN, then LOGIN
    assert provider[0].messages() == []


@pytest.mark.parametrize("variant", ["threaded", "queued", "outbox"])
def test_a_wrong_password_is_a_counted_failure(
        make_app: Callable[..., Flask], provider: tuple[FakeSMTP, Path],
        run_consumer: Callable[[Flask], Any], variant: str) -> None:
    app = _app(make_app, provider, variant, password="wrong")
    counter = run_consumer(app) if variant in ("queued", "outbox") else app.extensions["mailer"]
    response = register_json(app.test_client(), f"{variant}-badpw@maillab.test")
    assert response.status_code == 202  # the person is told all is well
    wait_until(lambda: counter.stats()["emails_failed_total"] == 1, timeout=20,
               what="the failure counted")
    stats = counter.stats()
    assert stats["emails_delivered_total"] == 0
    assert stats.get("emails_retried_total", 0) == 0  # 535 is permanent
    assert provider[0].messages() == []


def test_a_certificate_the_app_does_not_trust_fails_the_email(
        make_app: Callable[..., Flask], provider: tuple[FakeSMTP, Path],
        tmp_path: Path) -> None:
    """Verification is on: a CA file that is not the server's refuses the handshake, and
    sync says so; nothing is sent in the clear instead."""
    other, _ = self_signed(tmp_path / "other")
    server, _ = provider
    app = make_app("sync", SMTP_PORT=server.smtp_port, SMTP_USE_TLS=True,
                   SMTP_CA_FILE=str(other), SMTP_USERNAME=USER, SMTP_PASSWORD=PASSWORD)
    response = register_form(app.test_client(), "sync-untrusted@maillab.test")
    assert response.status_code == 502
    assert server.messages() == [] and server.stats()["rejected"]["total"] == 0
