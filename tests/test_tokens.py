"""Verification links: valid once, then 409; tampered or malformed 400; expired 410."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from itsdangerous import URLSafeTimedSerializer

from apps.core import tokens
from tests.flow_helpers import json_body, path_of, register_json
from tests.smtp_sink import Sink

JSON = {"Accept": "application/json"}


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app("sync", TOKEN_MAX_AGE=3600)


def link_for(app: Flask, sink: Sink, to: str) -> str:
    register_json(app.test_client(), to)
    return path_of(sink.handler.wait_for(to)[-1].links[0])


def test_tampered_token_is_400(app: Flask, sink: Sink) -> None:
    path = link_for(app, sink, "t1@maillab.test")
    head, _, last = path.rpartition("/")
    tampered = f"{head}/{last[:-2]}{'A' if last[-2] != 'A' else 'B'}{last[-1]}"
    response = app.test_client().get(tampered, headers=JSON)
    assert response.status_code == 400
    assert json_body(response)["status"] == "invalid_token"


@pytest.mark.parametrize("token", ["x", "not.a.token", "%00", "a" * 500])
def test_malformed_token_is_400(app: Flask, token: str) -> None:
    response = app.test_client().get(f"/verify/{token}", headers=JSON)
    assert response.status_code == 400


def test_token_signed_with_another_salt_is_400(app: Flask, sink: Sink) -> None:
    link_for(app, sink, "t2@maillab.test")
    forged = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="other").dumps(
        {"uid": 1, "email": "t2@maillab.test"})
    assert app.test_client().get(f"/verify/{forged}", headers=JSON).status_code == 400


def test_token_bound_to_user_and_email(app: Flask, sink: Sink) -> None:
    link_for(app, sink, "t3@maillab.test")
    # A validly signed token whose email does not belong to that user id.
    swapped = tokens.make_token(app.config["SECRET_KEY"], 1, "someone-else@maillab.test")
    response = app.test_client().get(f"/verify/{swapped}", headers=JSON)
    assert response.status_code == 400
    assert "does not match" in json_body(response)["message"]


def test_expired_token_is_410(app: Flask, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    link_for(app, sink, "t4@maillab.test")
    import itsdangerous.timed

    real = itsdangerous.timed.time.time
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: real() - 7200)
    old = tokens.make_token(app.config["SECRET_KEY"], 1, "t4@maillab.test")
    monkeypatch.undo()
    response = app.test_client().get(f"/verify/{old}", headers=JSON)
    assert response.status_code == 410
    assert json_body(response)["status"] == "expired"
    # Expiry did not consume the account's verification: a fresh link still works.
    fresh = tokens.make_token(app.config["SECRET_KEY"], 1, "t4@maillab.test")
    assert app.test_client().get(f"/verify/{fresh}", headers=JSON).status_code == 200


def test_reused_token_is_409_in_html_too(app: Flask, sink: Sink) -> None:
    path = link_for(app, sink, "t5@maillab.test")
    client = app.test_client()
    assert client.get(path).status_code == 200
    again = client.get(path)
    assert again.status_code == 409
    assert "already used" in again.get_data(as_text=True)
