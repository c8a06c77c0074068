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
    register_json(app.test_client(), "r4@maillab.test")
    link = sink.handler.wait_for("r4@maillab.test")[0].links[0]
    app.test_client().get(path_of(link))
    verified = resend(app, "r4@maillab.test")
    unknown = resend(app, "nobody@maillab.test")
    assert (verified.status_code, verified.json) == (unknown.status_code, unknown.json)
    assert len(sink.handler.for_address("r4@maillab.test")) == 1
    assert sink.handler.for_address("nobody@maillab.test") == []


def test_resend_rejects_bad_address(app: Flask) -> None:
    response = resend(app, "a\r\nb@maillab.test")
    assert response.status_code == 422 and response.json["field"] == "email"
