"""Running a variant under gunicorn (gthread workers) from code.

Follows gunicorn's documented custom-application pattern: each worker builds its own app
after the fork, so no SQLite connection or thread crosses a fork.
"""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.http.errors import ParseException

from apps.core import create_app
from apps.core.metrics import worker_exited


class GunicornServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, variant: str, options: dict[str, Any],
                 config: dict[str, Any] | None = None) -> None:
        self.variant = variant
        self.options = options
        self.config = config
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key.lower(), value)

    def load(self) -> Any:
        app = create_app(self.variant, self.config)
        # A body gunicorn cannot parse (a malformed chunk, a body cut short) surfaces while the
        # view reads it: the client's fault, so a 400, not a 500.
        app.register_error_handler(ParseException, _unparsable_body)
        return app


def _unparsable_body(exc: ParseException) -> Any:
    from apps.core.responses import respond

    return respond(400, "bad_body", "Bad request", f"The request body cannot be read: {exc}")


def gunicorn_options(host: str, port: int, workers: int, threads: int, timeout: int,
                     on_ready: Any) -> dict[str, Any]:
    return {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        # Above MAILLAB_SMTP_TIMEOUT, so a slow SMTP server makes a slow response, not a
        # killed worker.
        "timeout": timeout,
        "graceful_timeout": 10,
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "when_ready": on_ready,
        # prometheus_client's multiprocess mode: a dead worker's live gauges stop counting.
        "child_exit": lambda _server, worker: worker_exited(worker.pid),
    }
