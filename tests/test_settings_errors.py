"""Settings that once reached a traceback, given as a careless operator gives them: each now
gets an answer the user can act on and a line in the log, never a traceback.

The settings come from the environment, as they do in production: Flask's prefixed-env loader
parses values as JSON, which is where a host ``12345`` became an int.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from apps.core import create_app
from apps.core.config import _STRINGS, ConfigError
from maillab.ports import free_port
from maillab.processes import ManagedProcess
from tests.conftest import FAST_HASH, wait_until
from tests.flow_helpers import PASSWORD, register_json

DOWN = "cannot reach the queue"


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert "Traceback" not in caplog.text
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


@pytest.mark.parametrize("value", ["12345", "true", "null", '"quoted"'])
@pytest.mark.parametrize("key", _STRINGS)
def test_every_text_setting_is_the_text_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              key: str, value: str) -> None:
    """Kept exactly as written (JSON would make 12345 an int, null None, "quoted" quoted), or
    refused by the setting's own rule in a message that names it."""
    if key != "PASSWORD_HASH":
        monkeypatch.setenv("MAILLAB_PASSWORD_HASH", FAST_HASH)
    monkeypatch.setenv(f"MAILLAB_{key}", value)
    try:
        app = create_app("baseline", {"INSTANCE_DIR": str(tmp_path / "instance")})
    except ConfigError as exc:
        assert f"MAILLAB_{key}" in str(exc) and "must be a string, got" not in str(exc), exc
    else:
        assert app.config[key] == value


def test_text_settings_from_a_test_dict_must_be_text(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MAILLAB_SMTP_HOST must be a string, got int"):
        create_app("baseline", {"INSTANCE_DIR": str(tmp_path), "SMTP_HOST": 12345})


def test_a_numeric_smtp_host_is_a_host_that_cannot_be_reached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """``MAILLAB_SMTP_HOST=12345`` is the host name "12345" (to the resolver, the IPv4
    address 0.0.48.57): a sync sign-up meets an SMTP server it cannot reach, a 503 and one
    line, like any such server. It was an int, and every sign-up a 500 with a traceback."""
    monkeypatch.setenv("MAILLAB_SMTP_HOST", "12345")
    # Bounds the wait where the network swallows packets to 0.0.48.57 rather than refusing.
    monkeypatch.setenv("MAILLAB_SMTP_TIMEOUT", "0.5")
    # Not TESTING: an exception is logged and answered 500, as under gunicorn.
    app = create_app("sync", {"INSTANCE_DIR": str(tmp_path), "PASSWORD_HASH": FAST_HASH})
    assert app.config["SMTP_HOST"] == "12345"
    caplog.set_level(logging.INFO)
    response = register_json(app.test_client(), "host@maillab.test")
    assert response.status_code == 503, response.data
    assert response.json["status"] == "delivery_failed"
    _no_tracebacks(caplog)
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert line.startswith("delivery of ") and " failed: " in line


def test_the_worker_meets_a_numeric_smtp_host_with_a_line_per_try(
        monkeypatch: pytest.MonkeyPatch, make_app: Callable[..., Flask],
        run_consumer: Callable[..., Any], caplog: pytest.LogCaptureFixture) -> None:
    """The real consumer (Huey, threads): each try is one line from the mailer; Huey's own
    "Unhandled exception in task" and its traceback are not repeated for a delivery error."""
    monkeypatch.setenv("MAILLAB_SMTP_HOST", "12345")
    app = make_app("queued", QUEUE_RETRIES=1, SMTP_TIMEOUT=0.5)
    caplog.set_level(logging.INFO)
    stats = run_consumer(app)
    assert register_json(app.test_client(), "worker@maillab.test").status_code == 202
    wait_until(lambda: stats.stats()["emails_failed_total"] == 1, timeout=30,
               what="the email given up after its retry")
    assert stats.stats()["emails_retried_total"] == 1
    _no_tracebacks(caplog)
    tries = [r.getMessage() for r in caplog.records if r.name == "apps.queued.mailer"]
    assert len(tries) == 2 and all("worker@maillab.test failed" in t for t in tries), tries
    assert not [r for r in caplog.records if r.name == "huey" and r.levelno >= logging.ERROR]


def test_an_unreachable_queue_is_one_line_per_interval(
        monkeypatch: pytest.MonkeyPatch, make_app: Callable[..., Flask],
        caplog: pytest.LogCaptureFixture) -> None:
    """Every sign-up is a 503 and /metrics still answers; the log says so once per interval,
    naming the queue without its password, with a count of what it held back."""
    pytest.importorskip("redis")
    url = f"redis://lab:hunter2@127.0.0.1:{free_port()}/0"  # nothing listens: no server needed
    monkeypatch.setenv("MAILLAB_QUEUE_URL", url)
    app = make_app("queued")
    client = app.test_client()
    caplog.set_level(logging.INFO)
    for n in range(4):
        assert register_json(client, f"down{n}@maillab.test").status_code == 503
    assert client.get("/metrics").status_code == 200
    _no_tracebacks(caplog)
    assert "hunter2" not in caplog.text
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert line.startswith(f"MAILLAB_QUEUE_URL redis://lab:***@127.0.0.1:{url.split(':')[-1]}"
                           f": {DOWN} (cannot enqueue emails, sign-ups answer 503): "), line
    throttle = app.extensions["mailer"].unreachable
    throttle._last -= throttle.interval  # an interval later
    caplog.clear()
    assert register_json(client, "later@maillab.test").status_code == 503
    [later] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert DOWN in later and later.endswith(f"(4 more in the last {throttle.interval:g} s)")


def _post(port: int, email: str) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"email": email, "password": PASSWORD}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/register", data=body, headers={
        "Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_serve_queued_with_redis_down_answers_503_and_logs_one_line(
        tmp_path: Path, spawn: Callable[..., ManagedProcess]) -> None:
    """The command as an operator runs it: ``maillab serve queued`` with Redis down starts
    (the web side only parses the URL), answers 503, and its log holds one line for the
    outage and no traceback."""
    pytest.importorskip("redis")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILLAB_")}
    env.update(MAILLAB_INSTANCE_DIR=str(tmp_path / "instance"), MAILLAB_PASSWORD_HASH=FAST_HASH,
               MAILLAB_QUEUE_URL=f"redis://lab:hunter2@127.0.0.1:{free_port()}/0")
    port = free_port()
    server = spawn(["serve", "queued", "--port", str(port), "--workers", "1", "--threads", "2"],
                   env, "listening on")
    for n in range(3):
        status, body = _post(port, f"serve{n}@maillab.test")
        assert (status, body["status"]) == (503, "delivery_failed")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as metrics:
        assert metrics.status == 200
    server.stop()
    log = server.log_path.read_text()
    assert "Traceback" not in log and "hunter2" not in log, log
    down = [line for line in log.splitlines() if DOWN in line]
    assert len(down) == 1 and "redis://lab:***@127.0.0.1:" in down[0], log
