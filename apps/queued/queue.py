"""The Huey instance behind the ``queued`` variant, chosen by ``MAILLAB_QUEUE_URL``.

``sqlite:///PATH`` (the default) needs no server; ``redis://...`` needs the ``redis`` extra
and is imported only when chosen.
"""

from __future__ import annotations

from huey import Huey, SqliteHuey

QUEUE_NAME = "maillab"


class QueueConfigError(ValueError):
    pass


def make_huey(url: str) -> Huey:
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not path:
            raise QueueConfigError("MAILLAB_QUEUE_URL sqlite:/// needs a file path")
        # timeout: the app's threads and the consumer's threads share one file.
        return SqliteHuey(QUEUE_NAME, filename=path, results=False, timeout=30)
    if url.startswith(("redis://", "rediss://", "unix://")):
        try:
            import redis  # noqa: F401
        except ImportError:
            raise QueueConfigError(
                "MAILLAB_QUEUE_URL is a Redis URL but the redis package is missing: "
                "pip install 'maillab[redis]'"
            ) from None
        from huey import RedisHuey

        # blocking=True: the consumer waits in BRPOP, so pick-up is immediate, with no polling.
        return RedisHuey(QUEUE_NAME, url=url, blocking=True, results=False)
    raise QueueConfigError(
        f"MAILLAB_QUEUE_URL must start with sqlite:/// or redis://, got {url!r}"
    )
