"""The sign-up's verification email, proven against a real SMTP server with faults: fakesmtp's
pytest plugin (its fixtures fakesmtp and fakesmtp_address) and nothing else."""

from __future__ import annotations

import time

import pytest
from signup import create_app


@pytest.fixture
def client(fakesmtp):
    app = create_app({**fakesmtp.flask_mailman_config(), "MAIL_TIMEOUT": 0.5,
                      "SERVER_NAME": "shop.test"})
    return app.test_client()


def register(client, address):
    return client.post("/register", data={"email": address})


def test_the_email_arrives_and_its_link_verifies(client, fakesmtp, fakesmtp_address):
    assert register(client, fakesmtp_address).status_code == 202
    email = fakesmtp.wait_for(to=fakesmtp_address, subject="Confirm", timeout=5)
    answer = client.get(email.link("http://shop.test/verify/"))
    assert answer.status_code == 200 and fakesmtp_address in answer.text


def test_a_451_twice_is_retried_and_delivered_once(client, fakesmtp, fakesmtp_address):
    fakesmtp.reject(fakesmtp_address, 451, times=2)
    assert register(client, fakesmtp_address).status_code == 202
    fakesmtp.assert_delivered_once(fakesmtp_address)
    refused, _, stored = fakesmtp.assert_attempts(fakesmtp_address, 3)
    assert refused["fault"] == "r1 at rcpt: reply 451" and stored["outcome"] == "stored"


def test_a_550_is_not_retried_and_the_person_is_told(client, fakesmtp, fakesmtp_address):
    fakesmtp.reject(fakesmtp_address, 550)
    assert register(client, fakesmtp_address).status_code == 503
    fakesmtp.assert_attempts(fakesmtp_address, 1)
    fakesmtp.assert_no_email(fakesmtp_address, within=0.2)


def test_stored_then_cut_shows_the_duplicate(client, fakesmtp, fakesmtp_address):
    """The server kept the message but the reply never came: the retry sends it again, and
    both copies carry the one Message-ID."""
    fakesmtp.drop_after_store(fakesmtp_address)
    assert register(client, fakesmtp_address).status_code == 202
    first, second = fakesmtp.assert_attempts(fakesmtp_address, 2)
    assert first["outcome"] == "stored, then cut" and second["outcome"] == "stored"
    assert first["message_id"] == second["message_id"]
    assert len(fakesmtp.messages(to=fakesmtp_address)) == 2
    with pytest.raises(AssertionError, match="got 2"):
        fakesmtp.assert_delivered_once(fakesmtp_address, timeout=1)


def test_a_hanging_server_times_out_as_configured(client, fakesmtp, fakesmtp_address):
    fakesmtp.hang(fakesmtp_address, times=None)  # every try hangs at the final dot
    started = time.monotonic()
    assert register(client, fakesmtp_address).status_code == 503
    took = time.monotonic() - started
    assert 3 * 0.5 <= took < 3 * 0.5 + 3  # three tries of MAIL_TIMEOUT, then the answer
    fakesmtp.assert_attempts(fakesmtp_address, 3)
    fakesmtp.assert_no_email(fakesmtp_address, within=0.2)


@pytest.mark.fakesmtp(latency="300ms")
def test_a_slow_server_makes_the_person_wait(client, fakesmtp, fakesmtp_address):
    started = time.monotonic()
    assert register(client, fakesmtp_address).status_code == 202
    assert time.monotonic() - started >= 0.3
