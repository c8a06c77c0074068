"""Walking the flow through a Flask test client, as a person (form) or a script (JSON) would."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from apps.core.mailer import Email

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PASSWORD = "correct horse battery"


def register_json(client: FlaskClient, email: str, password: str = PASSWORD) -> Any:
    return client.post("/register", json={"email": email, "password": password},
                       headers={"Accept": "application/json"})


def csrf_token(client: FlaskClient) -> str:
    page = client.get("/register")
    assert page.status_code == 200
    match = CSRF.search(page.get_data(as_text=True))
    assert match, "the sign-up form has no CSRF token"
    return match.group(1)


def register_form(client: FlaskClient, email: str, password: str = PASSWORD) -> Any:
    token = csrf_token(client)
    return client.post("/register", data={"email": email, "password": password,
                                          "csrf_token": token})


def json_body(response: TestResponse) -> dict[str, Any]:
    """The JSON object ``response`` carries; fails the test, showing the body, if it has none
    (``response.json`` is None for any other content type)."""
    body = response.get_json(silent=True)
    assert isinstance(body, dict), (response.status, response.get_data(as_text=True)[:300])
    return body


def path_of(link: str) -> str:
    parts = urlsplit(link)
    return parts.path


def baseline_outbox(app: Flask, to: str) -> list[Email]:
    return [e for e in app.extensions["mailer"].outbox if e.to == to]
