"""The Huey instance behind the ``queued`` variant, chosen by ``MAILLAB_QUEUE_URL``.

``sqlite:///PATH`` (the default) needs no server; ``redis://...`` needs the ``redis`` extra
and is imported only when chosen.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from huey import Huey, SqliteHuey

from apps.core.config import ConfigError, private_file

QUEUE_NAME = "maillab"


class QueueConfigError(ConfigError):
    """``MAILLAB_QUEUE_URL`` is unusable; the message names it.

    A :class:`ConfigError`, so whatever stops on a bad setting (``maillab serve``,
    ``maillab worker``) stops on this one too, with the message instead of a traceback.
    """


def make_huey(url: str) -> Huey:
    """The Huey for ``url``; raises :class:`QueueConfigError` if it cannot be used.

    A SQLite queue is opened (and its tables made) here, so a file that cannot be opened
    fails now; a Redis URL is only parsed, as Huey connects on first use.
    """
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not path:
            raise QueueConfigError("MAILLAB_QUEUE_URL sqlite:/// needs a file path")
        try:
            private_file(Path(path))  # queued emails carry verification links
            # timeout: the app's threads and the consumer's threads share one file.
            return SqliteHuey(QUEUE_NAME, filename=path, results=False, timeout=30)
        except (OSError, sqlite3.Error) as exc:
            raise QueueConfigError(
                f"MAILLAB_QUEUE_URL {url!r}: cannot open the SQLite queue: {exc}"
            ) from None
    if url.startswith(("redis://", "rediss://", "unix://")):
        try:
            import redis  # noqa: F401
        except ImportError:
            raise QueueConfigError(
                "MAILLAB_QUEUE_URL is a Redis URL but the redis package is missing: "
                "pip install 'maillab[redis]'"
            ) from None
        from huey import RedisHuey

        try:
            # blocking=True: the consumer waits in BRPOP, so pick-up is immediate, no polling.
            return RedisHuey(QUEUE_NAME, url=url, blocking=True, results=False)
        except ValueError as exc:  # redis-py's URL parser, e.g. a port that is not a number
            raise QueueConfigError(f"MAILLAB_QUEUE_URL {shown(url)!r}: {exc}") from None
    raise QueueConfigError(
        f"MAILLAB_QUEUE_URL must start with sqlite:/// or redis://, got {shown(url)!r}"
    )


def queue_errors() -> tuple[type[BaseException], ...]:
    """What the queue raises when it cannot be reached or read: the queue's fault, not the
    caller's, so worth a line in the log rather than a traceback."""
    errors: tuple[type[BaseException], ...] = (OSError, sqlite3.Error)
    try:
        from redis.exceptions import RedisError
    except ImportError:  # the redis extra is not installed: no Redis queue to fail
        return errors
    return (*errors, RedisError)


def reason(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type if it has none), for a one-line log."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def shown(url: str) -> str:
    """``url`` with any password replaced by ***, fit for a message or a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:***@" if parts.username else ":***@"
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=user + host))
