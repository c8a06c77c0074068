"""Configuration: defaults, then ``MAILLAB_*`` environment variables, then the test dict.

Every key is checked once at start-up by :func:`validate`, so a bad value stops the app with
a message that names the variable instead of surfacing as a 500 on the first request.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from flask import Flask

ENV_PREFIX = "MAILLAB"

DEFAULTS: dict[str, Any] = {
    "DATABASE_URL": None,  # None: a SQLite file (WAL) in the instance folder
    "QUEUE_URL": None,  # None: Huey on a SQLite file in the instance folder
    "SECRET_KEY": None,  # None: generated once and kept in the instance folder
    "SMTP_HOST": "127.0.0.1",
    "SMTP_PORT": 8025,
    "SMTP_TIMEOUT": 10.0,
    "SMTP_USE_TLS": False,
    "SMTP_USERNAME": None,
    "SMTP_PASSWORD": None,
    "MAIL_SENDER": "maillab <no-reply@maillab.test>",
    "PASSWORD_HASH": "scrypt",
    "PASSWORD_MIN_LENGTH": 8,
    "PASSWORD_MAX_LENGTH": 128,
    "EMAIL_MAX_LENGTH": 254,
    "ALLOW_TEST_DOMAINS": True,  # the lab mails *.test addresses to its own fake server
    "TOKEN_MAX_AGE": 48 * 3600,
    "RESEND_COOLDOWN": 60,
    "MAX_CONTENT_LENGTH": 16 * 1024,
    "PUBLIC_URL": None,  # None: links use the host the request came to
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
}

_NUMBERS = {
    "SMTP_PORT": (int, 1, 65535),
    "SMTP_TIMEOUT": (float, 0.001, None),
    "PASSWORD_MIN_LENGTH": (int, 1, None),
    "PASSWORD_MAX_LENGTH": (int, 1, 4096),
    "EMAIL_MAX_LENGTH": (int, 6, 4096),
    "TOKEN_MAX_AGE": (int, 1, None),
    "RESEND_COOLDOWN": (float, 0, None),
    "MAX_CONTENT_LENGTH": (int, 256, None),
    "QUEUE_RETRIES": (int, 0, 100),
    "QUEUE_RETRY_DELAY": (float, 0, None),
    "QUEUE_RETRY_BACKOFF": (float, 1, None),
    "WORKER_THREADS": (int, 1, 1024),
    "WORKER_POLL_DELAY": (float, 0.0001, None),
    "WORKER_MAX_POLL_DELAY": (float, 0.0001, None),
}
_BOOLEANS = ("SMTP_USE_TLS", "ALLOW_TEST_DOMAINS")
_PASSWORD_METHODS = ("scrypt", "pbkdf2")


class ConfigError(ValueError):
    """A configuration value is unusable; the message names the variable."""


def load(app: Flask, test_config: dict[str, Any] | None) -> None:
    """Fill ``app.config``: defaults, then ``MAILLAB_*`` variables, then ``test_config``."""
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env(ENV_PREFIX)
    if test_config:
        app.config.from_mapping(test_config)
    validate(app.config)
    instance = Path(app.instance_path)
    instance.mkdir(parents=True, exist_ok=True)
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
    for key, (kind, low, high) in _NUMBERS.items():
        config[key] = _number(key, config[key], kind, low, high)
    for key in _BOOLEANS:
        config[key] = _boolean(key, config[key])
    method = str(config["PASSWORD_HASH"])
    if method.split(":", 1)[0] not in _PASSWORD_METHODS:
        raise ConfigError(
            f"{ENV_PREFIX}_PASSWORD_HASH must start with one of {', '.join(_PASSWORD_METHODS)}"
            f" (werkzeug syntax, e.g. 'pbkdf2:sha256:1000'), got {method!r}"
        )
    if config["PASSWORD_MIN_LENGTH"] > config["PASSWORD_MAX_LENGTH"]:
        raise ConfigError(
            f"{ENV_PREFIX}_PASSWORD_MIN_LENGTH must not exceed {ENV_PREFIX}_PASSWORD_MAX_LENGTH"
        )


def _number(key: str, value: Any, kind: type, low: float | None, high: float | None) -> Any:
    name = f"{ENV_PREFIX}_{key}"
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a{'n integer' if kind is int else ' number'}, "
                          f"got {value!r}") from None
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


def _instance_secret(path: Path) -> str:
    """A secret shared by every worker process of this instance, made once."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    candidate = secrets.token_hex(32)
    tmp = path.with_suffix(f".{secrets.token_hex(8)}.tmp")  # unique per thread and process
    tmp.write_text(candidate)
    try:
        # link() fails if another process won the race; then everyone uses the winner's key.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()
