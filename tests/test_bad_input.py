"""Bad input gets a 4xx that names what is wrong; never a 5xx, never a half-created user."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import func, select

from apps.core import db
from apps.core.db import User
from tests.flow_helpers import PASSWORD, csrf_token, json_body

JSON = {"Accept": "application/json"}


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app("sync")


def user_count(app: Flask) -> int:
    with app.app_context():
        return int(db.session().scalar(select(func.count()).select_from(User)) or 0)


CASES = [
    # (description, request kwargs, status, field)
    ("missing email", {"json": {"password": PASSWORD}}, 422, "email"),
    ("missing password", {"json": {"email": "a@maillab.test"}}, 422, "password"),
    ("empty email", {"json": {"email": "", "password": PASSWORD}}, 422, "email"),
    ("email not a string", {"json": {"email": 42, "password": PASSWORD}}, 422, "email"),
    ("password not a string", {"json": {"email": "a@maillab.test", "password": ["x"]}}, 422,
     "password"),
    ("malformed email", {"json": {"email": "not-an-address", "password": PASSWORD}}, 422,
     "email"),
    ("two at-signs", {"json": {"email": "a@b@maillab.test", "password": PASSWORD}}, 422,
     "email"),
    ("overlong email", {"json": {"email": "a" * 250 + "@maillab.test", "password": PASSWORD}},
     422, "email"),
    ("CR/LF header injection",
     {"json": {"email": "a@maillab.test\r\nBcc: victim@maillab.test", "password": PASSWORD}},
     422, "email"),
    ("bare LF", {"json": {"email": "a@maillab.test\nX: y", "password": PASSWORD}}, 422, "email"),
    ("password too short", {"json": {"email": "a@maillab.test", "password": "short"}}, 422,
     "password"),
    ("password too long", {"json": {"email": "a@maillab.test", "password": "x" * 129}}, 422,
     "password"),
    ("JSON array body", {"json": ["a@maillab.test", PASSWORD]}, 400, "body"),
    ("broken JSON", {"data": b'{"email": ', "content_type": "application/json"}, 400, "body"),
    ("non-UTF-8 JSON",
     {"data": b'{"email": "\xff\xfe@maillab.test", "password": "correct horse"}',
      "content_type": "application/json"}, 400, "body"),
    ("wrong content type", {"data": b"email=a@maillab.test", "content_type": "text/plain"}, 415,
     "Content-Type"),
    ("no content type", {"data": b"email=a@maillab.test"}, 415, "Content-Type"),
]


@pytest.mark.parametrize(("what", "kwargs", "status", "field"), CASES,
                         ids=[case[0] for case in CASES])
def test_bad_registration(app: Flask, what: str, kwargs: dict, status: int, field: str) -> None:
    response = app.test_client().post("/register", headers=JSON, **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)
    body = json_body(response)
    assert body["field"] == field and body["message"]
    assert user_count(app) == 0


def test_oversized_body_is_413(app: Flask) -> None:
    body = {"email": "a@maillab.test", "password": PASSWORD, "pad": "x" * 20_000}
    response = app.test_client().post("/register", json=body, headers=JSON)
    assert response.status_code == 413
    assert json_body(response)["status"] == "request_entity_too_large"
    assert user_count(app) == 0


def test_form_without_csrf_is_rejected(app: Flask) -> None:
    response = app.test_client().post(
        "/register", data={"email": "a@maillab.test", "password": PASSWORD})
    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)
    assert user_count(app) == 0


def test_form_with_wrong_csrf_is_rejected(app: Flask) -> None:
    client = app.test_client()
    csrf_token(client)
    response = client.post("/register", headers=JSON,
                           data={"email": "a@maillab.test", "password": PASSWORD,
                                 "csrf_token": "forged"})
    assert response.status_code == 400
    assert json_body(response)["field"] == "csrf_token"
    assert user_count(app) == 0


@pytest.mark.parametrize("body", [b"email=%FF%FE%40maillab.test&password=correct+horse",
                                  b"email=\xff@maillab.test&password=correct+horse"],
                         ids=["percent-encoded", "raw bytes"])
def test_form_with_non_utf8_bytes(app: Flask, body: bytes) -> None:
    client = app.test_client()
    token = csrf_token(client)
    response = client.post("/register", headers=JSON,
                           data=body + f"&csrf_token={token}".encode(),
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
    assert "UTF-8" in json_body(response)["message"]
    assert user_count(app) == 0


def test_html_error_page_names_the_field(app: Flask) -> None:
    client = app.test_client()
    token = csrf_token(client)
    response = client.post("/register", data={"email": "nope", "password": PASSWORD,
                                              "csrf_token": token})
    assert response.status_code == 422
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "<code>email</code>" in page and "not valid" in page


def test_wrong_method_and_unknown_path(app: Flask) -> None:
    client = app.test_client()
    assert client.delete("/register", headers=JSON).status_code == 405
    missing = client.get("/nowhere", headers=JSON)
    assert missing.status_code == 404 and json_body(missing)["status"] == "not_found"


def test_address_is_normalized(app: Flask) -> None:
    client = app.test_client()
    first = client.post("/register", json={"email": "Frank@MailLab.TEST", "password": PASSWORD})
    second = client.post("/register", json={"email": "frank@maillab.test", "password": PASSWORD})
    assert first.status_code == second.status_code == 202
    assert user_count(app) == 1
