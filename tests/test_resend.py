"""POST /resend: a fresh link for unverified accounts, a per-address cooldown, no enumeration."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from tests.flow_helpers import path_of, register_json
from tests.smtp_sink import Sink

JSON = {"Accept": "application/json"}


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app("sync", RESEND_COOLDOWN=60)


def resend(app: Flask, to: str):  # type: ignore[no-untyped-def]
    return app.test_client().post("/resend", json={"email": to}, headers=JSON)


def test_resend_sends_a_working_link(app: Flask, sink: Sink) -> None:
    register_json(app.test_client(), "r1@maillab.test")
    sink.handler.wait_for("r1@maillab.test")
    response = resend(app, "r1@maillab.test")
    assert response.status_code == 202
    second = sink.handler.wait_for("r1@maillab.test", count=2)[-1]
    assert app.test_client().get(path_of(second.links[0])).status_code == 200


def test_cooldown_gives_429_with_retry_after(app: Flask, sink: Sink) -> None:
    register_json(app.test_client(), "r2@maillab.test")
    assert resend(app, "r2@maillab.test").status_code == 202
    blocked = resend(app, "r2@maillab.test")
    assert blocked.status_code == 429
    assert 1 <= int(blocked.headers["Retry-After"]) <= 60
    assert blocked.json["field"] == "email"
    # The cooldown is per address: another address is not held back.
    assert resend(app, "other@maillab.test").status_code == 202


def test_cooldown_ends(make_app: Callable[..., Flask], sink: Sink) -> None:
    app = make_app("sync", RESEND_COOLDOWN=0)
    register_json(app.test_client(), "r3@maillab.test")
    assert resend(app, "r3@maillab.test").status_code == 202
    assert resend(app, "r3@maillab.test").status_code == 202
    assert len(sink.handler.wait_for("r3@maillab.test", count=3)) == 3


def test_unknown_and_verified_addresses_look_the_same(app: Flask, sink: Sink) -> None:
    """Every address gets the same answer and one email, so neither reveals an account."""
    register_json(app.test_client(), "r4@maillab.test")
    link = sink.handler.wait_for("r4@maillab.test")[0].links[0]
    app.test_client().get(path_of(link))
    verified = resend(app, "r4@maillab.test")
    unknown = resend(app, "nobody@maillab.test")
    assert (verified.status_code, verified.json) == (unknown.status_code, unknown.json)
    [_, confirmed] = sink.handler.wait_for("r4@maillab.test", count=2)
    assert confirmed.subject == "You already have an account" and not confirmed.links
    [stranger] = sink.handler.wait_for("nobody@maillab.test")
    assert stranger.subject == "No account uses this address"
    assert stranger.links == ["http://127.0.0.1:8000/register"]


def test_emails_to_one_address_are_capped_without_telling(
        make_app: Callable[..., Flask], sink: Sink) -> None:
    """/register mails an address at most EMAILS_PER_ADDRESS times a window, known or not,
    and answers the same way past the cap."""
    app = make_app("sync", EMAILS_PER_ADDRESS=3, RESEND_COOLDOWN=0)
    client = app.test_client()
    answers = [register_json(client, "bomb@maillab.test") for _ in range(6)]
    answers += [resend(app, "bomb@maillab.test"), resend(app, "stranger@maillab.test")]
    assert {(a.status_code, a.json["status"]) for a in answers} == {(202, "pending")}
    assert len(sink.handler.wait_for("bomb@maillab.test", count=3)) == 3
    assert len(sink.handler.wait_for("stranger@maillab.test")) == 1
    # Nothing more arrives for the capped address: the stranger's email, sent last, is in.
    assert len(sink.handler.for_address("bomb@maillab.test")) == 3


def test_the_cap_is_per_window(make_app: Callable[..., Flask]) -> None:
    from apps.core import db
    from apps.core.quota import take

    app = make_app("baseline")
    with app.app_context():
        session = db.session()
        assert [take(session, "w@maillab.test", now, limit=2, window=60)
                for now in (0.0, 10.0, 59.0, 60.0, 61.0, 119.0, 121.0)] == [
            True, True, False, True, True, False, True]
        assert take(session, "other@maillab.test", 59.0, limit=2, window=60)


def test_resend_rejects_bad_address(app: Flask) -> None:
    response = resend(app, "a\r\nb@maillab.test")
    assert response.status_code == 422 and response.json["field"] == "email"
