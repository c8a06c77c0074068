"""Hostile input and careless configuration: exact 4xx or a one-line error, never a 5xx or a
traceback, nothing half-written. Grows with the code: add the next case here.

The HTTP cases run against every variant through Flask's test client; a property test
(Hypothesis) throws arbitrary bodies at /register and /resend; the configuration cases run
the real ``maillab`` command in a subprocess, as an operator would.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from apps.core import db
from apps.core.db import User
from apps.core.registry import VARIANTS
from maillab.ports import free_port
from maillab.processes import ManagedProcess
from tests.conftest import FAST_HASH
from tests.flow_helpers import PASSWORD
from tests.smtp_sink import Sink

JSON = {"Accept": "application/json"}


def users(app: Flask) -> list[str]:
    with app.app_context():
        return list(db.session().scalars(select(User.email)))


def post(app: Flask, path: str, body: bytes | str, **headers: str):  # type: ignore[no-untyped-def]
    return app.test_client().post(path, data=body, headers={
        "Content-Type": "application/json", **JSON, **headers})


# -- HTTP, every variant -----------------------------------------------------------------------

HOSTILE_BODIES: list[tuple[Any, ...]] = [
    # (what, body, status, code[, paths])
    ("deeply nested JSON", "[" * 5000 + "]" * 5000, 400, "bad_json"),
    ("nested JSON in a field", json.dumps({"email": [[[[[[[[[["x"]]]]]]]]]],
                                           "password": PASSWORD}), 400, "bad_json"),
    ("NaN literal", '{"email": NaN, "password": "x"}', 400, "bad_json"),
    ("lone surrogate in the password",  # /resend reads no password
     '{"email": "s@maillab.test", "password": "abcdefgh\\ud800"}', 422, "invalid_field",
     ("/register",)),
    ("lone surrogate in the address", '{"email": "s\\udfff@maillab.test", "password": "x"}',
     422, "invalid_field"),
    ("non-ASCII before the @", json.dumps({"email": "üser@maillab.test",
                                           "password": PASSWORD}), 422, "invalid_email"),
    ("a JSON array", "[1, 2]", 400, "bad_json"),
]


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("case", HOSTILE_BODIES, ids=[str(case[0]) for case in HOSTILE_BODIES])
def test_hostile_bodies_get_their_4xx_in_every_variant(
        make_app: Callable[..., Flask], variant: str, case: tuple[Any, ...]) -> None:
    what, body, status, code, *rest = case
    paths = rest[0] if rest else ("/register", "/resend")
    app = make_app(variant)
    for path in paths:
        response = post(app, path, body)
        assert (response.status_code, response.json["status"]) == (status, code), (path, what)
    assert users(app) == []


def test_links_come_from_the_configured_url_not_the_host_header(
        make_app: Callable[..., Flask], sink: Sink) -> None:
    app = make_app("sync", PUBLIC_URL="https://signup.example/")
    response = app.test_client().post("/register", headers={"Host": "evil.example", **JSON},
                                      json={"email": "h@maillab.test", "password": PASSWORD})
    assert response.status_code == 202
    [message] = sink.handler.wait_for("h@maillab.test")
    assert message.links and all(link.startswith("https://signup.example/verify/")
                                 for link in message.links)
    assert "evil.example" not in message.text


def test_an_internationalized_domain_is_stored_and_mailed_as_validated(
        make_app: Callable[..., Flask], sink: Sink) -> None:
    """faß.test is xn--fa-hia.test under IDNA 2008; IDNA 2003 would make it fass.test."""
    app = make_app("sync")
    response = post(app, "/register", json.dumps({"email": "User@Faß.test",
                                                  "password": PASSWORD}))
    assert response.status_code == 202
    assert users(app) == ["user@xn--fa-hia.test"]
    [message] = sink.handler.wait_for("user@xn--fa-hia.test")
    assert message.rcpt_tos == ["user@xn--fa-hia.test"]
    assert sink.handler.for_address("user@fass.test") == []


def test_the_session_cookie_is_same_site(make_app: Callable[..., Flask]) -> None:
    response = make_app("baseline").test_client().get("/register")
    cookie = response.headers["Set-Cookie"]
    assert "SameSite=Lax" in cookie and "HttpOnly" in cookie


def test_secrets_and_password_hashes_are_private_on_disk(
        make_app: Callable[..., Flask], tmp_path: Path) -> None:
    app = make_app("queued", INSTANCE_DIR=str(tmp_path / "fresh"))
    instance = Path(app.instance_path)
    assert stat.S_IMODE(instance.stat().st_mode) == 0o700
    for name in ("secret_key", "maillab.db", "queue.db"):
        assert stat.S_IMODE((instance / name).stat().st_mode) == 0o600, name


@pytest.fixture(scope="module")
def baseline_app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    """One app for every example of the property test (baseline: no SMTP server needed)."""
    from apps.core import create_app

    return create_app("baseline", {"TESTING": True, "PASSWORD_HASH": FAST_HASH,
                                   "INSTANCE_DIR": str(tmp_path_factory.mktemp("hostile"))})


@settings(max_examples=150, deadline=None)
@given(body=st.one_of(st.binary(max_size=400),
                      st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                                   lambda inner: st.lists(inner, max_size=3)
                                   | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                                   max_leaves=12).map(json.dumps)),
       content_type=st.sampled_from(["application/json", "application/x-www-form-urlencoded",
                                     "multipart/form-data; boundary=x", "text/plain"]))
def test_no_body_reaches_a_5xx(baseline_app: Flask, body: bytes | str,
                               content_type: str) -> None:
    for path in ("/register", "/resend"):
        response = post(baseline_app, path, body, **{"Content-Type": content_type})
        assert response.status_code < 500, (path, body, response.data[:200])


# -- a real server ----------------------------------------------------------------------------

def test_a_malformed_chunked_body_is_a_400_from_the_real_server(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "MAILLAB_INSTANCE_DIR": str(tmp_path),
           "MAILLAB_PASSWORD_HASH": "pbkdf2:sha256:1000"}
    server = ManagedProcess("serve", [sys.executable, "-m", "maillab", "serve", "baseline",
                                      "--port", str(port), "--workers", "1"], env,
                            tmp_path / "serve.log")
    try:
        server.wait_for_line("listening on", timeout=60)
        request = (b"POST /register HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   b"Content-Type: application/json\r\nAccept: application/json\r\n"
                   b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                   b"zz\r\n{}\r\n0\r\n\r\n")
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(request)
            reply = b""
            while chunk := conn.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert conn.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        server.stop()
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


# -- configuration: the real command, as an operator runs it ------------------------------------

BAD_SETTINGS = [
    # (variable, value, what the one line must say, what it must not show)
    ("MAILLAB_SMTP_TIMEOUT", "Infinity", "MAILLAB_SMTP_TIMEOUT must be a finite number", None),
    ("MAILLAB_SMTP_TIMEOUT", "NaN", "MAILLAB_SMTP_TIMEOUT must be a finite number", None),
    ("MAILLAB_SMTP_TIMEOUT", "1e999", "MAILLAB_SMTP_TIMEOUT must be a finite number", None),
    ("MAILLAB_SMTP_PORT", "1e999", "MAILLAB_SMTP_PORT must be an integer", None),
    ("MAILLAB_PASSWORD_HASH", "pbkdf2:nosuchhash", "MAILLAB_PASSWORD_HASH 'pbkdf2:nosuchhash' "
                                                   "cannot hash", None),
    ("MAILLAB_PASSWORD_HASH", "pbkdf2:sha256:999999999999", "at most 10,000,000", None),
    ("MAILLAB_SECRET_KEY", "123456789", "MAILLAB_SECRET_KEY must be a string of at least 16",
     None),
    ("MAILLAB_PUBLIC_URL", "javascript:alert(1)", "MAILLAB_PUBLIC_URL must be an http(s) URL",
     None),
    ("MAILLAB_PUBLIC_URL", "http://h:port/", "MAILLAB_PUBLIC_URL is not a URL", None),
    ("MAILLAB_DATABASE_URL", "not a url", "MAILLAB_DATABASE_URL is not a database URL", None),
    ("MAILLAB_DATABASE_URL", "sqlite:////no/such/folder/x.db",
     "MAILLAB_DATABASE_URL sqlite:////no/such/folder/x.db: cannot open the database", None),
    ("MAILLAB_DATABASE_URL", "postgresql+psycopg://lab:hunter2@127.0.0.1:1/lab",
     "MAILLAB_DATABASE_URL postgresql+psycopg://lab:***@127.0.0.1:1/lab: cannot open",
     "hunter2"),
    ("MAILLAB_DATABASE_URL", "mysql+nosuchdriver://u@h/db", "no driver for it", None),
    ("MAILLAB_INSTANCE_DIR", "/proc/maillab", "MAILLAB_INSTANCE_DIR '/proc/maillab' cannot be "
                                              "created", None),
    ("MAILLAB_QUEUE_URL", "redis://lab:hunter2@127.0.0.1:1/0", "MAILLAB_QUEUE_URL "
     "redis://lab:***@127.0.0.1:1/0: cannot reach the queue", "hunter2"),
]


@pytest.mark.parametrize(("variable", "value", "says", "hides"), BAD_SETTINGS,
                         ids=[f"{case[0]}={case[1]}" for case in BAD_SETTINGS])
def test_a_bad_setting_stops_with_one_line(tmp_path: Path, variable: str, value: str,
                                           says: str, hides: str | None) -> None:
    env = {**os.environ, "MAILLAB_INSTANCE_DIR": str(tmp_path / "instance"), variable: value}
    command = ["worker"] if variable == "MAILLAB_QUEUE_URL" else [
        "serve", "baseline", "--port", str(free_port())]
    done = subprocess.run([sys.executable, "-m", "maillab", *command], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    if hides:
        assert hides not in done.stderr


def _every_setting() -> list[tuple[str, str]]:
    from apps.core.config import _BOOLEANS, _NUMBERS

    garbage = ("NaN", "Infinity", "-Infinity", "1e999", "-1e9", "twelve", "[1]", '{"a": 1}')
    return ([(key, value) for key in _NUMBERS for value in garbage]
            + [(key, value) for key in _BOOLEANS for value in ("maybe", "2", "[]")])


@pytest.mark.parametrize(("key", "value"), _every_setting())
def test_every_setting_refuses_garbage_naming_itself(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> None:
    from apps.core import create_app
    from apps.core.config import ConfigError

    monkeypatch.setenv(f"MAILLAB_{key}", value)
    with pytest.raises(ConfigError, match=f"MAILLAB_{key} "):
        create_app("baseline", {"INSTANCE_DIR": str(tmp_path / "instance")})
    assert not (tmp_path / "instance").exists()  # nothing written before the check


@pytest.mark.parametrize("variant", ["sync", "queued"])
def test_the_mailer_refuses_what_the_flow_refuses_as_permanent(
        make_app: Callable[..., Flask], variant: str) -> None:
    """An address that reached the mailer another way fails once, permanently: no retries."""
    from apps.core.delivery import deliver
    from apps.core.mailer import Email, PermanentDeliveryError

    app = make_app(variant)
    email = Email(id="x", to="üser@maillab.test", subject="s", text="t", html=None)
    with app.app_context(), pytest.raises(PermanentDeliveryError, match="must be ASCII"):
        deliver(email)


def test_a_queue_that_goes_away_logs_a_line_every_interval_not_a_flood() -> None:
    """Huey's worker threads retry every few ms; the throttle lets one record through per
    interval (the first with its traceback, later ones as a count) and the rest are held."""
    import logging

    from apps.queued.worker import QUEUE_ERROR, QueueErrorThrottle

    throttle = QueueErrorThrottle(interval=3600)

    def record() -> logging.LogRecord:
        try:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379")
        except ConnectionError:
            return logging.LogRecord("huey.consumer", logging.ERROR, __file__, 1, QUEUE_ERROR,
                                     (), sys.exc_info())

    passed = [r for r in (record() for _ in range(500)) if throttle.filter(r)]
    assert len(passed) == 1 and passed[0].exc_info is not None
    throttle._last -= 3600  # an interval later
    [later] = [r for r in (record() for _ in range(5)) if throttle.filter(r)]
    assert later.exc_info is None
    assert later.getMessage() == (f"{QUEUE_ERROR}: Error 111 connecting to 127.0.0.1:6379 "
                                  "(499 more in the last 3600 s; retrying)")
    other = logging.LogRecord("huey.consumer", logging.INFO, __file__, 1, "other", (), None)
    assert throttle.filter(other)
