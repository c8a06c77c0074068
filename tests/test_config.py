"""Configuration precedence and the messages a bad value produces."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from apps.core import create_app
from apps.core.config import ConfigError
from apps.core.registry import UnknownVariantError

REPO = Path(__file__).resolve().parents[1]


def test_env_overrides_defaults_and_test_dict_overrides_env(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILLAB_SMTP_TIMEOUT", "2.5")
    monkeypatch.setenv("MAILLAB_RESEND_COOLDOWN", "7")
    app = create_app("baseline", {"INSTANCE_DIR": str(tmp_path), "RESEND_COOLDOWN": 9})
    assert app.config["SMTP_TIMEOUT"] == 2.5
    assert app.config["RESEND_COOLDOWN"] == 9
    assert app.config["TOKEN_MAX_AGE"] == 48 * 3600
    assert app.config["DATABASE_URL"] == f"sqlite:///{tmp_path / 'maillab.db'}"


def test_instance_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILLAB_INSTANCE_DIR", str(tmp_path / "inst"))
    app = create_app("baseline")
    assert Path(app.instance_path) == tmp_path / "inst"
    assert (tmp_path / "inst" / "secret_key").exists()


def test_secret_is_shared_by_apps_of_one_instance(tmp_path: Path) -> None:
    first = create_app("baseline", {"INSTANCE_DIR": str(tmp_path)})
    second = create_app("sync", {"INSTANCE_DIR": str(tmp_path)})
    assert first.config["SECRET_KEY"] == second.config["SECRET_KEY"]
    assert len(first.config["SECRET_KEY"]) == 64


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    app = create_app("baseline", {"INSTANCE_DIR": str(tmp_path)})
    with app.extensions["maillab.db"].engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


@pytest.mark.parametrize(("env", "value", "needle"), [
    ("MAILLAB_SMTP_TIMEOUT", "soon", "MAILLAB_SMTP_TIMEOUT must be a number"),
    ("MAILLAB_SMTP_PORT", "70000", "MAILLAB_SMTP_PORT must be between 1 and 65535"),
    ("MAILLAB_PASSWORD_HASH", "md5", "MAILLAB_PASSWORD_HASH must start with one of"),
    ("MAILLAB_SMTP_USE_TLS", "maybe", "MAILLAB_SMTP_USE_TLS must be true or false"),
    ("MAILLAB_QUEUE_RETRIES", "-1", "MAILLAB_QUEUE_RETRIES must be between 0 and 100"),
])
def test_bad_values_name_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      env: str, value: str, needle: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=needle):
        create_app("baseline", {"INSTANCE_DIR": str(tmp_path)})


@pytest.mark.parametrize(("url", "needle"), [
    ("amqp://x", "MAILLAB_QUEUE_URL must start with"),
    ("sqlite:///", "MAILLAB_QUEUE_URL sqlite:/// needs a file path"),
    ("sqlite:////no/such/dir/queue.db", "MAILLAB_QUEUE_URL .* cannot open the SQLite queue"),
    ("redis://localhost:notaport/0", "MAILLAB_QUEUE_URL .* Port could not be cast"),
])
def test_bad_queue_url_is_a_config_error(tmp_path: Path, url: str, needle: str) -> None:
    # A ConfigError, not just a ValueError: that is what the CLI turns into one line.
    with pytest.raises(ConfigError, match=needle):
        create_app("queued", {"INSTANCE_DIR": str(tmp_path), "QUEUE_URL": url})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("url", ["bogus://x", "sqlite:///"])
@pytest.mark.parametrize("command", ["worker", "serve"])
def test_cli_reports_a_bad_queue_url_in_one_line(tmp_path: Path, command: str,
                                                 url: str) -> None:
    """The real command, in its own process: what a user sees is one line and a failure code."""
    args = ["worker"] if command == "worker" else ["serve", "queued", "--port", str(_free_port())]
    # Inherited MAILLAB_* settings would make the outcome depend on the caller's shell.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILLAB_")}
    env.update(MAILLAB_QUEUE_URL=url, MAILLAB_INSTANCE_DIR=str(tmp_path))
    # The timeout only stops a regression that starts serving instead of failing.
    result = subprocess.run([sys.executable, "-m", "maillab", *args], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "MAILLAB_QUEUE_URL" in lines[0], result.stderr


def test_unknown_variant_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(UnknownVariantError, match="choose one of: baseline, sync"):
        create_app("carrier-pigeon", {"INSTANCE_DIR": str(tmp_path / "inst")})
    assert not (tmp_path / "inst").exists()


def test_default_password_hash_is_scrypt(make_app: Callable[..., Flask]) -> None:
    from sqlalchemy import select

    from apps.core import db
    from apps.core.db import User
    from tests.flow_helpers import register_json

    app = make_app("baseline", PASSWORD_HASH="scrypt")
    register_json(app.test_client(), "hash@maillab.test")
    with app.app_context():
        stored = db.session().scalar(select(User.password_hash))
    assert stored is not None and stored.startswith("scrypt:")


def test_processes_opening_a_new_database_together(tmp_path: Path) -> None:
    """serve and worker started together race to create a new database's tables and to switch
    it to WAL. They are separate processes, so that is what this races. (A version with
    threads in one interpreter was dropped: werkzeug compiles routes with ``ast`` and CPython
    3.11.7 can fail that across threads, python/cpython#106905, which no maillab process
    does.)"""
    code = ("import sys; from apps.core import create_app; "
            "app = create_app(sys.argv[1], {'INSTANCE_DIR': sys.argv[2]}); "
            "app.extensions['maillab.db'].engine.connect().close()")
    procs = [subprocess.Popen([sys.executable, "-c", code, variant, str(tmp_path)],
                              stderr=subprocess.PIPE, text=True)
             for variant in ["queued", "sync"] * 3]
    outcomes = [(p.communicate(timeout=60)[1], p.returncode) for p in procs]
    assert [err for err, code in outcomes if code != 0] == []


@pytest.mark.parametrize(("settings", "needle"), [
    ({"SMTP_USERNAME": "maillab"}, "MAILLAB_SMTP_USERNAME and MAILLAB_SMTP_PASSWORD go together"),
    ({"SMTP_PASSWORD": "pw"}, "MAILLAB_SMTP_USERNAME and MAILLAB_SMTP_PASSWORD go together"),
    ({"SMTP_CA_FILE": "{cert}"}, "MAILLAB_SMTP_CA_FILE is only used with MAILLAB_SMTP_USE_TLS"),
    ({"SMTP_USE_TLS": True, "SMTP_CA_FILE": "/no/such/ca.pem"},
     "MAILLAB_SMTP_CA_FILE '/no/such/ca.pem' is not a file"),
    ({"SMTP_USE_TLS": True, "SMTP_CA_FILE": "{junk}"}, "holds no usable PEM certificate"),
])
def test_bad_smtp_tls_settings_name_the_variable(tmp_path: Path, settings: dict[str, object],
                                                 needle: str) -> None:
    from fakesmtp.tls import self_signed

    cert, _ = self_signed(tmp_path / "tls")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    given = {k: str(v).format(cert=cert, junk=junk) if isinstance(v, str) else v
             for k, v in settings.items()}
    with pytest.raises(ConfigError, match=needle):
        create_app("sync", {"INSTANCE_DIR": str(tmp_path / "inst"), **given})


def test_starttls_trusts_the_given_ca_file_only(tmp_path: Path) -> None:
    """The lab's certificate as the CA file: a verifying context that checks host names."""
    import ssl

    from fakesmtp.tls import self_signed

    cert, _ = self_signed(tmp_path / "tls")
    app = create_app("sync", {"INSTANCE_DIR": str(tmp_path / "inst"), "SMTP_USE_TLS": True,
                              "SMTP_CA_FILE": str(cert)})
    context = app.config["SMTP_TLS_CONTEXT"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert len(context.get_ca_certs()) == 1
    plain = create_app("sync", {"INSTANCE_DIR": str(tmp_path / "inst2")})
    assert plain.config["SMTP_TLS_CONTEXT"] is None
