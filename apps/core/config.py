"""Configuration: defaults, then ``MAILLAB_*`` environment variables, then the test dict.

Every key is checked once at start-up by :func:`validate`, so a bad value stops the app with
a message that names the variable instead of surfacing as a 500 on the first request.
"""

from __future__ import annotations

import math
import os
import secrets
import ssl
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask

ENV_PREFIX = "MAILLAB"

DEFAULTS: dict[str, Any] = {
    "DATABASE_URL": None,  # None: a SQLite file (WAL) in the instance folder
    "QUEUE_URL": None,  # None: Huey on a SQLite file in the instance folder
    "SECRET_KEY": None,  # None: generated once and kept in the instance folder (0600)
    "SMTP_HOST": "127.0.0.1",
    "SMTP_PORT": 8025,
    "SMTP_TIMEOUT": 10.0,
    "SMTP_USE_TLS": False,  # STARTTLS before mail, the certificate verified (never turned off)
    # With SMTP_USE_TLS: a PEM file of the CAs to trust instead of the system's, such as the
    # lab's own fakesmtp certificate; None trusts the system's CAs, as for a real provider.
    "SMTP_CA_FILE": None,
    "SMTP_USERNAME": None,  # both or neither: AUTH after STARTTLS
    "SMTP_PASSWORD": None,
    "MAIL_SENDER": "maillab <no-reply@maillab.test>",
    "PASSWORD_HASH": "scrypt",
    "PASSWORD_MIN_LENGTH": 8,
    "PASSWORD_MAX_LENGTH": 128,
    "EMAIL_MAX_LENGTH": 254,
    "ALLOW_TEST_DOMAINS": True,  # the lab mails *.test addresses to its own fake server
    "TOKEN_MAX_AGE": 48 * 3600,
    "RESEND_COOLDOWN": 60,
    # At most this many emails to one address per window, whoever asks and whether or not it
    # has an account: stops a script from mail-bombing an inbox through /register.
    "EMAILS_PER_ADDRESS": 5,
    "EMAIL_WINDOW": 3600,
    "MAX_CONTENT_LENGTH": 16 * 1024,
    # Links in emails are built from this, never from the request's Host header (which a
    # client chooses). `maillab serve` sets it to the address it binds unless it is given.
    "PUBLIC_URL": "http://127.0.0.1:8000",
    "SESSION_COOKIE_SAMESITE": "Lax",
    "QUEUE_RETRIES": 5,
    "QUEUE_RETRY_DELAY": 1.0,
    "QUEUE_RETRY_BACKOFF": 2.0,
    "WORKER_THREADS": 4,
    # Huey polls an idle SQLite queue with a delay that grows x1.15 up to 10 s by default, so an
    # email enqueued after a quiet spell waits seconds for pick-up. benchmarks/test_queue_pickup.py
    # measures it. Capping the idle poll at 10 ms cost 1.7% of one core on an idle 4-thread
    # `maillab worker` (/proc ticks over 10 s), a price worth paying to keep pick-up out of time
    # to inbox.
    "WORKER_POLL_DELAY": 0.005,
    "WORKER_MAX_POLL_DELAY": 0.01,
    # maillab relay (the outbox): the wait between two looks at an idle outbox, and how long a
    # claimed row is its relay's before another may take it unless renewed: the relay renews
    # it every third of it while the send goes on, so it says how soon a dead relay's rows are
    # taken again, not how long a send may take.
    "OUTBOX_POLL_DELAY": 0.005,
    "OUTBOX_LEASE": 15.0,
    # The celery variant (apps/celery): its broker, RabbitMQ (amqp://) or Redis (redis://);
    # "early" acknowledges a task just before it runs (Celery's default), "late" after it
    # returns (acks_late, with task_reject_on_worker_lost and a prefetch of one); on Redis, how
    # long an unacknowledged task waits before it is given out again (0: kombu's one hour).
    "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
    "CELERY_ACKS": "early",
    "CELERY_VISIBILITY_TIMEOUT": 0.0,
}

_NUMBERS = {
    "SMTP_PORT": (int, 1, 65535),
    "SMTP_TIMEOUT": (float, 0.001, None),
    "PASSWORD_MIN_LENGTH": (int, 1, None),
    "PASSWORD_MAX_LENGTH": (int, 1, 4096),
    "EMAIL_MAX_LENGTH": (int, 6, 4096),
    "TOKEN_MAX_AGE": (int, 1, None),
    "RESEND_COOLDOWN": (float, 0, None),
    "EMAILS_PER_ADDRESS": (int, 1, 10_000),
    "EMAIL_WINDOW": (float, 1, None),
    "MAX_CONTENT_LENGTH": (int, 256, None),
    "QUEUE_RETRIES": (int, 0, 100),
    "QUEUE_RETRY_DELAY": (float, 0, None),
    "QUEUE_RETRY_BACKOFF": (float, 1, None),
    "WORKER_THREADS": (int, 1, 1024),
    "WORKER_POLL_DELAY": (float, 0.0001, None),
    "WORKER_MAX_POLL_DELAY": (float, 0.0001, None),
    "OUTBOX_POLL_DELAY": (float, 0.0001, None),
    # At least a second: renewed every third of it, each renewal a write to the store.
    "OUTBOX_LEASE": (float, 1.0, None),
    "CELERY_VISIBILITY_TIMEOUT": (float, 0, None),
}
_BOOLEANS = ("SMTP_USE_TLS", "ALLOW_TEST_DOMAINS")
# Every other setting is text (a host, a URL, a password, a path...): declaring a new setting
# a string needs nothing more than its default.
_STRINGS = tuple(key for key in DEFAULTS if key not in _NUMBERS and key not in _BOOLEANS)
# Text settings that may be None: unset, or for SameSite, Flask's "leave the attribute out".
_NULLABLE = {key for key in _STRINGS if DEFAULTS[key] is None} | {"SESSION_COOKIE_SAMESITE"}
_SAMESITE = ("Strict", "Lax", "None")  # what werkzeug accepts, in any case
MAX_PBKDF2_ITERATIONS = 10_000_000  # ten times werkzeug's default
_PASSWORD_METHODS = ("scrypt", "pbkdf2")
CELERY_ACKS = ("early", "late")


class ConfigError(ValueError):
    """A configuration value is unusable; the message names the variable."""


def load(app: Flask, test_config: dict[str, Any] | None) -> None:
    """Fill ``app.config``: defaults, then ``MAILLAB_*`` variables, then ``test_config``."""
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env(ENV_PREFIX)
    # from_prefixed_env parses each value as JSON, so a host 12345 would arrive as an int, a
    # password null as None and one written "x" (quotes included) as x. A text setting is the
    # variable's text exactly as given; numbers and booleans are parsed by validate().
    for key in _STRINGS:
        text = os.environ.get(f"{ENV_PREFIX}_{key}")
        if text is not None:
            app.config[key] = text
    if test_config:
        app.config.from_mapping(test_config)
    validate(app.config)
    instance = private_dir(Path(app.instance_path))
    if not app.config["DATABASE_URL"]:
        app.config["DATABASE_URL"] = f"sqlite:///{instance / 'maillab.db'}"
    if not app.config["QUEUE_URL"]:
        app.config["QUEUE_URL"] = f"sqlite:///{instance / 'queue.db'}"
    if not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = _instance_secret(instance / "secret_key")


def instance_dir(test_config: dict[str, Any] | None) -> str:
    """The instance folder: the test dict, ``MAILLAB_INSTANCE_DIR``, or ./instance."""
    if test_config and test_config.get("INSTANCE_DIR"):
        return str(Path(test_config["INSTANCE_DIR"]).resolve())
    return str(Path(os.environ.get(f"{ENV_PREFIX}_INSTANCE_DIR", "instance")).resolve())


def validate(config: dict[str, Any]) -> None:
    for key in _STRINGS:
        _string(key, config[key])
    for key, (kind, low, high) in _NUMBERS.items():
        config[key] = _number(key, config[key], kind, low, high)
    for key in _BOOLEANS:
        config[key] = _boolean(key, config[key])
    config["PASSWORD_HASH"] = _password_hash(config["PASSWORD_HASH"])
    config["PUBLIC_URL"] = public_url(config["PUBLIC_URL"])
    config["SESSION_COOKIE_SECURE"] = config["PUBLIC_URL"].startswith("https:")
    config["SESSION_COOKIE_SAMESITE"] = _samesite(config["SESSION_COOKIE_SAMESITE"])
    secret = config["SECRET_KEY"]
    if secret is not None and len(secret) < 16:  # a short secret is guessable
        raise ConfigError(f"{ENV_PREFIX}_SECRET_KEY must be a string of at least 16 "
                          "characters (python -c 'import secrets; print(secrets.token_hex(32))'"
                          " makes one), or unset to keep a generated one in the instance folder")
    if config["PASSWORD_MIN_LENGTH"] > config["PASSWORD_MAX_LENGTH"]:
        raise ConfigError(
            f"{ENV_PREFIX}_PASSWORD_MIN_LENGTH must not exceed {ENV_PREFIX}_PASSWORD_MAX_LENGTH"
        )
    config["SMTP_TLS_CONTEXT"] = _smtp_tls(config)
    if config["CELERY_ACKS"] not in CELERY_ACKS:
        raise ConfigError(f"{ENV_PREFIX}_CELERY_ACKS must be one of {', '.join(CELERY_ACKS)}, "
                          f"got {config['CELERY_ACKS']!r}")


def _smtp_tls(config: dict[str, Any]) -> ssl.SSLContext | None:
    """The client context for STARTTLS (made once: loading the system's CAs takes
    milliseconds), or None without SMTP_USE_TLS; the credentials come in pairs."""
    user, password = config["SMTP_USERNAME"], config["SMTP_PASSWORD"]
    if bool(user) != bool(password):
        raise ConfigError(f"{ENV_PREFIX}_SMTP_USERNAME and {ENV_PREFIX}_SMTP_PASSWORD go "
                          "together: set both to log in, or neither")
    ca_file = config["SMTP_CA_FILE"]
    name = f"{ENV_PREFIX}_SMTP_CA_FILE"
    if not config["SMTP_USE_TLS"]:
        if ca_file:
            raise ConfigError(f"{name} is only used with {ENV_PREFIX}_SMTP_USE_TLS=1")
        return None
    if not ca_file:
        return ssl.create_default_context()
    if not Path(str(ca_file)).is_file():
        raise ConfigError(f"{name} {str(ca_file)!r} is not a file")
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{name} {str(ca_file)!r} holds no usable PEM certificate: "
                          f"{exc}") from None


def _string(key: str, value: Any) -> None:
    """Text, or None where that means something. Only a test dict can give anything else:
    the environment's values are kept as text."""
    if isinstance(value, str) or (value is None and key in _NULLABLE):
        return
    # The type, not the value: this may be a password or the secret key.
    raise ConfigError(f"{ENV_PREFIX}_{key} must be a string, got {type(value).__name__}")


def _samesite(value: str | None) -> str | None:
    """A SameSite werkzeug accepts; anything else would make every response that sets the
    session cookie (the sign-up form does) a 500. None: the attribute is left out."""
    if value is None:
        return None
    for allowed in _SAMESITE:
        if value.strip().lower() == allowed.lower():
            return allowed
    raise ConfigError(f"{ENV_PREFIX}_SESSION_COOKIE_SAMESITE must be one of "
                      f"{', '.join(_SAMESITE)}, got {value!r}")


def _number(key: str, value: Any, kind: type, low: float | None, high: float | None) -> Any:
    name = f"{ENV_PREFIX}_{key}"
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    try:
        number = kind(value)
    except (TypeError, ValueError, OverflowError):  # int(float("inf")) overflows
        raise ConfigError(f"{name} must be a{'n integer' if kind is int else ' number'}, "
                          f"got {value!r}") from None
    if not math.isfinite(number):  # Infinity, NaN and 1e999 parse as floats
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if (low is not None and number < low) or (high is not None and number > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise ConfigError(f"{name} must be {bounds}, got {value!r}")
    return number


def _boolean(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{ENV_PREFIX}_{key} must be true or false, got {value!r}")


def _password_hash(value: Any) -> str:
    """A werkzeug hashing method that works: tried once now, not on the first sign-up."""
    from werkzeug.security import generate_password_hash

    method = str(value)
    if method.split(":", 1)[0] not in _PASSWORD_METHODS:
        raise ConfigError(
            f"{ENV_PREFIX}_PASSWORD_HASH must start with one of {', '.join(_PASSWORD_METHODS)}"
            f" (werkzeug syntax, e.g. 'pbkdf2:sha256:1000'), got {method!r}"
        )
    parts = method.split(":")
    if parts[0] == "pbkdf2" and len(parts) == 3 and parts[2].isdigit() and \
            int(parts[2]) > MAX_PBKDF2_ITERATIONS:
        # Checked before trying: a huge count would hang start-up here, then every sign-up.
        raise ConfigError(f"{ENV_PREFIX}_PASSWORD_HASH {method!r}: at most "
                          f"{MAX_PBKDF2_ITERATIONS:,} pbkdf2 iterations")
    try:
        generate_password_hash("check", method=method)
    except (ValueError, TypeError, OverflowError, MemoryError) as exc:
        raise ConfigError(f"{ENV_PREFIX}_PASSWORD_HASH {method!r} cannot hash: "
                          f"{exc or type(exc).__name__}") from None
    return method


def public_url(value: Any) -> str:
    """The site's own base URL, as links in emails start: http(s), a host, no query."""
    name = f"{ENV_PREFIX}_PUBLIC_URL"
    text = str(value or "").strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ConfigError(f"{name} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or \
            parts.fragment or parts.username or parts.password:
        raise ConfigError(f"{name} must be an http(s) URL with a host and nothing after the "
                          f"path, e.g. https://example.com, got {text!r}")
    return text.rstrip("/")


def private_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700: it holds the secret key, password hashes and queued emails)
    or check that it can be used; a folder that exists keeps its mode."""
    name = f"{ENV_PREFIX}_INSTANCE_DIR"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{name} {str(path)!r} cannot be created: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{name} {str(path)!r} is not a writable folder")
    return path


def private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist, so that what a library
    later writes there (SQLite and its -wal/-shm files copy the mode) is private."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR))
    except FileExistsError:
        pass


def _instance_secret(path: Path) -> str:
    """A secret shared by every worker process of this instance, made once, mode 0600."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    candidate = secrets.token_hex(32)
    tmp = path.with_suffix(f".{secrets.token_hex(8)}.tmp")  # unique per thread and process
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as fh:
        fh.write(candidate)
    try:
        # link() fails if another process won the race; then everyone uses the winner's key.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()
